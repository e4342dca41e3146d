// Package master makes a machine a control-plane node: it declares the
// components a master runs, writes what they read, runs the embedded etcd
// member and anvil's own process supervisor, and creates the cluster's
// bootstrap objects.
//
// The component list is in one place, Components in components.go: etcd
// (`anvil etcd --config /etc/anvil/etcd.yaml`), kube-apiserver,
// kube-controller-manager and kube-scheduler, each one component.Spec
// with its ordered flags and the reason for every secure default beside it.
// They are computed from a Plan (plan.go): the cluster file, this host, the
// runtime root paths are relative to, the Kubernetes version and the etcd
// membership. ConfigFiles (configfiles.go) writes the documents they read —
// etcd's config in etcd's own keys, the apiserver's encryption (a secretbox
// key made once and then always kept), audit and authentication configs, and
// the scheduler's config. RenderNode and Render (render.go) put those
// together with the node agent's spec into the tree `anvil render` writes in
// the systemd, static-pod or process layout.
package master
