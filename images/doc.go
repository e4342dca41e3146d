// Package images knows which Kubernetes versions anvil supports, builds their
// components from the k8s.io/kubernetes module (in the separate images/kube
// module, so the main module stays lean), records the sha256 of every binary
// it built in a manifest, verifies binaries against it before they are
// installed or uploaded, packs OCI image archives for the static-pod layout,
// and moves everything between machines as one airgap bundle.
//
// It never downloads a binary or pulls an image: everything is built here
// from Go modules, or imported from a bundle built that way.
package images
