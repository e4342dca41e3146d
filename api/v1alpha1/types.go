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
// control plane on them is laid out. Besides apiVersion, kind and name, only
// the hosts must be given; Default fills in what an operator left out.
//
// The first paragraph of each field's comment is also the field's entry in
// docs/cluster-file.md (TestClusterFileReference generates it), so it is
// written for operators; notes for programmers go in later paragraphs.
type Cluster struct {
	// APIVersion is the version of the cluster file's format:
	// `anvil.dev/v1alpha1`.
	APIVersion string `yaml:"apiVersion"`
	// Kind is always `Cluster`.
	Kind string `yaml:"kind"`
	// Name identifies the cluster: a DNS label (lowercase letters, digits
	// and '-'). It appears in kubeconfig contexts and in backups, so a
	// restore refuses another cluster's backup.
	Name string `yaml:"name"`
	// KubernetesVersion is the Kubernetes release to run, as
	// vMAJOR.MINOR.PATCH; `anvil images list` shows the ones built.
	KubernetesVersion string `yaml:"kubernetesVersion,omitempty"`

	// ControlPlane says where clients reach the apiserver and how masters
	// run it.
	ControlPlane ControlPlane `yaml:"controlPlane,omitempty"`
	// SSH holds connection defaults for every host; a host's own ssh block
	// overrides them field by field.
	SSH SSH `yaml:"ssh,omitempty"`
	// Hosts are the machines: masters run etcd and the control plane,
	// workers run workloads. Use an odd number of masters (1, 3 or 5): etcd
	// needs a majority of them up, so 4 masters survive no more failures
	// than 3.
	Hosts []Host `yaml:"hosts"`
	// Networking is the cluster's address plan.
	Networking Networking `yaml:"networking,omitempty"`
	// Etcd tunes the etcd member anvil embeds on every master. Names follow
	// etcd's own configuration keys.
	Etcd Etcd `yaml:"etcd,omitempty"`
	// PKI says how certificates are made (kubeadm's layout under
	// /etc/kubernetes/pki).
	PKI PKI `yaml:"pki,omitempty"`
	// Backup configures the etcd backups taken on masters.
	Backup Backup `yaml:"backup,omitempty"`
	// Components holds extra settings for the control-plane components.
	Components Components `yaml:"components,omitempty"`
	// Images are container image archives (docker-archive or OCI tar files,
	// paths on the workstation) that `anvil cluster apply` puts on every
	// node with a runtime; each node's agent imports them into containerd,
	// so workloads run without a registry.
	Images []string `yaml:"images,omitempty"`

	// src is where Decode found each field, for Validate's messages.
	src *source
}

// Role is what a host does in the cluster.
type Role string

const (
	RoleMaster Role = "master"
	RoleWorker Role = "worker"
)

// Roles() lists the valid roles, for validation messages.
func Roles() []Role { return []Role{RoleMaster, RoleWorker} }

// Layout is how the control-plane components run on a master.
type Layout string

const (
	LayoutSystemd   Layout = "systemd"
	LayoutStaticPod Layout = "static-pod"
	LayoutProcess   Layout = "process"
)

// Layouts() lists the valid layouts, for validation messages and flags.
func Layouts() []Layout { return []Layout{LayoutSystemd, LayoutStaticPod, LayoutProcess} }

// KeyAlgorithm is the key type of every CA, leaf and the service-account key.
type KeyAlgorithm string

const (
	ECDSAP256 KeyAlgorithm = "ECDSA-P256"
	RSA2048   KeyAlgorithm = "RSA-2048"
	RSA3072   KeyAlgorithm = "RSA-3072"
	RSA4096   KeyAlgorithm = "RSA-4096"
)

// KeyAlgorithms() lists the valid key algorithms, for validation messages.
func KeyAlgorithms() []KeyAlgorithm { return []KeyAlgorithm{ECDSAP256, RSA2048, RSA3072, RSA4096} }

// ControlPlane says where clients reach the apiserver and how masters run it.
type ControlPlane struct {
	// Endpoint is the IP address or DNS name clients reach the apiserver
	// at, without a port.
	Endpoint string `yaml:"endpoint,omitempty"`
	// Port is the apiserver's secure port.
	Port uint16 `yaml:"port,omitempty"`
	// VIP, when set, is a free address on the masters' network that one
	// master holds at a time, so the endpoint survives the loss of any
	// master. Leave it out to use a load balancer or DNS instead.
	//
	// The netip fields have no omitempty: go-yaml judges a struct empty by
	// its exported fields, of which netip types have none, so it would drop
	// every address. Unset ones marshal as "", which decodes back to unset.
	VIP netip.Addr `yaml:"vip"`
	// Layout is how masters run etcd and the control-plane components: one
	// systemd unit each, static pods the kubelet runs from
	// /etc/kubernetes/manifests, or processes anvil supervises itself (for
	// machines without systemd).
	Layout Layout `yaml:"layout,omitempty"`
}

