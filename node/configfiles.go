package node

import (
	"bytes"
	"fmt"
	"io/fs"
	"strconv"

	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
)

// ConfigFiles are the documents the node stack reads, as host paths:
// containerd's config.toml and the kubelet's KubeletConfiguration, plus the
// directories they need. The kubelet's kubeconfig and certificates are
// credentials, written by whoever obtained them (Credentials).
func ConfigFiles(p Plan) ([]component.OutputFile, error) {
	p, err := p.Complete()
	if err != nil {
		return nil, err
	}
	kubelet, err := kubeletConfig(p)
	if err != nil {
		return nil, err
	}
	proxy, err := kubeProxyConfig(p)
	if err != nil {
		return nil, err
	}
	return []component.OutputFile{
		{Path: ContainerdConfigFile, Mode: 0o600, Data: containerdConfig(p)},
		{Path: KubeletConfigFile, Mode: 0o600, Data: kubelet},
		{Path: KubeProxyConfigFile, Mode: 0o600, Data: proxy},
		{Path: CNIConfDir, Mode: fs.ModeDir | 0o755},
		{Path: RegistryHostsDir, Mode: fs.ModeDir | 0o755},
		{Path: CNIBinDir, Mode: fs.ModeDir | 0o755},
		{Path: KubeletPKIDir, Mode: fs.ModeDir | 0o700},
		{Path: hostfs.ManifestsDir, Mode: fs.ModeDir | 0o755},
	}, nil
}

// containerdConfig is containerd 2.4's config (format 4, whose plugin names
// are 2.x's): runc through the v2 shim with the host's cgroup driver, the
// sandbox image pinned to the pause image anvil ships (so it is never
// pulled, nor garbage-collected), registry hosts from RegistryHostsDir
// (where the agent names its image mirror), CNI from the release and the operator's
// plugin directory, the streaming server on loopback only.
func containerdConfig(p Plan) []byte {
	q := strconv.Quote
	var b bytes.Buffer
	fmt.Fprintf(&b, `# Written by anvil; edits are replaced on the next apply.
version = 4
root = %s
state = %s

[grpc]
  address = %s

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %s

  # A hosts.toml per registry; the agent writes those naming its image
  # mirror, which serves the images imported from archives.
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %s

[plugins.'io.containerd.cri.v1.runtime']
  # Whether pods may lower their OOM score below containerd's: only where
  # this machine has CAP_SYS_RESOURCE, else every sandbox fails to start.
  restrict_oom_score_adj = %t

  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %s
        SystemdCgroup = %t

  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%s, %s]
    conf_dir = %s
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
`,
		q(p.path(ContainerdRootDir)), q(p.path(ContainerdStateDir)), q(p.path(ContainerdSocket)),
		q(p.sandboxImage()), q(p.path(RegistryHostsDir)),
		!p.Facts.LowerOOMScore,
		q(p.binary("runc")), p.Facts.CgroupDriver() == "systemd",
		q(p.path(CNIBinDir)), q(p.cniBinDir()), q(p.path(CNIConfDir)))
	return b.Bytes()
}

