package installer

import (
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/master"
)

// fleet is hosts with made-up facts, for the judging code.
func fleet(t *testing.T, n int) (*v1alpha1.Cluster, []*host) {
	t.Helper()
	c := &v1alpha1.Cluster{Name: "t", ControlPlane: v1alpha1.ControlPlane{Port: 6443}}
	rep := progress.New(io.Discard, progress.Options{})
	var hosts []*host
	for i := range n {
		role := v1alpha1.RoleWorker
		if i == 0 {
			role = v1alpha1.RoleMaster
		}
		addr := netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)})
		name := []string{"m1", "w1", "w2", "w3"}[i]
		h := v1alpha1.Host{Name: name, Address: addr, Role: role}
		c.Hosts = append(c.Hosts, h)
		hosts = append(hosts, &host{Host: h, task: rep.Task(name), facts: &Facts{
			Arch: "x86_64", Systemd: "running", OSID: "debian", Hostname: name,
			MachineID: strings.Repeat(string(rune('a'+i)), 32), Addresses: []netip.Addr{addr},
		}})
	}
	return c, hosts
}

func problems(v *verdict) string { return strings.Join(v.problems, " | ") }

func TestValidateFacts(t *testing.T) {
	b := fakeBuild(t)
	b.arch = "x86_64"
	for _, tc := range []struct {
		name  string
		spoil func(hs []*host)
		host  int
		want  string // in the problems of hosts[host]; "" means none
	}{
		{"fine", func([]*host) {}, 0, ""},
		{"arch", func(hs []*host) { hs[1].facts.Arch = "aarch64" }, 1, "the host is aarch64, but the binaries are built for x86_64"},
		{"no systemd", func(hs []*host) { hs[1].facts.Systemd = "offline" }, 1, "systemd is not running"},
		{"address not on the host", func(hs []*host) { hs[1].facts.Addresses = []netip.Addr{netip.MustParseAddr("192.168.1.5")} }, 1, "10.0.0.11 is on none of its interfaces"},
		{"port taken", func(hs []*host) {
			hs[0].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("0.0.0.0:2379"), Process: "etcd"}}
		}, 0, "port 2379 is in use by etcd"},
		{"agent port on a worker", func(hs []*host) {
			hs[1].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("127.0.0.1:10251")}}
		}, 1, "port 10251 is in use"},
		{"our own port after an interrupted run", func(hs []*host) {
			hs[0].facts.Leftovers = []string{"/var/lib/anvil/etcd"}
			hs[0].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("0.0.0.0:6443"), Process: "kube-apiserver"}}
		}, 0, ""},
		{"ports of a member are its own", func(hs []*host) {
			hs[0].facts.Node = &master.NodeState{Node: "m1", Role: v1alpha1.RoleMaster}
			hs[0].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("0.0.0.0:6443"), Process: "kube-apiserver"}}
		}, 0, ""},
		// A worker runs pods: the node stack's ports, read off its
		// declarations, must be free.
		{"kubelet port taken on a worker", func(hs []*host) {
			hs[1].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("0.0.0.0:10250"), Process: "nginx"}}
		}, 1, "port 10250 is in use by nginx (listening on 0.0.0.0:10250); anvil's kubelet needs it"},
		{"kubelet healthz port taken", func(hs []*host) {
			hs[2].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("127.0.0.1:10248")}}
		}, 2, "port 10248 is in use (listening on 127.0.0.1:10248); anvil's kubelet needs it"},
		{"kube-proxy health port taken on a master", func(hs []*host) {
			hs[0].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("[::]:10256"), Process: "python3"}}
		}, 0, "port 10256 is in use by python3 (listening on [::]:10256); anvil's kube-proxy needs it"},
		{"no pods, no node ports", func(hs []*host) {
			hs[1].Runtime = v1alpha1.RuntimeNone
			hs[1].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("0.0.0.0:10250"), Process: "nginx"}}
		}, 1, ""},
		{"our own kubelet after an interrupted run", func(hs []*host) {
			hs[1].facts.Leftovers = []string{"/var/lib/anvil/agent"}
			hs[1].facts.Listening = []Listener{{Addr: netip.MustParseAddrPort("0.0.0.0:10250"), Process: "kubelet"}}
		}, 1, ""},
		{"kernel lacking br_netfilter", func(hs []*host) {
			hs[1].facts.Kernel = "6.1.0-9-amd64"
			hs[1].facts.KernelSupport = map[string]KernelSupport{"overlay": KernelLoaded, "br_netfilter": KernelAbsent, "nf_tables": KernelModule}
		}, 1, "its kernel 6.1.0-9-amd64 lacks br_netfilter (CONFIG_BRIDGE_NETFILTER)"},
		{"br_netfilter not loaded", func(hs []*host) {
			hs[2].facts.KernelSupport = map[string]KernelSupport{"overlay": KernelModule, "br_netfilter": KernelModule, "nf_tables": KernelLoaded}
		}, 2, "its kernel has br_netfilter as a module that is not loaded"},
		{"kernel lacking overlay", func(hs []*host) {
			hs[0].facts.KernelSupport = map[string]KernelSupport{"overlay": KernelAbsent, "br_netfilter": KernelLoaded, "nf_tables": KernelLoaded}
		}, 0, "lacks overlay (CONFIG_OVERLAY_FS)"},
		{"a kernel without pods is not judged", func(hs []*host) {
			hs[1].Runtime = v1alpha1.RuntimeNone
			hs[1].facts.KernelSupport = map[string]KernelSupport{"overlay": KernelAbsent, "br_netfilter": KernelAbsent, "nf_tables": KernelAbsent}
		}, 1, ""},
		{"duplicate hostname", func(hs []*host) { hs[2].facts.Hostname = "W1" }, 1, `its hostname "w1" is also w2's`},
		{"duplicate machine id", func(hs []*host) { hs[2].facts.MachineID = hs[0].facts.MachineID }, 0, "machine ID"},
		{"duplicate address", func(hs []*host) {
			hs[2].facts.Addresses = append(hs[2].facts.Addresses, netip.MustParseAddr("10.0.0.10"))
		}, 2, `its address "10.0.0.10" is also m1's`},
		{"clock", func(hs []*host) { hs[1].facts.ClockSkew = -2 * time.Minute }, 1, "its clock is 2m0s behind the workstation's"},
		{"another cluster", func(hs []*host) {
			hs[1].facts.Node = &master.NodeState{Node: "w1", Role: v1alpha1.RoleWorker}
			hs[1].facts.ClusterName = "prod"
		}, 1, `already belongs to cluster "prod"`},
		{"another role", func(hs []*host) { hs[1].facts.Node = &master.NodeState{Node: "w1", Role: v1alpha1.RoleMaster} }, 1, "already a master, not a worker"},
		{"another name", func(hs []*host) { hs[1].facts.Node = &master.NodeState{Node: "old", Role: v1alpha1.RoleWorker} }, 1, `already node "old"`},
		{"a foreign kubectl on a master", func(hs []*host) { hs[0].facts.Links = map[string]string{"/usr/local/bin/kubectl": ""} }, 0, "/usr/local/bin/kubectl is a file anvil did not install"},
		// A worker gets no kubectl: the operator's own is not in the way.
		{"a worker's own kubectl", func(hs []*host) { hs[1].facts.Links = map[string]string{"/usr/local/bin/kubectl": ""} }, 1, ""},
		{"a foreign CNI plugin on a worker", func(hs []*host) {
			hs[1].facts.Links = map[string]string{"/opt/cni/bin/bridge": "/usr/lib/cni/bridge"}
		}, 1, "/opt/cni/bin/bridge links to /usr/lib/cni/bridge, not to anvil's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, hs := fleet(t, 3)
			tc.spoil(hs)
			got := problems(validateFacts(c, b, hs, false)[hs[tc.host]])
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("problems %q, want %q", got, tc.want)
			}
		})
	}
}