// Host is one machine.
type Host struct {
	// Name is the host's Kubernetes node name: a lowercase DNS name, unique
	// in the file.
	Name string `yaml:"name"`
	// Address is the IP address anvil reaches the host at over SSH.
	Address netip.Addr `yaml:"address"`
	// InternalAddress is the address cluster traffic uses when it differs
	// from the one anvil reaches over SSH (a NATed or multi-homed machine).
	InternalAddress netip.Addr `yaml:"internalAddress"`
	// Role is master (etcd and the control plane) or worker (workloads).
	Role Role `yaml:"role"`
	// SSH overrides the cluster-wide ssh settings for this host, field by
	// field.
	SSH SSH `yaml:"ssh,omitempty"`
	// Labels are put on the host's Node when it registers.
	Labels map[string]string `yaml:"labels,omitempty"`
	// Taints are put on the host's Node when it registers.
	Taints []Taint `yaml:"taints,omitempty"`
	// Runtime is containerd (the host runs pods: containerd, runc and the
	// kubelet) or none (the host only registers its Node and keeps it alive,
	// with a NoSchedule taint: a machine that must run no workload).
	Runtime Runtime `yaml:"runtime,omitempty"`
}

// Runtime is what runs a host's pods.
type Runtime string

const (
	RuntimeContainerd Runtime = "containerd"
	RuntimeNone       Runtime = "none"
)

// Runtimes lists the valid runtimes, for validation messages.
func Runtimes() []Runtime { return []Runtime{RuntimeContainerd, RuntimeNone} }

// PodNetwork is how pods on different nodes reach each other.
type PodNetwork string

const (
	// PodNetworkHostGW routes each node's pod range through that node's
	// address; every node must reach every other on one link.
	PodNetworkHostGW PodNetwork = "host-gw"
	// PodNetworkNone installs no pod network: the operator brings one
	// (Calico, Cilium, …) after apply.
	PodNetworkNone PodNetwork = "none"
)

// PodNetworks lists the valid pod networks, for validation messages.
func PodNetworks() []PodNetwork { return []PodNetwork{PodNetworkHostGW, PodNetworkNone} }

// SSH is how anvil connects to a host.
type SSH struct {
	// User is the login user.
	User string `yaml:"user,omitempty"`
	// Port is the SSH port.
	Port uint16 `yaml:"port,omitempty"`
	// IdentityFile is a private key; when empty, keys come from ssh-agent.
	IdentityFile string `yaml:"identityFile,omitempty"`
	// KnownHosts is the known_hosts file host keys are checked against;
	// an unknown host key is never accepted blindly.
	KnownHosts string `yaml:"knownHosts,omitempty"`
	// Bastion is a jump host every connection goes through, like ssh -J.
	Bastion *Bastion `yaml:"bastion,omitempty"`
	// Sudo runs commands through passwordless `sudo -n`, which a non-root
	// user needs.
	Sudo *bool `yaml:"sudo,omitempty"`
}

// Bastion is a jump host the connection to a host goes through.
type Bastion struct {
	// Address is the jump host's IP address or DNS name.
	Address string `yaml:"address"`
	// Port is the jump host's SSH port.
	Port uint16 `yaml:"port,omitempty"`
	// User is the login user on the jump host.
	User string `yaml:"user,omitempty"`
	// IdentityFile is the private key for the jump host; when empty, keys
	// come from ssh-agent.
	IdentityFile string `yaml:"identityFile,omitempty"`
}

// TaintEffect is a Kubernetes taint effect.
type TaintEffect string

const (
	NoSchedule       TaintEffect = "NoSchedule"
	PreferNoSchedule TaintEffect = "PreferNoSchedule"
	NoExecute        TaintEffect = "NoExecute"
)

// TaintEffects() lists the valid effects.
func TaintEffects() []TaintEffect { return []TaintEffect{NoSchedule, PreferNoSchedule, NoExecute} }

// Taint is put on the host's Node when it registers.
type Taint struct {
	// Key is the taint's key, shaped like a label key (example.com/name).
	Key string `yaml:"key"`
	// Value is the taint's value, shaped like a label value.
	Value string `yaml:"value,omitempty"`
	// Effect is what the taint does to pods that do not tolerate it.
	Effect TaintEffect `yaml:"effect"`
}

// Networking holds the cluster's address plan.
type Networking struct {
	// ServiceCIDR is where Service ClusterIPs come from; the first address
	// is the kubernetes Service's. At most a /12 for IPv4, a /108 for IPv6.
	//
	// The prefixes have no omitempty, for the reason given at
	// ControlPlane.VIP.
	ServiceCIDR netip.Prefix `yaml:"serviceCIDR"`
	// PodCIDR is where pod addresses come from; each node gets a slice of
	// it. It must not overlap serviceCIDR or hold any host's address.
	PodCIDR netip.Prefix `yaml:"podCIDR"`
	// ClusterDomain is the DNS domain of Services
	// (name.namespace.svc.cluster.local).
	ClusterDomain string `yaml:"clusterDomain,omitempty"`
	// Network is the pod network: host-gw (anvil routes every node's pod
	// range through that node and masquerades traffic leaving the pod
	// range) or none (bring your own CNI, such as Calico or Cilium).
	Network PodNetwork `yaml:"network,omitempty"`
}