// kubeletConfiguration is the part of kubelet.config.k8s.io/v1beta1's
// KubeletConfiguration anvil sets.
type kubeletConfiguration struct {
	APIVersion                     string            `yaml:"apiVersion"`
	Kind                           string            `yaml:"kind"`
	Authentication                 kubeletAuthn      `yaml:"authentication"`
	Authorization                  kubeletAuthz      `yaml:"authorization"`
	Address                        string            `yaml:"address"`
	Port                           int               `yaml:"port"`
	ReadOnlyPort                   int               `yaml:"readOnlyPort"`
	HealthzBindAddress             string            `yaml:"healthzBindAddress"`
	HealthzPort                    int               `yaml:"healthzPort"`
	TLSMinVersion                  string            `yaml:"tlsMinVersion"`
	TLSCipherSuites                []string          `yaml:"tlsCipherSuites"`
	RotateCertificates             bool              `yaml:"rotateCertificates"`
	ServerTLSBootstrap             bool              `yaml:"serverTLSBootstrap"`
	ContainerRuntimeEndpoint       string            `yaml:"containerRuntimeEndpoint"`
	CgroupDriver                   string            `yaml:"cgroupDriver"`
	FailCgroupV1                   *bool             `yaml:"failCgroupV1,omitempty"`
	FailSwapOn                     bool              `yaml:"failSwapOn"`
	ClusterDNS                     []string          `yaml:"clusterDNS"`
	ClusterDomain                  string            `yaml:"clusterDomain"`
	ResolvConf                     string            `yaml:"resolvConf"`
	StaticPodPath                  string            `yaml:"staticPodPath"`
	StreamingConnectionIdleTimeout string            `yaml:"streamingConnectionIdleTimeout"`
	RegisterWithTaints             []kubeletTaint    `yaml:"registerWithTaints,omitempty"`
	EvictionHard                   map[string]string `yaml:"evictionHard"`
	Logging                        map[string]string `yaml:"logging"`
	MemorySwap                     map[string]string `yaml:"memorySwap"`
	SeccompDefault                 bool              `yaml:"seccompDefault"`
	ProtectKernelDefaults          bool              `yaml:"protectKernelDefaults"`
	ShutdownGracePeriod            string            `yaml:"shutdownGracePeriod"`
	ShutdownGracePeriodCritical    string            `yaml:"shutdownGracePeriodCriticalPods"`
}

