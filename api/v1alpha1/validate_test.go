package v1alpha1

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// baseCluster is the smallest sound cluster with room for every rule: three
// masters and a worker.
func baseCluster() *Cluster {
	return &Cluster{
		APIVersion: APIVersion, Kind: KindCluster, Name: "test",
		Hosts: []Host{
			{Name: "m1", Address: addr("10.0.0.11"), Role: RoleMaster},
			{Name: "m2", Address: addr("10.0.0.12"), Role: RoleMaster},
			{Name: "m3", Address: addr("10.0.0.13"), Role: RoleMaster},
			{Name: "w1", Address: addr("10.0.0.21"), Role: RoleWorker},
		},
	}
}

func TestValidate(t *testing.T) {
	recipient, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	type want = []problem
	tests := []struct {
		name string
		// pre edits the cluster before Default, post after it: some
		// mistakes (port 0) can only exist when Default has not run.
		pre, post func(c *Cluster)
		errs      want
		warnings  want
	}{
		{name: "base cluster is valid"},

		// the node stack
		{name: "runtime unknown", post: func(c *Cluster) { c.Hosts[0].Runtime = "docker" },
			errs: want{{0, "hosts[0].runtime", ReasonNotSupported, `"docker" is not a runtime: use one of containerd, none`}}},
		{name: "pod network unknown", post: func(c *Cluster) { c.Networking.Network = "flannel" },
			errs: want{{0, "networking.network", ReasonNotSupported, `"flannel" is not a pod network: use one of host-gw, none`}}},
		{name: "service CIDR too small for the DNS address", pre: func(c *Cluster) { c.Networking.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/29") },
			errs: want{{0, "networking.serviceCIDR", ReasonInvalid, "tenth address; use at least a /28"}}},
		{name: "a label a kubelet may not set", pre: func(c *Cluster) { c.Hosts[0].Labels = map[string]string{"node-role.kubernetes.io/db": ""} },
			errs: want{{0, "hosts[0].labels.node-role.kubernetes.io/db", ReasonInvalid, "NodeRestriction"}}},
		{name: "labels a kubelet may set", pre: func(c *Cluster) {
			c.Hosts[0].Labels = map[string]string{"node.kubernetes.io/pool": "a", "topology.kubernetes.io/zone": "z1", "example.com/x": "y"}
		}},
		{name: "a restricted label on a host without a runtime", pre: func(c *Cluster) {
			c.Hosts[0].Labels = map[string]string{"node-role.kubernetes.io/db": ""}
			c.Hosts[0].Runtime = RuntimeNone
		}},

		// document
		{name: "apiVersion missing", pre: func(c *Cluster) { c.APIVersion = "" },
			errs: want{{0, "apiVersion", ReasonRequired, `set it to "anvil.dev/v1alpha1"`}}},
		{name: "apiVersion wrong", pre: func(c *Cluster) { c.APIVersion = "anvil.dev/v1" },
			errs: want{{0, "apiVersion", ReasonNotSupported, `"anvil.dev/v1" is not supported`}}},
		{name: "kind missing", pre: func(c *Cluster) { c.Kind = "" },
			errs: want{{0, "kind", ReasonRequired, `"Cluster"`}}},
		{name: "kind wrong", pre: func(c *Cluster) { c.Kind = "Pod" },
			errs: want{{0, "kind", ReasonNotSupported, `"Pod" is not supported`}}},
		{name: "name missing", pre: func(c *Cluster) { c.Name = "" },
			errs: want{{0, "name", ReasonRequired, "required"}}},
		{name: "name not a DNS label", pre: func(c *Cluster) { c.Name = "Prod_EU" },
			errs: want{{0, "name", ReasonInvalid, "not a DNS label"}}},
		{name: "name with a dot", pre: func(c *Cluster) { c.Name = "prod.eu" },
			errs: want{{0, "name", ReasonInvalid, "not a DNS label"}}},
		{name: "name too long", pre: func(c *Cluster) { c.Name = strings.Repeat("a", 64) },
			errs: want{{0, "name", ReasonInvalid, "at most 63"}}},
		{name: "version without v", pre: func(c *Cluster) { c.KubernetesVersion = "1.37.2" },
			errs: want{{0, "kubernetesVersion", ReasonInvalid, "vMAJOR.MINOR.PATCH"}}},
		{name: "version without patch", pre: func(c *Cluster) { c.KubernetesVersion = "v1.37" },
			errs: want{{0, "kubernetesVersion", ReasonInvalid, "vMAJOR.MINOR.PATCH"}}},
		{name: "version with leading zero", pre: func(c *Cluster) { c.KubernetesVersion = "v1.037.2" },
			errs: want{{0, "kubernetesVersion", ReasonInvalid, "vMAJOR.MINOR.PATCH"}}},
		{name: "version not supported is not checked here", pre: func(c *Cluster) { c.KubernetesVersion = "v2.0.0" }},
		{name: "version missing", post: func(c *Cluster) { c.KubernetesVersion = "" },
			errs: want{{0, "kubernetesVersion", ReasonRequired, "required"}}},

		// hosts
		{name: "no hosts", pre: func(c *Cluster) { c.Hosts = nil },
			errs: want{{0, "hosts", ReasonRequired, "at least one host"}}},
		{name: "no master", pre: func(c *Cluster) { c.Hosts = c.Hosts[3:] },
			errs: want{{0, "hosts", ReasonRequired, `role "master"`}}},
		{name: "single master is fine", pre: func(c *Cluster) { c.Hosts = c.Hosts[2:] }},
		{name: "host name missing", pre: func(c *Cluster) { c.Hosts[1].Name = "" },
			errs: want{{0, "hosts[1].name", ReasonRequired, "node name"}}},
		{name: "host name not a DNS name", pre: func(c *Cluster) { c.Hosts[1].Name = "M2" },
			errs: want{{0, "hosts[1].name", ReasonInvalid, `"M2" is not a valid node name`}}},
		{name: "host name with dots is fine", pre: func(c *Cluster) { c.Hosts[1].Name = "m2.dc1.example.com" }},
		{name: "host name label too long", pre: func(c *Cluster) { c.Hosts[1].Name = strings.Repeat("a", 64) + ".example.com" },
			errs: want{{0, "hosts[1].name", ReasonInvalid, "longer than 63"}}},
		{name: "host name duplicate", pre: func(c *Cluster) { c.Hosts[3].Name = "m1" },
			errs: want{{0, "hosts[3].name", ReasonDuplicate, `"m1" is also the name of hosts[0]`}}},
		{name: "address missing", pre: func(c *Cluster) { c.Hosts[3].Address = netip.Addr{} },
			errs: want{{0, "hosts[3].address", ReasonRequired, "required"}}},
		{name: "address duplicate", pre: func(c *Cluster) { c.Hosts[2].Address = addr("10.0.0.11") },
			errs: want{{0, "hosts[2].address", ReasonDuplicate, "10.0.0.11 is also hosts[0].address"}}},
		{name: "address duplicate as IPv4-mapped IPv6", pre: func(c *Cluster) { c.Hosts[2].Address = addr("::ffff:10.0.0.11") },
			errs: want{{0, "hosts[2].address", ReasonDuplicate, "is also hosts[0].address"}}},
		{name: "internalAddress duplicates another host", pre: func(c *Cluster) { c.Hosts[3].InternalAddress = addr("10.0.0.12") },
			errs: want{{0, "hosts[3].internalAddress", ReasonDuplicate, "is also hosts[1].address"}}},
		{name: "address duplicates another internalAddress", pre: func(c *Cluster) {
			c.Hosts[0].InternalAddress = addr("192.168.0.1")
			c.Hosts[3].Address = addr("192.168.0.1")
		}, errs: want{{0, "hosts[3].address", ReasonDuplicate, "is also hosts[0].internalAddress"}}},
		{name: "internalAddress equal to own address is fine", pre: func(c *Cluster) { c.Hosts[3].InternalAddress = c.Hosts[3].Address }},
		{name: "address unspecified", pre: func(c *Cluster) { c.Hosts[3].Address = addr("0.0.0.0") },
			errs: want{{0, "hosts[3].address", ReasonInvalid, "unspecified"}}},
		{name: "address multicast", pre: func(c *Cluster) { c.Hosts[3].Address = addr("ff02::1") },
			errs: want{{0, "hosts[3].address", ReasonInvalid, "multicast"}}},
		{name: "address with zone", pre: func(c *Cluster) { c.Hosts[3].Address = addr("fe80::1%eth0") },
			errs: want{{0, "hosts[3].address", ReasonInvalid, "zone"}}},
		{name: "role missing", pre: func(c *Cluster) { c.Hosts[3].Role = "" },
			errs: want{{0, "hosts[3].role", ReasonRequired, "one of master, worker"}}},
		{name: "role unknown", pre: func(c *Cluster) { c.Hosts[3].Role = "Master" },
			errs: want{{0, "hosts[3].role", ReasonNotSupported, `"Master" is not a role: use one of master, worker`}}},
		{name: "even masters warn", pre: func(c *Cluster) { c.Hosts[3].Role = RoleMaster },
			warnings: want{{0, "hosts", ReasonInvalid, "4 masters tolerate no more failures than 3"}}},
		{name: "two masters warn", pre: func(c *Cluster) { c.Hosts = c.Hosts[1:] },
			warnings: want{{0, "hosts", ReasonInvalid, "2 masters tolerate no more failures than 1"}}},

		// ssh
		{name: "ssh port zero", post: func(c *Cluster) { c.Hosts[0].SSH.Port = 0 },
			errs: want{{0, "hosts[0].ssh.port", ReasonInvalid, "0 is not a port"}}},
		{name: "cluster ssh port zero is reported once", post: func(c *Cluster) {
			c.SSH.Port = 0
			for i := range c.Hosts {
				c.Hosts[i].SSH.Port = 0
			}
		}, errs: want{{0, "ssh.port", ReasonInvalid, "0 is not a port"}}},
		{name: "ssh user empty", post: func(c *Cluster) { c.Hosts[0].SSH.User = "" },
			errs: want{{0, "hosts[0].ssh.user", ReasonRequired, "required"}}},
		{name: "ssh user with a space", pre: func(c *Cluster) { c.SSH.User = "a b" },
			errs: want{{0, "ssh.user", ReasonInvalid, "spaces"}}},
		{name: "knownHosts empty", post: func(c *Cluster) { c.Hosts[0].SSH.KnownHosts = "" },
			errs: want{{0, "hosts[0].ssh.knownHosts", ReasonRequired, "required"}}},
		{name: "bastion by name", pre: func(c *Cluster) { c.SSH.Bastion = &Bastion{Address: "Jump.Example.com"} }},
		{name: "bastion by address", pre: func(c *Cluster) { c.Hosts[0].SSH.Bastion = &Bastion{Address: "192.0.2.1"} }},
		{name: "bastion address missing", pre: func(c *Cluster) { c.Hosts[0].SSH.Bastion = &Bastion{Port: 22} },
			errs: want{{0, "hosts[0].ssh.bastion.address", ReasonRequired, "required"}}},
		{name: "bastion address invalid", pre: func(c *Cluster) { c.Hosts[0].SSH.Bastion = &Bastion{Address: "jump_host"} },
			errs: want{{0, "hosts[0].ssh.bastion.address", ReasonInvalid, "not an IP address or DNS name"}}},
		{name: "bastion address with port", pre: func(c *Cluster) { c.Hosts[0].SSH.Bastion = &Bastion{Address: "jump:2222"} },
			errs: want{{0, "hosts[0].ssh.bastion.address", ReasonInvalid, "has a port"}}},
		{name: "cluster bastion problem is reported once", pre: func(c *Cluster) { c.SSH.Bastion = &Bastion{Address: "jump_host"} },
			errs: want{{0, "ssh.bastion.address", ReasonInvalid, "not an IP address or DNS name"}}},
		{name: "bastion port zero", post: func(c *Cluster) { c.Hosts[0].SSH.Bastion = &Bastion{Address: "jump", User: "root"} },
			errs: want{{0, "hosts[0].ssh.bastion.port", ReasonInvalid, "0 is not a port"}}},
		{name: "bastion user empty", post: func(c *Cluster) { c.Hosts[0].SSH.Bastion = &Bastion{Address: "jump", Port: 22} },
			errs: want{{0, "hosts[0].ssh.bastion.user", ReasonRequired, "required"}}},

		// labels and taints
		{name: "labels valid", pre: func(c *Cluster) {
			c.Hosts[3].Labels = map[string]string{"node.kubernetes.io/pool": "gpu", "tier": "", "a_b.c-d": "X_y.z-1"}
		}},
		{name: "label key invalid", pre: func(c *Cluster) { c.Hosts[3].Labels = map[string]string{"bad key": "x"} },
			errs: want{{0, `hosts[3].labels["bad key"]`, ReasonInvalid, `"bad key" is not a valid label key`}}},
		{name: "label prefix invalid", pre: func(c *Cluster) { c.Hosts[3].Labels = map[string]string{"Example.com/x": "x"} },
			errs: want{{0, `hosts[3].labels["Example.com/x"]`, ReasonInvalid, "prefix part"}}},
		{name: "label value invalid", pre: func(c *Cluster) { c.Hosts[3].Labels = map[string]string{"pool": "a b"} },
			errs: want{{0, "hosts[3].labels.pool", ReasonInvalid, `"a b" is not a valid label value`}}},
		{name: "label value too long", pre: func(c *Cluster) { c.Hosts[3].Labels = map[string]string{"pool": strings.Repeat("a", 64)} },
			errs: want{{0, "hosts[3].labels.pool", ReasonInvalid, "63"}}},
		{name: "taint valid", pre: func(c *Cluster) {
			c.Hosts[3].Taints = []Taint{{Key: "dedicated", Value: "gpu", Effect: NoSchedule}, {Key: "dedicated", Effect: NoExecute}}
		}},
		{name: "taint key missing", pre: func(c *Cluster) { c.Hosts[3].Taints = []Taint{{Effect: NoSchedule}} },
			errs: want{{0, "hosts[3].taints[0].key", ReasonRequired, "required"}}},
		{name: "taint key invalid", pre: func(c *Cluster) { c.Hosts[3].Taints = []Taint{{Key: "-x", Effect: NoSchedule}} },
			errs: want{{0, "hosts[3].taints[0].key", ReasonInvalid, "not a valid taint key"}}},
		{name: "taint value invalid", pre: func(c *Cluster) { c.Hosts[3].Taints = []Taint{{Key: "x", Value: "a/b", Effect: NoSchedule}} },
			errs: want{{0, "hosts[3].taints[0].value", ReasonInvalid, "not a valid taint value"}}},
		{name: "taint effect missing", pre: func(c *Cluster) { c.Hosts[3].Taints = []Taint{{Key: "x"}} },
			errs: want{{0, "hosts[3].taints[0].effect", ReasonRequired, "NoSchedule, PreferNoSchedule, NoExecute"}}},
		{name: "taint effect unknown", pre: func(c *Cluster) { c.Hosts[3].Taints = []Taint{{Key: "x", Effect: "Never"}} },
			errs: want{{0, "hosts[3].taints[0].effect", ReasonNotSupported, `"Never" is not a taint effect`}}},
		{name: "taint duplicate", pre: func(c *Cluster) {
			c.Hosts[3].Taints = []Taint{{Key: "x", Value: "a", Effect: NoSchedule}, {Key: "x", Value: "b", Effect: NoSchedule}}
		}, errs: want{{0, "hosts[3].taints[1]", ReasonDuplicate, "hosts[3].taints[0]"}}},

		// control plane
		{name: "endpoint DNS name", pre: func(c *Cluster) { c.ControlPlane.Endpoint = "K8s.example.com" }},
		{name: "endpoint IPv6", pre: func(c *Cluster) { c.ControlPlane.Endpoint = "2001:db8::1" }},
		{name: "endpoint URL", pre: func(c *Cluster) { c.ControlPlane.Endpoint = "https://k8s.example.com" },
			errs: want{{0, "controlPlane.endpoint", ReasonInvalid, "is a URL"}}},
		{name: "endpoint with port", pre: func(c *Cluster) { c.ControlPlane.Endpoint = "k8s.example.com:6443" },
			errs: want{{0, "controlPlane.endpoint", ReasonInvalid, "has a port"}}},
		{name: "endpoint not a name", pre: func(c *Cluster) { c.ControlPlane.Endpoint = "k8s_api" },
			errs: want{{0, "controlPlane.endpoint", ReasonInvalid, "not an IP address or DNS name"}}},
		{name: "endpoint missing without Default", post: func(c *Cluster) { c.ControlPlane.Endpoint = "" },
			errs: want{{0, "controlPlane.endpoint", ReasonRequired, "required"}}},
		{name: "port zero", post: func(c *Cluster) { c.ControlPlane.Port = 0 },
			errs: want{{0, "controlPlane.port", ReasonInvalid, "0 is not a port"}}},
		{name: "vip free", pre: func(c *Cluster) { c.ControlPlane.VIP = addr("10.0.0.10") }},
		{name: "vip is a host address", pre: func(c *Cluster) { c.ControlPlane.VIP = addr("10.0.0.21") },
			errs: want{{0, "controlPlane.vip", ReasonDuplicate, "10.0.0.21 is also hosts[3].address"}}},
		{name: "vip is a host's internal address", pre: func(c *Cluster) {
			c.Hosts[0].InternalAddress = addr("192.168.0.1")
			c.ControlPlane.VIP = addr("192.168.0.1")
		}, errs: want{{0, "controlPlane.vip", ReasonDuplicate, "is also hosts[0].internalAddress"}}},
		{name: "vip unspecified", pre: func(c *Cluster) { c.ControlPlane.VIP = addr("::") },
			errs: want{{0, "controlPlane.vip", ReasonInvalid, "unspecified"}}},
		{name: "vip with one master warns", pre: func(c *Cluster) {
			c.Hosts = c.Hosts[2:]
			c.ControlPlane.VIP = addr("10.0.0.10")
		}, warnings: want{{0, "controlPlane.vip", ReasonInvalid, "single master"}}},
		{name: "layout static-pod", pre: func(c *Cluster) { c.ControlPlane.Layout = LayoutStaticPod }},
		{name: "layout static-pod with a master without a runtime", pre: func(c *Cluster) {
			c.ControlPlane.Layout = LayoutStaticPod
			c.Hosts[1].Runtime = RuntimeNone
		}, errs: want{{0, "hosts[1].runtime", ReasonInvalid, `a master needs runtime "containerd" there`}}},
		{name: "layout unknown", pre: func(c *Cluster) { c.ControlPlane.Layout = "docker" },
			errs: want{{0, "controlPlane.layout", ReasonNotSupported, `"docker" is not a layout: use one of systemd, static-pod, process`}}},
		{name: "layout missing without Default", post: func(c *Cluster) { c.ControlPlane.Layout = "" },
			errs: want{{0, "controlPlane.layout", ReasonRequired, "required"}}},

		// networking
		{name: "serviceCIDR not masked", pre: func(c *Cluster) { c.Networking.ServiceCIDR = prefix("10.96.0.1/12") },
			errs: want{{0, "networking.serviceCIDR", ReasonInvalid, "10.96.0.1/12 is not a network address: did you mean 10.96.0.0/12?"}}},
		{name: "podCIDR not masked", pre: func(c *Cluster) { c.Networking.PodCIDR = prefix("10.244.1.0/16") },
			errs: want{{0, "networking.podCIDR", ReasonInvalid, "did you mean 10.244.0.0/16?"}}},
		{name: "serviceCIDR too large", pre: func(c *Cluster) { c.Networking.ServiceCIDR = prefix("10.0.0.0/8") },
			errs: want{
				{0, "networking.serviceCIDR", ReasonInvalid, "at most a /12"},
				// The same /8 also holds every host and the pod range.
				{0, "networking.podCIDR", ReasonInvalid, "overlaps"},
				{0, "hosts[0].address", ReasonInvalid, "inside networking.serviceCIDR"},
				{0, "hosts[1].address", ReasonInvalid, "inside networking.serviceCIDR"},
				{0, "hosts[2].address", ReasonInvalid, "inside networking.serviceCIDR"},
				{0, "hosts[3].address", ReasonInvalid, "inside networking.serviceCIDR"},
			}},
		{name: "IPv6 ranges", pre: func(c *Cluster) {
			c.Networking.ServiceCIDR = prefix("fd00:96::/108")
			c.Networking.PodCIDR = prefix("fd00:244::/56")
		}},
		{name: "IPv6 serviceCIDR too large", pre: func(c *Cluster) {
			c.Networking.ServiceCIDR = prefix("fd00:96::/64")
			c.Networking.PodCIDR = prefix("fd00:244::/56")
		}, errs: want{{0, "networking.serviceCIDR", ReasonInvalid, "at most a /108"}}},
		{name: "IP families differ", pre: func(c *Cluster) { c.Networking.ServiceCIDR = prefix("fd00:96::/108") },
			errs: want{{0, "networking.podCIDR", ReasonInvalid, "different IP families"}}},
		{name: "ranges overlap", pre: func(c *Cluster) { c.Networking.PodCIDR = prefix("10.100.0.0/16") },
			errs: want{{0, "networking.podCIDR", ReasonInvalid, "10.100.0.0/16 overlaps serviceCIDR 10.96.0.0/12"}}},
		{name: "host inside serviceCIDR", pre: func(c *Cluster) { c.Hosts[3].Address = addr("10.96.0.21") },
			errs: want{{0, "hosts[3].address", ReasonInvalid, "10.96.0.21 is inside networking.serviceCIDR 10.96.0.0/12"}}},
		{name: "internal address inside podCIDR", pre: func(c *Cluster) { c.Hosts[3].InternalAddress = addr("10.244.3.1") },
			errs: want{{0, "hosts[3].internalAddress", ReasonInvalid, "inside networking.podCIDR"}}},
		{name: "vip inside podCIDR", pre: func(c *Cluster) { c.ControlPlane.VIP = addr("10.244.0.10") },
			errs: want{{0, "controlPlane.vip", ReasonInvalid, "inside networking.podCIDR"}}},
		{name: "clusterDomain invalid", pre: func(c *Cluster) { c.Networking.ClusterDomain = "Cluster.Local" },
			errs: want{{0, "networking.clusterDomain", ReasonInvalid, `"Cluster.Local" is not a DNS name`}}},
		{name: "clusterDomain missing without Default", post: func(c *Cluster) { c.Networking.ClusterDomain = "" },
			errs: want{{0, "networking.clusterDomain", ReasonRequired, "required"}}},
		{name: "serviceCIDR missing without Default", post: func(c *Cluster) { c.Networking.ServiceCIDR = netip.Prefix{} },
			errs: want{{0, "networking.serviceCIDR", ReasonRequired, "required"}}},

		// etcd
		{name: "election timeout exactly 5 heartbeats", pre: func(c *Cluster) {
			c.Etcd.HeartbeatInterval = Duration{200 * time.Millisecond}
			c.Etcd.ElectionTimeout = Duration{time.Second}
		}},
		{name: "election timeout under 5 heartbeats", pre: func(c *Cluster) {
			c.Etcd.HeartbeatInterval = Duration{300 * time.Millisecond}
		}, errs: want{{0, "etcd.electionTimeout", ReasonInvalid, "1s is less than 5 × heartbeatInterval (300ms), which etcd refuses: use at least 1.5s"}}},
		{name: "election timeout over 50s", pre: func(c *Cluster) { c.Etcd.ElectionTimeout = Duration{time.Minute} },
			errs: want{{0, "etcd.electionTimeout", ReasonInvalid, "longer than 50s"}}},
		{name: "heartbeat not whole milliseconds", pre: func(c *Cluster) { c.Etcd.HeartbeatInterval = Duration{1500 * time.Microsecond} },
			errs: want{{0, "etcd.heartbeatInterval", ReasonInvalid, "whole number of milliseconds"}}},
		{name: "heartbeat negative", pre: func(c *Cluster) { c.Etcd.HeartbeatInterval = Duration{-time.Second} },
			errs: want{{0, "etcd.heartbeatInterval", ReasonInvalid, "not positive"}}},
		{name: "quota 8Gi is fine", pre: func(c *Cluster) { c.Etcd.QuotaBackendBytes = 8 << 30 }},
		{name: "quota over 8Gi warns", pre: func(c *Cluster) { c.Etcd.QuotaBackendBytes = 9 << 30 },
			warnings: want{{0, "etcd.quotaBackendBytes", ReasonInvalid, "9Gi is above 8Gi"}}},
		{name: "quota negative", pre: func(c *Cluster) { c.Etcd.QuotaBackendBytes = -1 },
			errs: want{{0, "etcd.quotaBackendBytes", ReasonInvalid, "positive size"}}},

		// pki
		{name: "RSA keys", pre: func(c *Cluster) { c.PKI.KeyAlgorithm = RSA4096 }},
		{name: "key algorithm unknown", pre: func(c *Cluster) { c.PKI.KeyAlgorithm = "RSA-1024" },
			errs: want{{0, "pki.keyAlgorithm", ReasonNotSupported, "use one of ECDSA-P256, RSA-2048, RSA-3072, RSA-4096"}}},
		{name: "key algorithm missing without Default", post: func(c *Cluster) { c.PKI.KeyAlgorithm = "" },
			errs: want{{0, "pki.keyAlgorithm", ReasonRequired, "required"}}},
		{name: "CA validity negative", pre: func(c *Cluster) { c.PKI.CAValidity = Duration{-time.Hour} },
			errs: want{{0, "pki.caValidity", ReasonInvalid, "not positive"}}},
		{name: "cert validity zero without Default", post: func(c *Cluster) { c.PKI.CertValidity = Duration{} },
			errs: want{{0, "pki.certValidity", ReasonInvalid, "not positive"}}},
		{name: "cert outlives CA", pre: func(c *Cluster) { c.PKI.CAValidity = Days(100) },
			errs: want{{0, "pki.certValidity", ReasonInvalid, "365d is longer than caValidity (100d)"}}},
		{name: "cert as long as CA", pre: func(c *Cluster) { c.PKI.CAValidity, c.PKI.CertValidity = Days(365), Days(365) }},
		{name: "certSANs valid", pre: func(c *Cluster) {
			c.PKI.CertSANs = []string{"k8s.example.com", "API.Example.com", "*.apps.example.com", "10.0.0.100", "2001:db8::100"}
		}},
		{name: "certSANs invalid", pre: func(c *Cluster) {
			c.PKI.CertSANs = []string{"ok.example.com", "", "bad name", "https://k8s", "*.*.example.com", "k8s:6443"}
		}, errs: want{
			{0, "pki.certSANs[1]", ReasonInvalid, "not an IP address or DNS name"},
			{0, "pki.certSANs[2]", ReasonInvalid, "not an IP address or DNS name"},
			{0, "pki.certSANs[3]", ReasonInvalid, "is a URL"},
			{0, "pki.certSANs[4]", ReasonInvalid, "not a wildcard DNS name"},
			{0, "pki.certSANs[5]", ReasonInvalid, "has a port"},
		}},

		// backup
		{name: "backup scheduled and encrypted", pre: func(c *Cluster) {
			c.Backup.Schedule = "*-*-* 02:00"
			c.Backup.Recipients = []string{recipient.Recipient().String()}
		}},
		{name: "retain negative", pre: func(c *Cluster) { c.Backup.Retain = -1 },
			errs: want{{0, "backup.retain", ReasonInvalid, "-1 is negative"}}},
		{name: "schedule with retain zero", post: func(c *Cluster) {
			c.Backup.Schedule = "daily"
			c.Backup.Retain = 0
		}, errs: want{{0, "backup.retain", ReasonInvalid, "keep at least 1"}}},
		{name: "schedule with a newline", pre: func(c *Cluster) { c.Backup.Schedule = "daily\nExecStart=/bin/sh" },
			errs: want{{0, "backup.schedule", ReasonInvalid, "newline"}}},
		{name: "dir relative", pre: func(c *Cluster) { c.Backup.Dir = "backups" },
			errs: want{{0, "backup.dir", ReasonInvalid, "not an absolute path"}}},
		{name: "recipient malformed", pre: func(c *Cluster) { c.Backup.Recipients = []string{recipient.Recipient().String(), "age1nope"} },
			errs: want{{0, "backup.recipients[1]", ReasonInvalid, `"age1nope" is not an age X25519 recipient`}}},
		{name: "recipient is an identity", pre: func(c *Cluster) { c.Backup.Recipients = []string{recipient.String()} },
			errs: want{{0, "backup.recipients[0]", ReasonInvalid, "not an age X25519 recipient"}}},
		{name: "recipient is an ssh key", pre: func(c *Cluster) {
			c.Backup.Recipients = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN"}
		}, errs: want{{0, "backup.recipients[0]", ReasonInvalid, "not an age X25519 recipient"}}},
		{name: "signing key valid", pre: func(c *Cluster) { c.Backup.SigningPublicKey = "ed25519:iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=" }},
		{name: "signing key short", pre: func(c *Cluster) { c.Backup.SigningPublicKey = "ed25519:iojj3XQJ8ZX9Uts=" },
			errs: want{{0, "backup.signingPublicKey", ReasonInvalid, "is not ed25519: and 32 bytes in base64"}}},
		{name: "signing key is an age recipient", pre: func(c *Cluster) { c.Backup.SigningPublicKey = recipient.Recipient().String() },
			errs: want{{0, "backup.signingPublicKey", ReasonInvalid, `does not start with "ed25519:"`}}},

		// components
		{name: "extraArgs valid", pre: func(c *Cluster) {
			c.Components.APIServer.ExtraArgs = map[string]string{"audit-log-path": "/var/log/audit.log", "v": "2", "enable-foo": ""}
		}},
		{name: "extraArgs with dashes", pre: func(c *Cluster) { c.Components.APIServer.ExtraArgs = map[string]string{"--v": "2"} },
			errs: want{{0, "components.apiServer.extraArgs.--v", ReasonInvalid, `without the leading dashes: "v"`}}},
		{name: "extraArgs not a flag name", pre: func(c *Cluster) {
			c.Components.ControllerManager.ExtraArgs = map[string]string{"Node_CIDR": "24"}
		}, errs: want{{0, "components.controllerManager.extraArgs.Node_CIDR", ReasonInvalid, `"Node_CIDR" is not a flag name`}}},
		{name: "extraArgs flag with equals", pre: func(c *Cluster) {
			c.Components.Scheduler.ExtraArgs = map[string]string{"v=2": ""}
		}, errs: want{{0, `components.scheduler.extraArgs["v=2"]`, ReasonInvalid, "not a flag name"}}},
		{name: "extraArgs value with newline", pre: func(c *Cluster) {
			c.Components.Scheduler.ExtraArgs = map[string]string{"foo": "a\nb"}
		}, errs: want{{0, "components.scheduler.extraArgs.foo", ReasonInvalid, "newline"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseCluster()
			if tt.pre != nil {
				tt.pre(c)
			}
			c.Default()
			if tt.post != nil {
				tt.post(c)
			}
			warnings, err := Validate(c)
			if (err == nil) != (len(tt.errs) == 0) {
				t.Errorf("Validate error = %v", err)
			}
			if err != nil {
				var errs FieldErrors
				if !errors.As(err, &errs) {
					t.Fatalf("error %v is not FieldErrors", err)
				}
				checkProblems(t, errs, tt.errs)
			}
			checkProblems(t, warnings, tt.warnings)
		})
	}
}

// TestValidateLines checks that problems found after decoding point at the
// line of their field, or of the nearest enclosing one when the field was
// left out.
func TestValidateLines(t *testing.T) {
	in := header + `hosts:
  - name: m1
    address: 10.0.0.11
    role: master
  - name: m2
    address: 10.0.0.11
  - name: m3
    address: 10.0.0.13
    role: boss
    ssh:
      port: 22
      bastion:
        port: 22
networking:
  podCIDR: 10.96.0.0/16
`
	c, err := Decode("cluster.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	c.Default()
	_, err = Validate(c)
	errs := AsFieldErrors(err)
	checkProblems(t, errs, []problem{
		{9, "hosts[1].address", ReasonDuplicate, "is also hosts[0].address"},
		{8, "hosts[1].role", ReasonRequired, "required"},
		{12, "hosts[2].role", ReasonNotSupported, `"boss"`},
		{15, "hosts[2].ssh.bastion.address", ReasonRequired, "required"},
		{18, "networking.podCIDR", ReasonInvalid, "overlaps"},
	})
	for _, e := range errs {
		if e.File != "cluster.yaml" {
			t.Errorf("%v: file %q", e, e.File)
		}
	}
	for i := 1; i < len(errs); i++ {
		if errs[i-1].Line > errs[i].Line {
			t.Errorf("errors out of file order: %v before %v", errs[i-1], errs[i])
		}
	}
}

func TestValidateWithoutSourceHasNoLines(t *testing.T) {
	c := baseCluster()
	c.Name = ""
	c.Default()
	_, err := Validate(c)
	if err == nil || err.Error() != "name: required: a DNS label like \"prod-eu1\"" {
		t.Errorf("err = %v", err)
	}
}
