package v1alpha1

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefault(t *testing.T) {
	c := baseCluster()
	c.Default()
	no := false
	wantSSH := SSH{User: "root", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no}
	tests := []struct {
		field     string
		got, want any
	}{
		{"kubernetesVersion", c.KubernetesVersion, "v1.37.2"},
		{"controlPlane.port", c.ControlPlane.Port, uint16(6443)},
		{"controlPlane.layout", c.ControlPlane.Layout, LayoutSystemd},
		{"controlPlane.endpoint", c.ControlPlane.Endpoint, "10.0.0.11"},
		{"ssh", c.SSH, wantSSH},
		{"hosts[3].ssh", c.Hosts[3].SSH, wantSSH},
		{"networking.serviceCIDR", c.Networking.ServiceCIDR, prefix("10.96.0.0/12")},
		{"networking.podCIDR", c.Networking.PodCIDR, prefix("10.244.0.0/16")},
		{"networking.clusterDomain", c.Networking.ClusterDomain, "cluster.local"},
		{"etcd.quotaBackendBytes", c.Etcd.QuotaBackendBytes, Size(2 << 30)},
		{"etcd.snapshotCount", c.Etcd.SnapshotCount, uint64(10000)},
		{"etcd.heartbeatInterval", c.Etcd.HeartbeatInterval, Duration{100 * time.Millisecond}},
		{"etcd.electionTimeout", c.Etcd.ElectionTimeout, Duration{time.Second}},
		{"pki.keyAlgorithm", c.PKI.KeyAlgorithm, ECDSAP256},
		{"pki.caValidity", c.PKI.CAValidity, Days(3650)},
		{"pki.certValidity", c.PKI.CertValidity, Days(365)},
		{"backup.retain", c.Backup.Retain, 7},
		{"backup.dir", c.Backup.Dir, "/var/lib/anvil/backups"},
		{"backup.schedule stays empty", c.Backup.Schedule, ""},
		{"apiVersion is not invented", c.APIVersion, APIVersion},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("%s = %v, want %v", tt.field, tt.got, tt.want)
			}
		})
	}
}

func TestDefaultKeepsWhatIsSet(t *testing.T) {
	in := fullCluster()
	c := fullCluster()
	c.Default()
	if !reflect.DeepEqual(in, c) {
		t.Errorf("Default changed a fully set cluster:\nbefore %+v\nafter  %+v", in, c)
	}
}

func TestDefaultEndpoint(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Cluster)
		want string
	}{
		{"first master's address", func(c *Cluster) {}, "10.0.0.11"},
		{"first master, not first host", func(c *Cluster) { c.Hosts = []Host{c.Hosts[3], c.Hosts[1]} }, "10.0.0.12"},
		{"the VIP when set", func(c *Cluster) { c.ControlPlane.VIP = addr("10.0.0.10") }, "10.0.0.10"},
		{"an explicit endpoint wins", func(c *Cluster) {
			c.ControlPlane.VIP = addr("10.0.0.10")
			c.ControlPlane.Endpoint = "k8s.example.com"
		}, "k8s.example.com"},
		{"nothing to default from", func(c *Cluster) { c.Hosts = c.Hosts[3:] }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseCluster()
			tt.edit(c)
			c.Default()
			if c.ControlPlane.Endpoint != tt.want {
				t.Errorf("endpoint = %q, want %q", c.ControlPlane.Endpoint, tt.want)
			}
		})
	}
}

func TestDefaultSSH(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name     string
		cluster  SSH
		host     SSH
		want     SSH
		wantBase SSH // the cluster-wide block after Default
	}{
		{
			name:     "anvil's defaults",
			want:     SSH{User: "root", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no},
			wantBase: SSH{User: "root", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no},
		},
		{
			name:     "non-root user implies sudo",
			cluster:  SSH{User: "ubuntu"},
			want:     SSH{User: "ubuntu", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &yes},
			wantBase: SSH{User: "ubuntu", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &yes},
		},
		{
			name:     "host's root login does not inherit the implied sudo",
			cluster:  SSH{User: "ubuntu"},
			host:     SSH{User: "root"},
			want:     SSH{User: "root", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no},
			wantBase: SSH{User: "ubuntu", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &yes},
		},
		{
			name:     "explicit cluster sudo is inherited",
			cluster:  SSH{User: "ubuntu", Sudo: &no},
			want:     SSH{User: "ubuntu", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no},
			wantBase: SSH{User: "ubuntu", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no},
		},
		{
			name:     "host fields win one by one",
			cluster:  SSH{User: "ops", Port: 2200, IdentityFile: "~/.ssh/ops", KnownHosts: "/etc/kh"},
			host:     SSH{Port: 2222, Sudo: &no},
			want:     SSH{User: "ops", Port: 2222, IdentityFile: "~/.ssh/ops", KnownHosts: "/etc/kh", Sudo: &no},
			wantBase: SSH{User: "ops", Port: 2200, IdentityFile: "~/.ssh/ops", KnownHosts: "/etc/kh", Sudo: &yes},
		},
		{
			name:    "cluster bastion is inherited with the host's user",
			cluster: SSH{Bastion: &Bastion{Address: "jump"}},
			host:    SSH{User: "admin"},
			want: SSH{User: "admin", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &yes,
				Bastion: &Bastion{Address: "jump", Port: 22, User: "admin"}},
			wantBase: SSH{User: "root", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no,
				Bastion: &Bastion{Address: "jump", Port: 22, User: "root"}},
		},
		{
			name:    "host bastion is taken whole",
			cluster: SSH{Bastion: &Bastion{Address: "jump1", IdentityFile: "~/.ssh/j1"}},
			host:    SSH{Bastion: &Bastion{Address: "jump2", Port: 2022}},
			want: SSH{User: "root", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no,
				Bastion: &Bastion{Address: "jump2", Port: 2022, User: "root"}},
			wantBase: SSH{User: "root", Port: 22, KnownHosts: "~/.ssh/known_hosts", Sudo: &no,
				Bastion: &Bastion{Address: "jump1", Port: 22, User: "root", IdentityFile: "~/.ssh/j1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseCluster()
			c.SSH = tt.cluster
			c.Hosts[0].SSH = tt.host
			c.Default()
			if !reflect.DeepEqual(c.Hosts[0].SSH, tt.want) {
				t.Errorf("host ssh = %s, want %s", showSSH(c.Hosts[0].SSH), showSSH(tt.want))
			}
			if !reflect.DeepEqual(c.SSH, tt.wantBase) {
				t.Errorf("cluster ssh = %s, want %s", showSSH(c.SSH), showSSH(tt.wantBase))
			}
			again := *c
			again.Hosts = append([]Host(nil), c.Hosts...)
			again.Default()
			if !reflect.DeepEqual(again.Hosts[0].SSH, c.Hosts[0].SSH) || !reflect.DeepEqual(again.SSH, c.SSH) {
				t.Errorf("a second Default changed ssh: %s", showSSH(again.Hosts[0].SSH))
			}
		})
	}
}

