// Package images knows which Kubernetes versions anvil supports and builds
// everything a host runs, each from its Go module, in a build module of its
// own under images/ (so the main module stays lean and no two upstream
// dependency graphs meet): the control plane from k8s.io/kubernetes
// (images/kube), the kubelet and kube-proxy (images/kubenode), containerd,
// runc, the CNI plugins, crictl, and CoreDNS; and from anvil's own module the
// pause program and the test app. Release.builds is that list, top down.
//
// Each build is hashed, cached (per user, shared by checkouts) and reused on
// its own, so changing one never rebuilds another. The build directory
// (bin/kube/<version>) holds:
//
//	manifest.json               the control plane's binaries, as before the node stack
//	payload.json                every file: sha256, size, set (node or control-plane),
//	                            build, and for image archives the image reference
//	kube-apiserver … kubectl    control plane (set control-plane)
//	kubelet kube-proxy containerd containerd-shim-runc-v2 ctr runc crictl
//	cni/{bridge,host-local,loopback,portmap}
//	images/{pause,coredns,testapp}.tar   docker-archive tarballs for `ctr images import`
//
// A worker needs the node set; a master needs every file (it runs the node
// stack under its control plane): Manifest.ForRole and Manifest.Subset
// pick them, Install (with a Role) installs them into
// /opt/anvil/bin/<version> with the same relative names and a manifest.json
// of exactly what it installed, and Installed verifies that tree before
// anything runs from it. Every file is checked against its sha256 before it
// is installed, bundled or uploaded; the airgap bundle carries the payload.
// Every name a manifest, payload or bundle index lists is relative and made
// of lowercase letters, digits, '.', '_' and '-' (images/pause.tar), or the
// whole file is refused: names end up in paths on every host and in the
// installer's shell scripts.
//
// It never downloads a binary or pulls an image: everything is built here
// from Go modules, or imported from a bundle built that way. The
// conformance images (conformance.go) take Debian's packages besides: a
// root made with debootstrap (root.go), and a busybox built here from
// Debian's source package (busybox.go).
package images
