package v1alpha1

import (
	"net/netip"
)

// APIVersion and Kind identify a cluster file.
const (
	APIVersion  = "anvil.dev/v1alpha1"
	KindCluster = "Cluster"
)

// Cluster is the whole cluster file: the machines, and how the Kubernetes
// control plane on them is laid out. Everything is optional except the hosts;
// Default fills in what an operator left out.
type Cluster struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	// Name identifies the cluster; it appears in kubeconfig contexts, in
	// backups (a restore refuses another cluster's backup) and in the lab.
	Name string `yaml:"name"`
	// KubernetesVersion selects which built components to run (images).
	KubernetesVersion string `yaml:"kubernetesVersion,omitempty"`

	ControlPlane ControlPlane `yaml:"controlPlane,omitempty"`
	// SSH holds connection defaults for every host; a host's own ssh block
	// overrides them field by field.
	SSH        SSH        `yaml:"ssh,omitempty"`
	Hosts      []Host     `yaml:"hosts"`
	Networking Networking `yaml:"networking,omitempty"`
	Etcd       Etcd       `yaml:"etcd,omitempty"`
	PKI        PKI        `yaml:"pki,omitempty"`
	Backup     Backup     `yaml:"backup,omitempty"`
	Components Components `yaml:"components,omitempty"`

	// src is where Decode found each field, for Validate's messages.
	src *source
}

// Role is what a host does in the cluster.
type Role string

const (
	RoleMaster Role = "master"
	RoleWorker Role = "worker"
)

// Roles lists the valid roles, for validation messages.
var Roles = []Role{RoleMaster, RoleWorker}

// Layout is how the control-plane components run on a master.
type Layout string

const (
	LayoutSystemd   Layout = "systemd"
	LayoutStaticPod Layout = "static-pod"
	LayoutProcess   Layout = "process"
)

// Layouts lists the valid layouts, for validation messages and flags.
var Layouts = []Layout{LayoutSystemd, LayoutStaticPod, LayoutProcess}

// KeyAlgorithm is the key type of every CA, leaf and the service-account key.
type KeyAlgorithm string

const (
	ECDSAP256 KeyAlgorithm = "ECDSA-P256"
	RSA2048   KeyAlgorithm = "RSA-2048"
	RSA3072   KeyAlgorithm = "RSA-3072"
	RSA4096   KeyAlgorithm = "RSA-4096"
)

// KeyAlgorithms lists the valid key algorithms, for validation messages.
var KeyAlgorithms = []KeyAlgorithm{ECDSAP256, RSA2048, RSA3072, RSA4096}

// ControlPlane says where clients reach the apiserver and how masters run it.
type ControlPlane struct {
	// Endpoint is the address or DNS name clients use (no port). Defaults to
	// the VIP when set, else the first master's address.
	Endpoint string `yaml:"endpoint,omitempty"`
	// Port is the apiserver's secure port.
	Port uint16 `yaml:"port,omitempty"`
	// VIP, when set, is a floating address one master holds at a time.
	//
	// The netip fields have no omitempty: go-yaml judges a struct empty by
	// its exported fields, of which netip types have none, so it would drop
	// every address. Unset ones marshal as "", which decodes back to unset.
	VIP netip.Addr `yaml:"vip"`
	// Layout is how components run on masters.
	Layout Layout `yaml:"layout,omitempty"`
}

// Host is one machine.
type Host struct {
	Name    string     `yaml:"name"`
	Address netip.Addr `yaml:"address"`
	// InternalAddress is the address cluster traffic uses when it differs
	// from the one anvil reaches over SSH (a NATed or multi-homed machine).
	InternalAddress netip.Addr        `yaml:"internalAddress"`
	Role            Role              `yaml:"role"`
	SSH             SSH               `yaml:"ssh,omitempty"`
	Labels          map[string]string `yaml:"labels,omitempty"`
	Taints          []Taint           `yaml:"taints,omitempty"`
}