// TestDefaultDoesNotShareState guards against hosts sharing the pointers of
// the cluster-wide block, where changing one host's sudo or bastion would
// silently change the others'.
func TestDefaultDoesNotShareState(t *testing.T) {
	yes := true
	c := baseCluster()
	c.SSH = SSH{Sudo: &yes, Bastion: &Bastion{Address: "jump"}}
	c.Default()
	*c.Hosts[0].SSH.Sudo = false
	c.Hosts[0].SSH.Bastion.Address = "elsewhere"
	if !*c.Hosts[1].SSH.Sudo || !*c.SSH.Sudo || c.Hosts[1].SSH.Bastion.Address != "jump" || c.SSH.Bastion.Address != "jump" {
		t.Error("hosts share sudo or bastion with each other or with the cluster-wide block")
	}
}

func TestDefaultIsIdempotent(t *testing.T) {
	for _, file := range []string{"testdata/minimal.yaml", "testdata/anchors.yaml"} {
		t.Run(file, func(t *testing.T) {
			once, err := Decode(file, mustRead(t, file))
			if err != nil {
				t.Fatal(err)
			}
			twice, _ := Decode(file, mustRead(t, file))
			once.Default()
			twice.Default()
			twice.Default()
			if !reflect.DeepEqual(once, twice) {
				t.Errorf("Default twice differs from once:\n%+v\n%+v", once, twice)
			}
		})
	}
}

func showSSH(s SSH) string {
	sudo, bastion := "nil", "nil"
	if s.Sudo != nil {
		sudo = fmt.Sprint(*s.Sudo)
	}
	if s.Bastion != nil {
		bastion = fmt.Sprintf("%+v", *s.Bastion)
	}
	s.Sudo, s.Bastion = nil, nil
	return fmt.Sprintf("%+v sudo=%s bastion=%s", s, sudo, bastion)
}

// TestPublishedLeavesOutSSH: what anvil publishes inside the cluster has
// no ssh settings and decodes, and the cluster it came from keeps its own.
func TestPublishedLeavesOutSSH(t *testing.T) {
	c := fullCluster()
	c.Default()
	p := c.Published()
	if !reflect.DeepEqual(p.SSH, SSH{}) {
		t.Errorf("published ssh: %+v", p.SSH)
	}
	for i, h := range p.Hosts {
		if !reflect.DeepEqual(h.SSH, SSH{}) {
			t.Errorf("published hosts[%d].ssh: %+v", i, h.SSH)
		}
	}
	if !reflect.DeepEqual(c, func() *Cluster { f := fullCluster(); f.Default(); return f }()) {
		t.Error("Published changed the cluster it was called on")
	}
	b, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"ssh", "identityFile", "knownHosts", "bastion", "~/.ssh/id", "/etc/ssh/known", "ubuntu"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("published file holds %q:\n%s", secret, b)
		}
	}
	if !strings.Contains(string(b), c.Backup.Recipients[0]) {
		t.Errorf("published file lost the backup recipient:\n%s", b)
	}
	if _, err := Decode("published", b); err != nil {
		t.Errorf("the published file does not decode: %v\n%s", err, b)
	}
}

// TestDefaultedLeavesTheOriginal: the copy has every default, the cluster
// it was made from none of them, its hosts included.
func TestDefaultedLeavesTheOriginal(t *testing.T) {
	c := &Cluster{Hosts: []Host{{Name: "m1", Address: netip.MustParseAddr("10.0.0.1"), Role: RoleMaster}}}
	d := c.Defaulted()
	if d.KubernetesVersion != DefaultKubernetesVersion || d.Hosts[0].Runtime != RuntimeContainerd {
		t.Errorf("the copy lacks defaults: %q, runtime %q", d.KubernetesVersion, d.Hosts[0].Runtime)
	}
	if c.KubernetesVersion != "" || c.Hosts[0].Runtime != "" {
		t.Errorf("the original changed: %q, runtime %q", c.KubernetesVersion, c.Hosts[0].Runtime)
	}
}
