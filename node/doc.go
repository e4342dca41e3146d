// Package node declares what makes a machine a Kubernetes node, on every
// machine, masters included: the container runtime (containerd, with runc)
// and the kubelet, each one component.Spec like the control plane's, and
// the documents they read — containerd's config.toml, the kubelet's
// KubeletConfiguration and kubeconfig — computed from a Plan: the cluster
// file, this host, the runtime root, the Kubernetes version and the facts
// of the host that decide settings (cgroup version and driver, whether the
// machine may lower OOM scores, where the real resolv.conf is).
//
// It never starts anything (package layout does, for master and agent) and
// never decides whether a host runs a runtime: the cluster file says so
// (hosts[].runtime).
package node
