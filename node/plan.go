package node

import (
	"errors"
	"fmt"
	"net/netip"
	"path"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
)

// Files the node stack reads and writes, as host paths.
const (
	ContainerdConfigFile = "/etc/containerd/config.toml"
	ContainerdSocket     = "/run/containerd/containerd.sock"
	ContainerdRootDir    = "/var/lib/containerd"
	ContainerdStateDir   = "/run/containerd"
	KubeletDir           = "/var/lib/kubelet"
	KubeletConfigFile    = KubeletDir + "/config.yaml"
	KubeletPKIDir        = KubeletDir + "/pki"
	// KubeletClientCert is the kubelet's client certificate and key in one
	// PEM file, the name the kubelet itself keeps pointing at the newest
	// certificate when it rotates.
	KubeletClientCert = KubeletPKIDir + "/kubelet-client-current.pem"
	// KubeletKubeconfig is how the kubelet reaches the apiserver.
	KubeletKubeconfig = hostfs.KubernetesDir + "/kubelet.conf"
	// ClusterCAFile is the cluster CA the kubelet checks clients against;
	// on masters it is the PKI's own ca.crt.
	ClusterCAFile = hostfs.PKIDir + "/ca.crt"
	// KubeProxyConfigFile is kube-proxy's KubeProxyConfiguration.
	KubeProxyConfigFile = hostfs.KubernetesDir + "/kube-proxy.yaml"
	CNIConfDir          = "/etc/cni/net.d"
	// CNIBinDir is where operators' own CNI plugins go; anvil's plugins
	// are in the release's bin directory (images.CNISubdir).
	CNIBinDir = "/opt/cni/bin"
)

// Ports the node stack listens on.
const (
	KubeletPort        = 10250
	KubeletHealthzPort = 10248
	// KubeProxyHealthzPort is kube-proxy's health server (its
	// --healthz-bind-address default), on every node that runs pods.
	KubeProxyHealthzPort = 10256
	// KubeProxyMetricsPort is kube-proxy's metrics server, on loopback.
	KubeProxyMetricsPort = 10249
)

// Plan is what the node stack of one machine is computed from. Components
// and ConfigFiles are pure functions of it.
type Plan struct {
	Cluster *v1alpha1.Cluster
	Host    v1alpha1.Host
	// Root is the runtime root paths in specs and configs are relative to:
	// "" on a real host whatever directory files are written under, the
	// --root directory in the process layout.
	Root hostfs.Root
	// KubernetesVersion selects the binaries; empty means the cluster's.
	KubernetesVersion string
	// BinDir holds the binaries; empty means Root/opt/anvil/bin/<version>.
	BinDir string
	// NodeIP is the address the kubelet reports; empty means the host's
	// node address.
	NodeIP netip.Addr
	// Facts are the host's, read on the host itself.
	Facts Facts
}

// Complete fills in defaults and checks what the specs need.
func (p Plan) Complete() (Plan, error) {
	if p.Cluster == nil {
		return p, errors.New("node plan has no cluster")
	}
	if p.KubernetesVersion == "" {
		p.KubernetesVersion = p.Cluster.KubernetesVersion
	}
	if p.KubernetesVersion == "" {
		p.KubernetesVersion = images.DefaultVersion
	}
	if _, err := images.Lookup(p.KubernetesVersion); err != nil {
		return p, err
	}
	if p.BinDir == "" {
		p.BinDir = p.Root.Bin(p.KubernetesVersion)
	}
	if !path.IsAbs(p.BinDir) {
		return p, fmt.Errorf("node %s: binary directory %q is not absolute", p.Host.Name, p.BinDir)
	}
	if !p.NodeIP.IsValid() {
		p.NodeIP = p.Host.NodeAddress()
	}
	if !p.NodeIP.IsValid() {
		return p, fmt.Errorf("node %s has no address", p.Host.Name)
	}
	if p.Facts.ResolvConf == "" {
		p.Facts.ResolvConf = "/etc/resolv.conf"
	}
	if _, err := ClusterDNS(p.Cluster.Networking.ServiceCIDR); err != nil {
		return p, err
	}
	return p, nil
}

// ClusterDNS is the cluster DNS Service's address: the tenth of the service
// CIDR, as kubeadm and every distribution make it.
func ClusterDNS(serviceCIDR netip.Prefix) (netip.Addr, error) {
	if !serviceCIDR.IsValid() {
		return netip.Addr{}, errors.New("networking.serviceCIDR is not set")
	}
	a := serviceCIDR.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	if !serviceCIDR.Contains(a) {
		return netip.Addr{}, fmt.Errorf("networking.serviceCIDR %s is too small for the cluster DNS address (its tenth address)", serviceCIDR)
	}
	return a, nil
}

func (p Plan) path(hostPath string) string { return p.Root.Path(hostPath) }
func (p Plan) binary(name string) string   { return path.Join(p.BinDir, name) }
func (p Plan) cniBinDir() string           { return path.Join(p.BinDir, images.CNISubdir) }
func (p Plan) imagesDir() string           { return path.Join(p.BinDir, images.ImagesSubdir) }
func (p Plan) sandboxImage() string {
	rel, _ := images.Lookup(p.KubernetesVersion) // checked by Complete
	return rel.PauseImage()
}
