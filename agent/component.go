package agent

import (
	"errors"
	"fmt"
	"net"
	"path"
	"strconv"
	"time"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/podnet"
)

// Name is the agent's component name; it runs as anvil-agent.service.
const Name = "agent"

// Unit is the agent's systemd unit.
const Unit = "anvil-agent.service"

// ConfigFile is the agent's configuration, as a host path.
const ConfigFile = hostfs.AnvilConfDir + "/agent.yaml"

// StateDir holds what the agent writes: its kubeconfig and the client
// certificate it renews.
const StateDir = hostfs.StateDir + "/agent"

// MetricsPort serves the agent's /healthz and Prometheus /metrics on
// loopback. 10251 was the scheduler's insecure port until Kubernetes 1.23
// and is unused since, so it is free on every node.
const MetricsPort = 10251

// ComponentOptions are what the agent's spec depends on.
type ComponentOptions struct {
	// Root is the runtime root: what paths in the spec are relative to ("" on
	// a real host; the --root directory in the process layout).
	Root hostfs.Root
	// AnvilBinary is anvil's executable; empty means Root/usr/local/bin/anvil.
	AnvilBinary string
	// KubernetesVersion tags the anvil image of the static-pod form.
	KubernetesVersion string
	// MetricsAddress is where the agent serves /healthz and /metrics
	// (agent.yaml's metricsAddress); empty means 127.0.0.1:MetricsPort.
	MetricsAddress string
	// PodNetwork says the agent runs anvil's pod network (Config's
	// RunsPodNetwork): it then writes the CNI config and programs routes
	// and nftables.
	PodNetwork bool
	// Pods says the machine runs pods (runtime containerd): the agent then
	// imports image archives, serves them on loopback as the image mirror
	// and writes containerd's registry hosts that name it.
	Pods bool
}

// Component is the node agent's spec: `anvil agent --config
// /etc/anvil/agent.yaml`, on every node, masters included.
func Component(o ComponentOptions) (component.Spec, error) {
	bin := o.AnvilBinary
	if bin == "" {
		bin = o.Root.Join(hostfs.LinkDir, images.AnvilBinary)
	}
	if !path.IsAbs(bin) {
		return component.Spec{}, errors.New("agent: anvil binary path must be absolute")
	}
	version := o.KubernetesVersion
	if version == "" {
		version = images.DefaultVersion
	}
	metrics := o.MetricsAddress
	if metrics == "" {
		metrics = net.JoinHostPort("127.0.0.1", strconv.Itoa(MetricsPort))
	}
	host, portStr, err := net.SplitHostPort(metrics)
	if err != nil {
		return component.Spec{}, fmt.Errorf("agent: metrics address %q: %w", metrics, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return component.Spec{}, fmt.Errorf("agent: metrics address %q: bad port", metrics)
	}
	healthz := "http://" + metrics + "/healthz"
	files := []component.File{
		{Path: o.Root.Path(ConfigFile), Mode: 0o600},
		// Its kubeconfig and the client certificate it renews.
		{Path: o.Root.Path(StateDir), Mode: 0o700, Dir: true, Writable: true, Secret: true},
	}
	var caps []string
	if o.PodNetwork {
		// The CNI config list it writes once the Node has a pod CIDR
		// (node's config files make the directory), and the routes and
		// the nftables table it programs.
		files = append(files, component.File{Path: o.Root.Path(path.Dir(podnet.CNIConfigPath)), Mode: 0o755, Dir: true, Writable: true})
		caps = []string{"NET_ADMIN"}
	}
	ports := []component.Port{{Name: "metrics", Address: host, Number: uint16(port), Protocol: "TCP"}}
	if o.Pods {
		files = append(files, component.File{Path: o.Root.Path(node.RegistryHostsDir), Mode: 0o755, Dir: true, Writable: true})
		ports = append(ports, component.Port{Name: "image-mirror", Address: "127.0.0.1", Number: node.MirrorPort, Protocol: "TCP"})
	}
	// The pod network turns on IP forwarding (/proc/sys); without it the
	// agent only talks to the apiservers and containerd's socket, reads
	// the machine's facts and writes its own state.
	sandbox := component.Sandbox{Sysctls: o.PodNetwork}
	c := component.Spec{
		Name:        Name,
		Unit:        Unit,
		Description: "anvil node agent",
		Binary:      bin,
		Subcommand:  []string{"agent"},
		// The join token never appears here: the agent reads its kubeconfig
		// through the config file, so no credential shows in the process
		// list or the unit.
		Args:         []component.Arg{{Name: "config", Value: o.Root.Path(ConfigFile)}},
		Files:        files,
		Capabilities: caps,
		Sandbox:      sandbox,
		Ports:        ports,
		Health: component.Health{
			Live:  &component.Probe{URL: healthz},
			Ready: &component.Probe{URL: healthz},
		},
		// The agent backs off by itself on API errors; a restart is for a
		// crash, so it is quick.
		Restart:  component.RestartPolicy{Delay: time.Second, MaxDelay: 30 * time.Second},
		Notify:   true,
		Watchdog: 30 * time.Second,
		Image: component.Image{
			Ref:    images.ImageRef(version, images.AnvilBinary),
			Binary: path.Join(images.ImageBinDir, images.AnvilBinary),
		},
		// Watches and the metrics endpoint, not thousands of clients.
		LimitNOFILE: 65536,
		Requests:    component.Requests{CPU: "50m", Memory: "32Mi"},
	}
	return c, c.Validate()
}