// A kernel nothing told about is a warning per feature, not a problem.
func TestUnknownKernelIsAWarning(t *testing.T) {
	c, hs := fleet(t, 2)
	hs[1].facts.KernelSupport = map[string]KernelSupport{"overlay": KernelLoaded, "br_netfilter": KernelUnknown, "nf_tables": KernelLoaded}
	v := validateFacts(c, &bundle{arch: "x86_64"}, hs, false)[hs[1]]
	if len(v.problems) != 0 || len(v.warnings) != 1 || !strings.Contains(v.warnings[0], "whether its kernel has br_netfilter") {
		t.Errorf("%+v", v)
	}
}

func TestSmallSkewIsAWarning(t *testing.T) {
	c, hs := fleet(t, 2)
	hs[1].facts.ClockSkew, hs[1].facts.ClockUncertainty = 5*time.Second, 10*time.Millisecond
	v := validateFacts(c, &bundle{arch: "x86_64"}, hs, false)[hs[1]]
	if len(v.problems) != 0 || len(v.warnings) != 1 || !strings.Contains(v.warnings[0], "5s ahead of") {
		t.Errorf("%+v", v)
	}
}

func TestPickPrimary(t *testing.T) {
	c, hs := fleet(t, 3)
	hs[1].Role, hs[1].Host.Role = v1alpha1.RoleMaster, v1alpha1.RoleMaster
	if p := pickPrimary(c, hs); p != hs[0] {
		t.Errorf("fresh cluster: %v, want the first master", name(p))
	}
	hs[1].facts.Node = &master.NodeState{Node: "w1", Role: v1alpha1.RoleMaster}
	if p := pickPrimary(c, hs); p != hs[1] {
		t.Errorf("second master initialised: %v", name(p))
	}
	hs[1].facts.Node = nil
	hs[0].err = &HostError{Host: "m1", Phase: "connect"}
	if p := pickPrimary(c, hs); p != nil {
		t.Errorf("with the first master unknown, nothing may be initialised; got %v", name(p))
	}
}

func name(h *host) string {
	if h == nil {
		return "none"
	}
	return h.Name
}

// A master at another Kubernetes version is upgraded if the skew policy
// allows the move, and refused, naming both versions, if not.
func TestValidateUpgrade(t *testing.T) {
	for _, tt := range []struct {
		runs, file string
		rollback   bool
		want       string
	}{
		{"v1.36.3", "v1.37.2", false, ""},
		{"v1.37.2", "v1.37.2", false, ""},
		{"v1.37.2", "v1.36.3", false, "it runs Kubernetes v1.37.2, the file asks for v1.36.3: v1.37.2 to v1.36.3 is a downgrade across minors"},
		{"v1.37.2", "v1.36.3", true, ""},
		{"v1.34.2", "v1.37.2", false, `kubernetes version "v1.34.2" is not supported`},
	} {
		c, hs := fleet(t, 1)
		c.KubernetesVersion = tt.file
		hs[0].facts.Node = &master.NodeState{Node: "m1", Role: v1alpha1.RoleMaster, KubernetesVersion: tt.runs}
		got := problems(validateFacts(c, &bundle{arch: "x86_64"}, hs, tt.rollback)[hs[0]])
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("runs %s, file %s, rollback %v: problems %q, want %q", tt.runs, tt.file, tt.rollback, got, tt.want)
		}
	}
}
