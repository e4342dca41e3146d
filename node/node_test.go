package node

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

func testCluster() *v1alpha1.Cluster {
	c := &v1alpha1.Cluster{
		Name: "lab",
		Hosts: []v1alpha1.Host{
			{Name: "lab-m1", Address: netip.MustParseAddr("10.0.0.11"), Role: v1alpha1.RoleMaster},
			{Name: "lab-w1", Address: netip.MustParseAddr("10.0.0.21"), Role: v1alpha1.RoleWorker,
				Labels: map[string]string{"example.com/rack": "r1", "example.com/disk": "ssd"},
				Taints: []v1alpha1.Taint{{Key: "example.com/gpu", Value: "true", Effect: v1alpha1.NoSchedule}}},
		},
	}
	c.Default()
	return c
}

func testPlan(t *testing.T, node string, f Facts) Plan {
	t.Helper()
	c := testCluster()
	h, ok := c.Host(node)
	if !ok {
		t.Fatalf("no host %s", node)
	}
	p, err := Plan{Cluster: c, Host: h, Facts: f}.Complete()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// factSets are the hosts anvil meets: this lab's (cgroup v1 hybrid, no
// CAP_SYS_RESOURCE) and a current distribution's (cgroup v2 under systemd,
// systemd-resolved's stub in /etc/resolv.conf).
func factSets() map[string]Facts {
	return map[string]Facts{
		"v1-lab":     {CgroupV2: false, SystemdInit: true, LowerOOMScore: false, ResolvConf: "/etc/resolv.conf"},
		"v2-systemd": {CgroupV2: true, SystemdInit: true, LowerOOMScore: true, ResolvConf: "/run/systemd/resolve/resolv.conf"},
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./node -update to create it)", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s differs from what is rendered now (go test ./node -update, then review the diff):\n%s", path, got)
	}
}