// Etcd tunes the etcd member anvil embeds on every master. Names follow
// etcd's own configuration keys.
type Etcd struct {
	// QuotaBackendBytes is the database size limit: above it etcd raises an
	// alarm and refuses writes. More than 8Gi is beyond what etcd's
	// documentation suggests.
	QuotaBackendBytes Size `yaml:"quotaBackendBytes,omitempty"`
	// SnapshotCount is how many applied entries trigger a raft snapshot.
	SnapshotCount uint64 `yaml:"snapshotCount,omitempty"`
	// HeartbeatInterval is how often the raft leader tells the other
	// members it is alive, in whole milliseconds. Raise it together with
	// electionTimeout on slow or distant networks.
	HeartbeatInterval Duration `yaml:"heartbeatInterval,omitempty"`
	// ElectionTimeout is how long a member waits for a heartbeat before it
	// calls an election, in whole milliseconds: at least 5 heartbeats and at
	// most 50s.
	ElectionTimeout Duration `yaml:"electionTimeout,omitempty"`
}

// PKI says how certificates are made.
type PKI struct {
	// KeyAlgorithm is the key type of every CA, every certificate they sign
	// and the service-account key.
	KeyAlgorithm KeyAlgorithm `yaml:"keyAlgorithm,omitempty"`
	// CAValidity is how long the CAs are valid.
	CAValidity Duration `yaml:"caValidity,omitempty"`
	// CertValidity is how long the certificates the CAs sign are valid; no
	// longer than caValidity.
	CertValidity Duration `yaml:"certValidity,omitempty"`
	// CertSANs are extra names and addresses for the apiserver certificate,
	// beyond the endpoint, the VIP, the masters and the kubernetes Service
	// names. A name may be a wildcard (`*.example.com`).
	CertSANs []string `yaml:"certSANs,omitempty"`
}

// Backup configures etcd backups on masters.
type Backup struct {
	// Schedule is a systemd OnCalendar expression (`hourly`,
	// `*-*-* 02:00`); empty means no scheduled backups.
	Schedule string `yaml:"schedule,omitempty"`
	// Retain is how many scheduled backups are kept; older ones are pruned.
	Retain int `yaml:"retain,omitempty"`
	// Dir is where backups are kept on each master.
	Dir string `yaml:"dir,omitempty"`
	// Recipients are age public keys (age1…, as age-keygen prints them);
	// every backup is encrypted to all of them, so keep the matching
	// identity somewhere safe. Without any, backups are refused unless
	// allowUnencrypted says otherwise.
	Recipients []string `yaml:"recipients,omitempty"`
	// AllowUnencrypted lets masters write backups without recipients: each
	// then holds every CA key, the service-account key and the Secrets
	// encryption key in the clear. `anvil backup --allow-unencrypted` allows
	// one such backup without it.
	AllowUnencrypted bool `yaml:"allowUnencrypted,omitempty"`
	// SigningPublicKey pins the key backups are signed with (ed25519:…,
	// as `anvil cluster apply` and `anvil status -o json` on a master print
	// it). The masters make the key when the cluster is created; once
	// pinned, a master holding another key refuses to take backups, and
	// `anvil cluster restore` and `anvil cluster backup` check every
	// backup against it (without it, against the key the masters hold).
	SigningPublicKey string `yaml:"signingPublicKey,omitempty"`
}

// Components holds per-component settings.
type Components struct {
	// APIServer holds settings for kube-apiserver.
	APIServer Component `yaml:"apiServer,omitempty"`
	// ControllerManager holds settings for kube-controller-manager.
	ControllerManager Component `yaml:"controllerManager,omitempty"`
	// Scheduler holds settings for kube-scheduler.
	Scheduler Component `yaml:"scheduler,omitempty"`
}

// Component holds settings for one control-plane component.
type Component struct {
	// ExtraArgs add or change flags, written without the leading `--`.
	// Flags that name certificates, keys or etcd endpoints cannot be
	// changed. Values that weaken the control plane are refused unless
	// allowInsecure names their flag: `AlwaysAllow` in
	// `authorization-mode`, `profiling: "true"`, a `tls-min-version` below
	// `VersionTLS12`, a `bind-address` other than loopback
	// (controllerManager and scheduler), and an empty `audit-log-path` or
	// `audit-policy-file` (no audit log).
	ExtraArgs map[string]string `yaml:"extraArgs,omitempty"`
	// AllowInsecure names the flags in extraArgs that weaken the control
	// plane on purpose, such as `profiling` while chasing a performance
	// problem. Each must be one of the weakening flags extraArgs lists.
	AllowInsecure []string `yaml:"allowInsecure,omitempty"`
}