type kubeletAuthn struct {
	Anonymous struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"anonymous"`
	Webhook struct {
		Enabled  bool   `yaml:"enabled"`
		CacheTTL string `yaml:"cacheTTL"`
	} `yaml:"webhook"`
	X509 struct {
		ClientCAFile string `yaml:"clientCAFile"`
	} `yaml:"x509"`
}

type kubeletAuthz struct {
	Mode    string `yaml:"mode"`
	Webhook struct {
		CacheAuthorizedTTL   string `yaml:"cacheAuthorizedTTL"`
		CacheUnauthorizedTTL string `yaml:"cacheUnauthorizedTTL"`
	} `yaml:"webhook"`
}

type kubeletTaint struct {
	Key    string `yaml:"key"`
	Value  string `yaml:"value,omitempty"`
	Effect string `yaml:"effect"`
}

// kubeletConfig is the KubeletConfiguration: only webhook-authenticated and
// -authorized clients (anonymous off, no read-only port), client
// certificates rotated by the kubelet itself and serving certificates
// requested through CSRs (which anvil approves for the node's own names),
// the cluster's DNS, and the host's cgroup driver. On a cgroup v1 host
// Kubernetes 1.37 refuses to start unless told otherwise: failCgroupV1 is
// false there only.
func kubeletConfig(p Plan) ([]byte, error) {
	dns, err := ClusterDNS(p.Cluster.Networking.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	c := kubeletConfiguration{
		APIVersion:                     "kubelet.config.k8s.io/v1beta1",
		Kind:                           "KubeletConfiguration",
		Address:                        "0.0.0.0",
		Port:                           KubeletPort,
		ReadOnlyPort:                   0,
		HealthzBindAddress:             "127.0.0.1",
		HealthzPort:                    KubeletHealthzPort,
		TLSMinVersion:                  component.TLSMinVersion,
		TLSCipherSuites:                component.TLSCipherSuites(),
		RotateCertificates:             true,
		ServerTLSBootstrap:             true,
		ContainerRuntimeEndpoint:       "unix://" + p.path(ContainerdSocket),
		CgroupDriver:                   p.Facts.CgroupDriver(),
		FailSwapOn:                     false,
		ClusterDNS:                     []string{dns.String()},
		ClusterDomain:                  p.Cluster.Networking.ClusterDomain,
		ResolvConf:                     p.Facts.ResolvConf,
		StaticPodPath:                  p.path(hostfs.ManifestsDir),
		StreamingConnectionIdleTimeout: "4h0m0s",
		EvictionHard: map[string]string{
			"memory.available":  "100Mi",
			"nodefs.available":  "10%",
			"imagefs.available": "15%",
			"nodefs.inodesFree": "5%",
		},
		Logging:                     map[string]string{"format": "text"},
		MemorySwap:                  map[string]string{"swapBehavior": "NoSwap"},
		SeccompDefault:              true,
		ShutdownGracePeriod:         "30s",
		ShutdownGracePeriodCritical: "10s",
	}
	c.Authentication.Webhook.Enabled = true
	c.Authentication.Webhook.CacheTTL = "2m0s"
	c.Authentication.X509.ClientCAFile = p.path(ClusterCAFile)
	c.Authorization.Mode = "Webhook"
	c.Authorization.Webhook.CacheAuthorizedTTL = "5m0s"
	c.Authorization.Webhook.CacheUnauthorizedTTL = "30s"
	if !p.Facts.CgroupV2 {
		f := false
		c.FailCgroupV1 = &f
	}
	for _, t := range p.Host.Taints {
		c.RegisterWithTaints = append(c.RegisterWithTaints, kubeletTaint{Key: t.Key, Value: t.Value, Effect: string(t.Effect)})
	}
	var b bytes.Buffer
	b.WriteString("# Written by anvil; edits are replaced on the next apply.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// CgroupV1Warning is what an operator is told about a node on a cgroup v1
// host: it runs, but Kubernetes no longer supports it.
func CgroupV1Warning(host string) string {
	return fmt.Sprintf("node %s runs on a cgroup v1 host: Kubernetes 1.37 only starts there with failCgroupV1: false, which anvil sets; move the host to cgroup v2 (systemd.unified_cgroup_hierarchy=1) before Kubernetes drops v1", host)
}

// kubeProxyConfig is the KubeProxyConfiguration: the node's own identity
// (the kubelet's kubeconfig), nftables mode where the host has nft and
// iptables otherwise, the cluster's pod CIDR (traffic from outside it to a
// Service is masqueraded), health on every address (load balancers ask
// it), metrics on loopback. conntrack is left as the host has it: the
// kernel's defaults serve, and a machine whose /proc/sys is read-only
// (a container) could not take kube-proxy's values anyway.
func kubeProxyConfig(p Plan) ([]byte, error) {
	type conntrack struct {
		MaxPerCore            int32  `yaml:"maxPerCore"`
		Min                   int32  `yaml:"min"`
		TCPEstablishedTimeout string `yaml:"tcpEstablishedTimeout"`
		TCPCloseWaitTimeout   string `yaml:"tcpCloseWaitTimeout"`
	}
	c := struct {
		APIVersion       string            `yaml:"apiVersion"`
		Kind             string            `yaml:"kind"`
		ClientConnection map[string]string `yaml:"clientConnection"`
		HostnameOverride string            `yaml:"hostnameOverride"`
		BindAddress      string            `yaml:"bindAddress"`
		HealthzBind      string            `yaml:"healthzBindAddress"`
		MetricsBind      string            `yaml:"metricsBindAddress"`
		Mode             string            `yaml:"mode"`
		ClusterCIDR      string            `yaml:"clusterCIDR"`
		Conntrack        conntrack         `yaml:"conntrack"`
		Logging          map[string]string `yaml:"logging"`
	}{
		APIVersion:       "kubeproxy.config.k8s.io/v1alpha1",
		Kind:             "KubeProxyConfiguration",
		ClientConnection: map[string]string{"kubeconfig": p.path(KubeletKubeconfig)},
		HostnameOverride: p.Host.Name,
		BindAddress:      p.NodeIP.String(),
		HealthzBind:      "0.0.0.0:" + strconv.Itoa(KubeProxyHealthzPort),
		MetricsBind:      "127.0.0.1:" + strconv.Itoa(KubeProxyMetricsPort),
		Mode:             p.Facts.ProxyMode(),
		ClusterCIDR:      p.Cluster.Networking.PodCIDR.String(),
		Conntrack:        conntrack{TCPEstablishedTimeout: "0s", TCPCloseWaitTimeout: "0s"},
		Logging:          map[string]string{"format": "text"},
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy config: %w", err)
	}
	return append([]byte("# Written by anvil; edits are replaced on the next apply.\n"), b...), nil
}
