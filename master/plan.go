package master

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strconv"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/pki"
)

// Plan is everything the component specs and config files of one master
// are computed from: the cluster file, which host this is, and where things
// live on it. Components and ConfigFiles are pure functions of a Plan (and,
// for the encryption key, of what is already on disk).
type Plan struct {
	// Cluster is the cluster file, already defaulted and validated.
	Cluster *v1alpha1.Cluster
	// Node is this machine's host entry.
	Node v1alpha1.Host
	// AdvertiseAddress is the address the apiserver and etcd announce to
	// the rest of the cluster; empty means Node.NodeAddress().
	AdvertiseAddress netip.Addr
	// Root is the runtime root: what paths inside specs and config files
	// are relative to. It is "" (the real root) for the systemd and
	// static-pod layouts, whatever directory the files are written under,
	// because those files are read by systemd and the kubelet on the real
	// host; for the process layout, where anvil runs the components on this
	// machine, it is the --root directory, so tests can run whole control
	// planes under a temporary directory.
	Root hostfs.Root
	// KubernetesVersion selects the binaries and images; empty means the
	// cluster file's version, or images.DefaultVersion.
	KubernetesVersion string
	// BinDir holds the Kubernetes binaries; empty means
	// Root/opt/anvil/bin/<version>.
	BinDir string
	// AnvilBinary is anvil's own executable, which runs etcd and the agent;
	// empty means Root/usr/local/bin/anvil. The process layout passes
	// os.Executable().
	AnvilBinary string
	// Etcd says how this member joins the etcd cluster.
	Etcd EtcdMember
}

// EtcdClusterState is etcd's initial-cluster-state.
type EtcdClusterState string

const (
	// EtcdNewCluster starts a new cluster (the first master).
	EtcdNewCluster EtcdClusterState = "new"
	// EtcdExistingCluster joins a member already added to a running
	// cluster (`anvil join --control-plane`).
	EtcdExistingCluster EtcdClusterState = "existing"
)

// EtcdMember is this master's etcd membership.
type EtcdMember struct {
	// Name is the member name; empty means the node name.
	Name string
	// InitialCluster lists every member including this one; empty means
	// this member alone.
	InitialCluster []etcd.Peer
	// State is "new" unless a join sets "existing".
	State EtcdClusterState
	// Token keeps members of different clusters from joining each other by
	// mistake; empty means "anvil-" + the cluster name, the same on every
	// master of a cluster.
	Token string
}

// Ports of the controller-manager and the scheduler (etcd's are package
// etcd's, the apiserver's the cluster file's).
const (
	ControllerManagerPort = 10257
	SchedulerPort         = 10259
)

// Files anvil writes for the control plane, as host paths.
const (
	EtcdConfigFile           = hostfs.AnvilConfDir + "/etcd.yaml"
	EncryptionConfigFile     = hostfs.AnvilConfDir + "/encryption-config.yaml"
	AuditPolicyFile          = hostfs.AnvilConfDir + "/audit-policy.yaml"
	AuthenticationConfigFile = hostfs.AnvilConfDir + "/authentication-config.yaml"
	SchedulerConfigFile      = hostfs.AnvilConfDir + "/kube-scheduler.yaml"
	AuditLogDir              = hostfs.LogDir + "/audit"
	AuditLogFile             = AuditLogDir + "/kube-apiserver.log"
)

// NewPlan is the plan for host node of cluster c, with defaults filled in.
func NewPlan(c *v1alpha1.Cluster, node string, root hostfs.Root) (Plan, error) {
	h, ok := c.Host(node)
	if !ok {
		return Plan{}, fmt.Errorf("node %q is not in the cluster file", node)
	}
	return Plan{Cluster: c, Node: h, Root: root}.Complete()
}

