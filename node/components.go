package node

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/images"
)

// Component names of the node stack.
const (
	Containerd = images.Containerd
	Kubelet    = images.Kubelet
	KubeProxy  = images.KubeProxy
)

// Components returns the node stack in start order: containerd, the
// kubelet, then kube-proxy (which programs Services on the node). This is
// the one place their command lines are declared; the static-pod layout
// runs them as systemd units too, since the kubelet cannot host itself.
func Components(p Plan) ([]component.Spec, error) {
	p, err := p.Complete()
	if err != nil {
		return nil, err
	}
	out := []component.Spec{containerdComponent(p), kubeletComponent(p), kubeProxyComponent(p)}
	for _, c := range out {
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func containerdComponent(p Plan) component.Spec {
	return component.Spec{
		Name:        Containerd,
		Description: "containerd container runtime",
		Binary:      p.binary(images.Containerd),
		// Everything else is in containerd's own config file.
		Args: []component.Arg{{Name: "config", Value: p.path(ContainerdConfigFile)}},
		// containerd finds runc and its shim on PATH: the release's
		// binaries first.
		Env: []component.EnvVar{p.pathEnv()},
		Files: []component.File{
			{Path: p.path(ContainerdConfigFile), Mode: 0o600},
			{Path: p.path(ContainerdRootDir), Mode: 0o711, Dir: true, Writable: true},
			{Path: p.path(ContainerdStateDir), Mode: 0o711, Dir: true, Writable: true},
		},
		Restart: component.RestartPolicy{Delay: time.Second, MaxDelay: 30 * time.Second},
		// The containers outlive a containerd restart (an upgrade, a
		// crash): their shims are containerd's children.
		KeepChildren:   true,
		Delegate:       true,
		OOMScoreAdjust: -999,
		LimitNOFILE:    1 << 20,
		// Unconfined: containerd and the runc it starts mount container
		// root file systems, make namespaces and cgroups, and hand
		// containers whatever capabilities and devices their pods ask
		// for; a bounding set or a read-only /var/lib would reach every
		// container on the node.
		Sandbox: component.Sandbox{Unconfined: true},
	}
}

func kubeletComponent(p Plan) component.Spec {
	args := []component.Arg{
		{Name: "config", Value: p.path(KubeletConfigFile)},
		{Name: "kubeconfig", Value: p.path(KubeletKubeconfig)},
		{Name: "hostname-override", Value: p.Host.Name},
		{Name: "node-ip", Value: p.NodeIP.String()},
		{Name: "root-dir", Value: p.path(KubeletDir)},
	}
	if labels := nodeLabels(p); labels != "" {
		args = append(args, component.Arg{Name: "node-labels", Value: labels})
	}
	healthz := "http://127.0.0.1:" + strconv.Itoa(KubeletHealthzPort) + "/healthz"
	return component.Spec{
		Name:        Kubelet,
		Description: "Kubernetes node agent (kubelet)",
		Binary:      p.binary(images.Kubelet),
		Args:        args,
		// The kubelet runs mount, iptables and the like from PATH.
		Env: []component.EnvVar{p.pathEnv()},
		Files: []component.File{
			{Path: p.path(KubeletConfigFile), Mode: 0o600},
			{Path: p.path(KubeletKubeconfig), Mode: 0o600, Secret: true},
			{Path: p.path(KubeletPKIDir), Mode: 0o700, Dir: true, Writable: true, Secret: true},
			{Path: p.path(ClusterCAFile), Mode: 0o600},
			{Path: p.path(KubeletDir), Mode: 0o700, Dir: true, Writable: true},
		},
		Ports: []component.Port{
			{Name: "https", Number: KubeletPort, Protocol: "TCP"},
			{Name: "healthz", Address: "127.0.0.1", Number: KubeletHealthzPort, Protocol: "TCP"},
		},
		Health: component.Health{
			Live:  &component.Probe{URL: healthz},
			Ready: &component.Probe{URL: healthz},
		},
		Requires: []string{Containerd},
		Restart:  component.RestartPolicy{Delay: 2 * time.Second, MaxDelay: 30 * time.Second},
		// Pods' cgroups are the kubelet's to make; its children (mounts,
		// probes' helpers) are not workloads.
		Delegate:       true,
		OOMScoreAdjust: -999,
		LimitNOFILE:    1 << 20,
		// Unconfined: the kubelet mounts pods' volumes (and runs mount
		// helpers), makes pods' cgroups, writes sysctls pods ask for,
		// reads devices and /dev/kmsg, and manages files anywhere a
		// hostPath volume names.
		Sandbox: component.Sandbox{Unconfined: true},
	}
}

// kubeProxyComponent is kube-proxy, everything in its config file. It
// talks to the apiserver as the node (the kubelet's kubeconfig, whose
// client certificate the kubelet rotates); anvil binds system:node-proxier
// to the nodes' group for it.
func kubeProxyComponent(p Plan) component.Spec {
	return component.Spec{
		Name:        KubeProxy,
		Description: "Kubernetes network proxy (kube-proxy, " + p.Facts.ProxyMode() + " mode)",
		Binary:      p.binary(images.KubeProxy),
		Args:        []component.Arg{{Name: "config", Value: p.path(KubeProxyConfigFile)}},
		// kube-proxy runs nft, iptables and conntrack from PATH.
		Env: []component.EnvVar{p.pathEnv()},
		Files: []component.File{
			{Path: p.path(KubeProxyConfigFile), Mode: 0o600},
			{Path: p.path(KubeletKubeconfig), Mode: 0o600, Secret: true},
			{Path: p.path(KubeletPKIDir), Mode: 0o700, Dir: true, Secret: true},
		},
		Ports: []component.Port{
			{Name: "healthz", Number: KubeProxyHealthzPort, Protocol: "TCP"},
			{Name: "metrics", Address: "127.0.0.1", Number: KubeProxyMetricsPort, Protocol: "TCP"},
		},
		// /livez answers once kube-proxy runs; /healthz only once it has
		// synced with the apiserver, which a node that has just joined
		// may not reach at once.
		Health: component.Health{
			Live: &component.Probe{URL: "http://127.0.0.1:" + strconv.Itoa(KubeProxyHealthzPort) + "/livez"},
		},
		Requires: []string{Kubelet},
		Restart:  component.RestartPolicy{Delay: 2 * time.Second, MaxDelay: 30 * time.Second},
		// Unconfined: kube-proxy programs nftables or iptables (and loads
		// their kernel modules), sets conntrack and forwarding sysctls,
		// and runs nft, iptables and conntrack, which need the same.
		Sandbox: component.Sandbox{Unconfined: true},
	}
}

// pathEnv is the PATH of the node stack's programs: the release's binaries
// first, then the host's.
func (p Plan) pathEnv() component.EnvVar {
	return component.EnvVar{Name: "PATH", Value: p.BinDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
}

// nodeLabels is the host's labels as --node-labels takes them, sorted.
// NodeRestriction lets a kubelet set only labels outside the
// kubernetes.io and k8s.io namespaces (and a few node ones); validation of
// the cluster file refuses the rest.
func nodeLabels(p Plan) string {
	keys := slices.Sorted(maps.Keys(p.Host.Labels))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%s", k, p.Host.Labels[k]))
	}
	return strings.Join(parts, ",")
}
