// Package node declares what makes a machine a Kubernetes node, on every
// machine, masters included: the container runtime (containerd, with runc)
// and the kubelet, each one component.Spec like the control plane's, and
// the documents they read — containerd's config.toml, the kubelet's
// KubeletConfiguration and kubeconfig — computed from a Plan: the cluster
// file, this host, the runtime root, the Kubernetes version and the facts
// of the host that decide settings (cgroup version and driver, whether the
// machine may lower OOM scores, where the real resolv.conf is).
//
// Install writes all of it with the kubelet's credentials and has package
// layout start containerd, import the image archives, then start the
// kubelet; init and control-plane join call it on masters (package
// master's node phase). Mirror is the read-only registry the agent serves
// the imported images from, on loopback, for pods that always pull
// (mirror.go says how containerd is pointed at it). It never decides whether a host
// runs a runtime (the cluster file says so: hosts[].runtime) and never
// removes anything: reset (package master) does, from the paths declared
// here.
package node