// TestGolden renders the node stack of a worker on both kinds of host: the
// units, the process specs, containerd's config and the kubelet's.
func TestGolden(t *testing.T) {
	for name, f := range factSets() {
		p := testPlan(t, "lab-w1", f)
		cs, err := Components(p)
		if err != nil {
			t.Fatal(err)
		}
		units, err := component.Units(cs)
		if err != nil {
			t.Fatal(err)
		}
		files, err := ConfigFiles(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range append(units, files...) {
			if o.Mode.IsDir() {
				continue
			}
			checkGolden(t, filepath.Join("testdata", name, filepath.Base(o.Path)), o.Data)
		}
	}
}

func TestKubeletConfigFollowsTheHost(t *testing.T) {
	for name, f := range factSets() {
		files, err := ConfigFiles(testPlan(t, "lab-w1", f))
		if err != nil {
			t.Fatal(err)
		}
		var kubelet, containerd string
		for _, o := range files {
			switch o.Path {
			case KubeletConfigFile:
				kubelet = string(o.Data)
			case ContainerdConfigFile:
				containerd = string(o.Data)
			}
		}
		v1 := !f.CgroupV2
		if strings.Contains(kubelet, "failCgroupV1: false") != v1 {
			t.Errorf("%s: failCgroupV1 set %v, want only on cgroup v1:\n%s", name, !v1, kubelet)
		}
		driver := "cgroupfs"
		if f.CgroupV2 {
			driver = "systemd"
		}
		if !strings.Contains(kubelet, "cgroupDriver: "+driver) || !strings.Contains(containerd, "SystemdCgroup = "+map[bool]string{true: "true", false: "false"}[driver == "systemd"]) {
			t.Errorf("%s: kubelet and containerd disagree on the cgroup driver %s", name, driver)
		}
		if strings.Contains(containerd, "restrict_oom_score_adj = true") == f.LowerOOMScore {
			t.Errorf("%s: restrict_oom_score_adj must be set exactly where pods may not lower their score", name)
		}
		for _, want := range []string{"anonymous:\n    enabled: false", "readOnlyPort: 0", "mode: Webhook", "rotateCertificates: true", "serverTLSBootstrap: true",
			"- 10.96.0.10", "clusterDomain: cluster.local", "resolvConf: " + f.ResolvConf, "key: example.com/gpu"} {
			if !strings.Contains(kubelet, want) {
				t.Errorf("%s: kubelet config lacks %q", name, want)
			}
		}
		if !strings.Contains(containerd, "sandbox = \"registry.k8s.io/pause:3.10.1\"") {
			t.Errorf("%s: the sandbox image is not pinned to the shipped pause image:\n%s", name, containerd)
		}
	}
}

func TestClusterDNS(t *testing.T) {
	for cidr, want := range map[string]string{"10.96.0.0/12": "10.96.0.10", "172.20.0.0/24": "172.20.0.10", "fd00:10::/108": "fd00:10::a", "10.0.0.0/29": ""} {
		got, err := ClusterDNS(netip.MustParsePrefix(cidr))
		if want == "" {
			if err == nil || !strings.Contains(err.Error(), "too small") {
				t.Errorf("%s: %v, %v: want an error saying it is too small", cidr, got, err)
			}
			continue
		}
		if err != nil || got.String() != want {
			t.Errorf("%s: %v %v, want %s", cidr, got, err, want)
		}
	}
}

func TestReadFacts(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(root.Path(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(root.Path(p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("/proc/1/comm", "systemd\n")
	write("/proc/self/status", "Name:\tx\nCapBnd:\t000001fffeffffff\n")
	write("/etc/resolv.conf", "nameserver 127.0.0.53\noptions edns0\n")
	write("/run/systemd/resolve/resolv.conf", "nameserver 192.0.2.53\n")
	f := ReadFacts(root)
	if f.CgroupV2 || !f.SystemdInit || f.LowerOOMScore || f.ResolvConf != "/run/systemd/resolve/resolv.conf" {
		t.Errorf("facts %+v", f)
	}
	write("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
	write("/proc/self/status", "CapBnd:\t000001ffffffffff\n")
	write("/etc/resolv.conf", "nameserver 192.0.2.1\n")
	f = ReadFacts(root)
	if !f.CgroupV2 || !f.LowerOOMScore || f.ResolvConf != "/etc/resolv.conf" || f.CgroupDriver() != "systemd" {
		t.Errorf("facts %+v", f)
	}
}

// TestKubeletCredentials: laid out as the kubelet's own certificate store
// keeps them (a symlink to a timestamped pair), kept when the kubelet holds
// them already, replaced for another server.
func TestKubeletCredentials(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	c := KubeletCredentials{Server: "https://10.0.0.5:6443", CAPEM: []byte("CA\n"), CertPEM: []byte("CERT\n"), KeyPEM: []byte("KEY\n")}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	changed, err := WriteKubeletCredentials(root, "", c, t0)
	if err != nil || !changed {
		t.Fatalf("first write: %v %v", changed, err)
	}
	target, err := os.Readlink(root.Path(KubeletClientCert))
	if err != nil || target != "/var/lib/kubelet/pki/kubelet-client-2026-01-02-03-04-05.pem" {
		t.Fatalf("current pair is %q, %v", target, err)
	}
	pair := root.Path(target)
	if b, err := os.ReadFile(pair); err != nil || string(b) != "CERT\nKEY\n" {
		t.Fatalf("pair %q %v", b, err)
	}
	if fi, _ := os.Stat(pair); fi.Mode().Perm() != 0o600 {
		t.Errorf("pair mode %v", fi.Mode().Perm())
	}
	// CIS 4.1.7: the client CA file 0600, as on masters.
	if fi, err := os.Stat(root.Path(ClusterCAFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want mode 0600", ClusterCAFile, fi, err)
	}
	kc, _ := os.ReadFile(root.Path(KubeletKubeconfig))
	if !strings.Contains(string(kc), "client-certificate: "+KubeletClientCert) || !strings.Contains(string(kc), "client-key: "+KubeletClientCert) {
		t.Errorf("kubeconfig:\n%s", kc)
	}
	if changed, err := WriteKubeletCredentials(root, "", c, t0.Add(time.Hour)); err != nil || changed {
		t.Errorf("second write with the same input: changed %v, %v", changed, err)
	}
	c.Server = "https://10.0.0.6:6443"
	if changed, err := WriteKubeletCredentials(root, "", c, t0.Add(2*time.Hour)); err != nil || !changed {
		t.Errorf("another server: changed %v, %v", changed, err)
	}
}

func TestUpstreams(t *testing.T) {
	for in, want := range map[string]string{
		"":                                       "",
		"nameserver 127.0.0.53\noptions edns0\n": "",
		"nameserver ::1\nnameserver 10.0.0.2\n":  "10.0.0.2",
		"# nameserver 1.1.1.1\nnameserver 9.9.9.9 \nnameserver fd00::53\n": "9.9.9.9 fd00::53",
	} {
		if got := strings.Join(Upstreams([]byte(in)), " "); got != want {
			t.Errorf("Upstreams(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNodeStackUnconfined: containerd, the kubelet and kube-proxy manage
// the machine itself (mounts, cgroups, namespaces, the firewall), so their
// units keep root's privileges; the declarations say why.
func TestNodeStackUnconfined(t *testing.T) {
	cs, err := Components(testPlan(t, "lab-w1", factSets()["v2-systemd"]))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		t.Run(c.Name, func(t *testing.T) {
			if !c.Sandbox.Unconfined {
				t.Fatal("confined")
			}
			u, err := component.SystemdUnit(c, cs)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{"ProtectSystem=", "NoNewPrivileges=", "CapabilityBoundingSet=", "SystemCallFilter="} {
				if strings.Contains(string(u), "\n"+d) {
					t.Errorf("unit has %s", d)
				}
			}
		})
	}
}
