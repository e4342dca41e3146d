// Package addons declares the cluster add-ons anvil deploys as Kubernetes
// objects (today cluster DNS: CoreDNS and the kube-dns Service) and applies
// them with server-side apply under anvil's field manager, so a second
// apply changes nothing and a user's edits to fields anvil does not set
// survive.
//
// It never starts a process on a host (kube-proxy and the kubelet are the
// node package's) and never decides which hosts exist: it reads the
// cluster file it is given.
package addons