// Complete fills in the defaults of every empty field and checks that the
// cluster file has what the specs need, so a Plan that passes renders.
func (p Plan) Complete() (Plan, error) {
	if p.Cluster == nil {
		return p, errors.New("plan has no cluster")
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !p.AdvertiseAddress.IsValid() {
		p.AdvertiseAddress = p.Node.NodeAddress()
	}
	if !p.AdvertiseAddress.IsValid() {
		bad("node %q has no address", p.Node.Name)
	}
	if p.KubernetesVersion == "" {
		p.KubernetesVersion = p.Cluster.KubernetesVersion
	}
	if p.KubernetesVersion == "" {
		p.KubernetesVersion = images.DefaultVersion
	}
	if _, err := images.Lookup(p.KubernetesVersion); err != nil {
		errs = append(errs, err)
	}
	if p.BinDir == "" {
		p.BinDir = p.Root.Bin(p.KubernetesVersion)
	}
	if p.AnvilBinary == "" {
		p.AnvilBinary = p.Root.Join(hostfs.LinkDir, images.AnvilBinary)
	}
	if !path.IsAbs(p.BinDir) || !path.IsAbs(p.AnvilBinary) {
		bad("binary paths must be absolute (bin dir %q, anvil %q)", p.BinDir, p.AnvilBinary)
	}
	if p.Etcd.Name == "" {
		p.Etcd.Name = p.Node.Name
	}
	if len(p.Etcd.InitialCluster) == 0 && p.AdvertiseAddress.IsValid() {
		p.Etcd.InitialCluster = []etcd.Peer{{Name: p.Etcd.Name, PeerURL: p.EtcdPeerURL()}}
	}
	if p.Etcd.State == "" {
		p.Etcd.State = EtcdNewCluster
	}
	if p.Etcd.State != EtcdNewCluster && p.Etcd.State != EtcdExistingCluster {
		bad("etcd initial cluster state %q: use %q or %q", p.Etcd.State, EtcdNewCluster, EtcdExistingCluster)
	}
	if p.Etcd.Token == "" {
		p.Etcd.Token = "anvil-" + p.Cluster.Name
	}

	// The cluster file is defaulted by v1alpha1.Load; these are the values
	// without which no component can start, checked here so that a Cluster
	// built in code fails clearly instead of rendering an empty flag.
	cp, nw := p.Cluster.ControlPlane, p.Cluster.Networking
	if p.Cluster.Name == "" {
		bad("cluster has no name")
	}
	if cp.Port == 0 {
		bad("controlPlane.port is not set")
	}
	if !nw.ServiceCIDR.IsValid() {
		bad("networking.serviceCIDR is not set")
	}
	if nw.ClusterDomain == "" {
		bad("networking.clusterDomain is not set")
	}
	if err := errors.Join(errs...); err != nil {
		return p, fmt.Errorf("plan for node %s: %w", p.Node.Name, err)
	}
	return p, nil
}

// Paths as the components see them, under the runtime root.

func (p Plan) path(hostPath string) string { return p.Root.Path(hostPath) }
func (p Plan) pkiFile(name string) string  { return p.Root.Join(hostfs.PKIDir, name) }
func (p Plan) cert(base string) string     { return p.pkiFile(pki.CertFile(base)) }
func (p Plan) key(base string) string      { return p.pkiFile(pki.KeyFile(base)) }
func (p Plan) kubeconfig(name string) string {
	return p.Root.Kubeconfig(name)
}
func (p Plan) k8sBinary(component string) string { return path.Join(p.BinDir, component) }

// URLs.

func (p Plan) hostPort(port int) string {
	return net.JoinHostPort(p.AdvertiseAddress.String(), strconv.Itoa(port))
}

// EtcdPeerURL is this master's etcd peer URL.
func (p Plan) EtcdPeerURL() string { return "https://" + p.hostPort(etcd.PeerPort) }

// EtcdClientURL is this master's etcd client URL.
func (p Plan) EtcdClientURL() string { return "https://" + p.hostPort(etcd.ClientPort) }
func (p Plan) apiserverPort() int    { return int(p.Cluster.ControlPlane.Port) }

// etcdLocalClientURL is what the local apiserver talks to: the member on
// the same machine, over loopback, as kubeadm's stacked etcd does.
func etcdLocalClientURL() string { return "https://127.0.0.1:" + strconv.Itoa(etcd.ClientPort) }
func etcdMetricsURL() string     { return "http://127.0.0.1:" + strconv.Itoa(etcd.MetricsPort) }
func etcdLocalHTTPURL() string   { return "https://127.0.0.1:" + strconv.Itoa(etcd.ClientHTTPPort) }

func (p Plan) serviceAccountIssuer() string {
	return "https://kubernetes.default.svc." + p.Cluster.Networking.ClusterDomain
}