// SSH is how anvil connects to a host.
type SSH struct {
	User string `yaml:"user,omitempty"`
	Port uint16 `yaml:"port,omitempty"`
	// IdentityFile is a private key; when empty, keys come from ssh-agent.
	IdentityFile string `yaml:"identityFile,omitempty"`
	// KnownHosts is the known_hosts file host keys are checked against.
	KnownHosts string   `yaml:"knownHosts,omitempty"`
	Bastion    *Bastion `yaml:"bastion,omitempty"`
	// Sudo runs commands through passwordless `sudo -n` for a non-root user.
	Sudo *bool `yaml:"sudo,omitempty"`
}

// Bastion is a jump host the connection to a host goes through.
type Bastion struct {
	// Address is an IP address or DNS name.
	Address      string `yaml:"address"`
	Port         uint16 `yaml:"port,omitempty"`
	User         string `yaml:"user,omitempty"`
	IdentityFile string `yaml:"identityFile,omitempty"`
}

// TaintEffect is a Kubernetes taint effect.
type TaintEffect string

const (
	NoSchedule       TaintEffect = "NoSchedule"
	PreferNoSchedule TaintEffect = "PreferNoSchedule"
	NoExecute        TaintEffect = "NoExecute"
)

// TaintEffects lists the valid effects.
var TaintEffects = []TaintEffect{NoSchedule, PreferNoSchedule, NoExecute}

// Taint is put on the host's Node when it registers.
type Taint struct {
	Key    string      `yaml:"key"`
	Value  string      `yaml:"value,omitempty"`
	Effect TaintEffect `yaml:"effect"`
}

// Networking holds the cluster's address plan.
type Networking struct {
	// No omitempty, for the reason given at ControlPlane.VIP.
	ServiceCIDR   netip.Prefix `yaml:"serviceCIDR"`
	PodCIDR       netip.Prefix `yaml:"podCIDR"`
	ClusterDomain string       `yaml:"clusterDomain,omitempty"`
}

// Etcd tunes the etcd member anvil embeds on every master. Names follow
// etcd's own configuration keys.
type Etcd struct {
	// QuotaBackendBytes is the backend size limit (etcd's default is 2 GiB).
	QuotaBackendBytes Size `yaml:"quotaBackendBytes,omitempty"`
	// SnapshotCount is how many applied entries trigger a raft snapshot.
	SnapshotCount uint64 `yaml:"snapshotCount,omitempty"`
	// HeartbeatInterval and ElectionTimeout are raft timings; raise them
	// together on slow or distant networks.
	HeartbeatInterval Duration `yaml:"heartbeatInterval,omitempty"`
	ElectionTimeout   Duration `yaml:"electionTimeout,omitempty"`
}

// PKI says how certificates are made.
type PKI struct {
	KeyAlgorithm KeyAlgorithm `yaml:"keyAlgorithm,omitempty"`
	CAValidity   Duration     `yaml:"caValidity,omitempty"`
	CertValidity Duration     `yaml:"certValidity,omitempty"`
	// CertSANs are extra names and addresses for the apiserver certificate.
	CertSANs []string `yaml:"certSANs,omitempty"`
}

// Backup configures etcd backups on masters.
type Backup struct {
	// Schedule is a systemd OnCalendar expression ("hourly", "*-*-* 02:00");
	// empty means no scheduled backups.
	Schedule string `yaml:"schedule,omitempty"`
	// Retain is how many scheduled backups are kept; older ones are pruned.
	Retain int `yaml:"retain,omitempty"`
	// Dir is where backups are kept on each master.
	Dir string `yaml:"dir,omitempty"`
	// Recipients are age public keys (age1…); when set, every backup is
	// encrypted to all of them.
	Recipients []string `yaml:"recipients,omitempty"`
}

// Components holds per-component settings.
type Components struct {
	APIServer         Component `yaml:"apiServer,omitempty"`
	ControllerManager Component `yaml:"controllerManager,omitempty"`
	Scheduler         Component `yaml:"scheduler,omitempty"`
}

// Component holds settings for one control-plane component.
type Component struct {
	// ExtraArgs add or change flags (without the leading --). Flags that
	// name certificates, keys or etcd endpoints cannot be changed.
	ExtraArgs map[string]string `yaml:"extraArgs,omitempty"`
}
