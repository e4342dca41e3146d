package lab

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"t", true},
		{"anvil", true},
		{"ha-3-masters", true},
		{strings.Repeat("a", MaxNameLen), true},
		{"", false},
		{strings.Repeat("a", MaxNameLen+1), false},
		{"Upper", false},
		{"-lead", false},
		{"trail-", false},
		{"under_score", false},
		{"dot.ted", false},
		{"../etc", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateName(tc.name); (err == nil) != tc.ok {
				t.Errorf("ValidateName(%q) = %v, want ok=%t", tc.name, err, tc.ok)
			}
		})
	}
}

func TestSplitMachineName(t *testing.T) {
	for _, tc := range []struct {
		machine string
		lab     string
		role    v1alpha1.Role
		ordinal int
		ok      bool
	}{
		{"t-m1", "t", v1alpha1.RoleMaster, 1, true},
		{"t-w12", "t", v1alpha1.RoleWorker, 12, true},
		{"my-lab-m3", "my-lab", v1alpha1.RoleMaster, 3, true},
		{"lab-m1-w2", "lab-m1", v1alpha1.RoleWorker, 2, true},
		{"t-m0", "", "", 0, false},
		{"t-x1", "", "", 0, false},
		{"m1", "", "", 0, false},
		{"T-m1", "", "", 0, false},
	} {
		t.Run(tc.machine, func(t *testing.T) {
			lab, role, n, err := SplitMachineName(tc.machine)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%t", err, tc.ok)
			}
			if tc.ok && (lab != tc.lab || role != tc.role || n != tc.ordinal) {
				t.Errorf("got %s %s %d", lab, role, n)
			}
			if tc.ok && MachineName(lab, role, n) != tc.machine {
				t.Errorf("MachineName does not round-trip: %s", MachineName(lab, role, n))
			}
		})
	}
}

func TestInterfaceNames(t *testing.T) {
	// nspawn's vb-NAME truncation makes these two collide; ours must not.
	a := strings.Repeat("x", 30) + "-alpha"
	b := strings.Repeat("x", 30) + "-bravo"
	names := map[string]string{}
	for _, n := range []string{
		bridgeName(a), bridgeName(b),
		vethName(a, MachineName(a, v1alpha1.RoleMaster, 1)), vethName(b, MachineName(b, v1alpha1.RoleMaster, 1)),
		vethName(a, MachineName(a, v1alpha1.RoleMaster, 2)), vethName(a, MachineName(a, v1alpha1.RoleWorker, 1)),
	} {
		if len(n) > 15 {
			t.Errorf("%s is longer than IFNAMSIZ-1", n)
		}
		if prev, dup := names[n]; dup {
			t.Errorf("%s used twice (%s)", n, prev)
		}
		names[n] = n
	}
	if m1, m2 := guestMAC("t", "t-m1"), guestMAC("t", "t-m2"); m1.String() == m2.String() || m1[0]&0x02 == 0 || m1[0]&0x01 != 0 {
		t.Errorf("guest MACs %s %s: want distinct, unicast, locally administered", m1, m2)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestPickSubnet(t *testing.T) {
	pool := pfx(DefaultPool)
	for _, tc := range []struct {
		name  string
		taken []used
		want  string // "" = error
	}{
		{"empty host", nil, "10.213.0.0/24"},
		{"default route decides nothing", []used{{pfx("0.0.0.0/0"), "default"}, {pfx("192.0.2.0/24"), "eth0"}}, "10.213.0.0/24"},
		{"skips a lab", []used{{pfx("10.213.0.0/24"), "lab a"}}, "10.213.1.0/24"},
		{"skips an address inside", []used{{pfx("10.213.0.0/24"), "lab a"}, {pfx("10.213.1.77/32"), "address"}}, "10.213.2.0/24"},
		{"pool inside a bigger route", []used{{pfx("10.0.0.0/8"), "vpn"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickSubnet(pool, tc.taken)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("got %s, want an error", got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestCheckSubnet(t *testing.T) {
	taken := []used{{pfx("192.0.2.0/24"), "route 192.0.2.0/24 dev eth0"}, {pfx("10.213.0.0/24"), "lab t"}}
	for _, tc := range []struct {
		subnet string
		n      int
		errHas string // "" = ok
	}{
		{"10.213.9.0/24", 4, ""},
		{"172.20.0.0/28", 4, ""},
		{"10.213.9.7/24", 4, "host bits"},
		{"10.213.9.0/28", 6, "at least 17"},
		{"8.8.8.0/24", 1, "not a private range"},
		{"10.213.0.0/25", 1, "overlaps lab t"},
		{"10.0.0.0/8", 1, "overlaps lab t"},
		{"fd00::/64", 1, "IPv4"},
	} {
		t.Run(tc.subnet, func(t *testing.T) {
			err := checkSubnet(pfx(tc.subnet), tc.n, taken)
			if tc.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want it to say %q", err, tc.errHas)
			}
		})
	}
}

func TestPlanMachines(t *testing.T) {
	got := planMachines("t", pfx("10.213.4.0/24"), 3, 2)
	want := []string{"t-m1 master 10.213.4.10", "t-m2 master 10.213.4.11", "t-m3 master 10.213.4.12", "t-w1 worker 10.213.4.13", "t-w2 worker 10.213.4.14"}
	if len(got) != len(want) {
		t.Fatalf("got %d machines", len(got))
	}
	for i, m := range got {
		if s := m.Name + " " + string(m.Role) + " " + m.Address.String(); s != want[i] {
			t.Errorf("machine %d: %s, want %s", i, s, want[i])
		}
	}
	if gw, vip := offset(pfx("10.213.4.0/24"), gatewayOffset), offset(pfx("10.213.4.0/24"), vipOffset); gw.String() != "10.213.4.1" || vip.String() != "10.213.4.5" {
		t.Errorf("gateway %s vip %s", gw, vip)
	}
}

func TestAptMirror(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"deb822", map[string]string{"sources.list.d/debian.sources": `Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
`}, "http://mirror.example/debian"},
		{"deb822 disabled and deb-src skipped", map[string]string{"sources.list.d/a.sources": `Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://on.example/debian
Suites: bookworm
`}, "http://on.example/debian"},
		{"one-line with options", map[string]string{"sources.list": `# deb http://old.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib
`}, "http://mirror.example/debian"},
		{"none", map[string]string{"sources.list": "deb http://mirror.example/debian trixie main\n"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for p, data := range tc.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := aptMirror(dir, "bookworm")
			if tc.want == "" {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestBaseStampFollowsRecipe(t *testing.T) {
	if s := BaseStamp(); len(s) != 12 || s != BaseStamp() {
		t.Errorf("stamp %q is not a stable 12-hex string", s)
	}
}

// TestClusterFile renders a lab's cluster file against a golden file and
// checks that anvil's own strict loader accepts it without a warning: one
// master is its own endpoint; two or more share the lab's free VIP, which
// is the endpoint (issue 19).
func TestClusterFile(t *testing.T) {
	for _, tc := range []struct {
		golden   string
		masters  int
		vip      string // "" = none
		endpoint string
		warning  string // the one warning expected, if any
	}{
		{"cluster-1-master.yaml.golden", 1, "", "10.213.0.10", ""},
		{"cluster-2-masters.yaml.golden", 2, "10.213.0.5", "10.213.0.5", "use an odd number of masters"},
		{"cluster-3-masters.yaml.golden", 3, "10.213.0.5", "10.213.0.5", ""},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			s := &state{Name: "t", Subnet: pfx("10.213.0.0/24")}
			for _, m := range planMachines("t", s.Subnet, tc.masters, 1) {
				s.Machines = append(s.Machines, machineState{Name: m.Name, Role: m.Role, Address: m.Address})
			}
			p := paths{dir: "/var/lib/anvil/lab/t"}
			got, err := clusterFile(s, p, "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p")
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("cluster file differs from %s (run with -update if intended):\n%s", golden, got)
			}
			path := filepath.Join(t.TempDir(), "cluster.yaml")
			if err := os.WriteFile(path, got, 0o600); err != nil {
				t.Fatal(err)
			}
			c, warnings, err := v1alpha1.Load(path)
			if err != nil {
				t.Fatalf("anvil does not load its own lab's cluster file: %v", err)
			}
			if tc.warning != "" && len(warnings) == 1 && strings.Contains(warnings[0].Error(), tc.warning) {
				warnings = nil
			}
			if len(warnings) > 0 {
				t.Errorf("warnings: %v", warnings)
			}
			if len(c.Masters()) != tc.masters || len(c.Workers()) != 1 || c.ControlPlane.Layout != v1alpha1.LayoutSystemd {
				t.Errorf("loaded %+v", c)
			}
			vip := ""
			if c.ControlPlane.VIP.IsValid() {
				vip = c.ControlPlane.VIP.String()
			}
			if vip != tc.vip || c.ControlPlane.Endpoint != tc.endpoint {
				t.Errorf("controlPlane.vip %q endpoint %q, want %q and %q", vip, c.ControlPlane.Endpoint, tc.vip, tc.endpoint)
			}
			if tc.vip != "" && c.ControlPlane.VIP != (&Manager{}).status(s, p).VIP {
				t.Errorf("the cluster file's VIP %s is not the one status reports free", c.ControlPlane.VIP)
			}
			if h, _ := c.Host("t-w1"); h.SSH.KnownHosts != p.knownHosts() || h.SSH.IdentityFile != p.key() {
				t.Errorf("t-w1 ssh = %+v", h.SSH)
			}
		})
	}
}

func TestCheckPrerequisitesNamesPackages(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := CheckPrerequisites(t.Context(), false, nil)
	var pe *PrerequisiteError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want *PrerequisiteError", err)
	}
	if os.Geteuid() != 0 {
		if !strings.Contains(pe.Missing, "root") {
			t.Errorf("as a user: %v", err)
		}
		return
	}
	if !strings.Contains(pe.Fix, "apt-get install -y --no-install-recommends systemd-container debootstrap") {
		t.Errorf("fix %q does not say what to install", pe.Fix)
	}
}

// TestPrepareTree checks that a machine's layer carries its identity and
// keeps the base's directory modes and owners: overlayfs shows the upper
// directory's, and sshd refuses keys under a /root or home it dislikes.
func TestPrepareTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners")
	}
	base, upper := t.TempDir(), t.TempDir()
	for _, d := range []struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}{
		{"etc/ssh", 0o755, 0, 0},
		{"root", 0o700, 0, 0},
		{"home/" + SudoUser, 0o750, 1000, 1001},
	} {
		p := filepath.Join(base, d.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, d.uid, d.gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/bash\n"+SudoUser+":x:1000:1001::/home/"+SudoUser+":/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := identity{
		Hostname: "t-m1", MachineID: strings.Repeat("ab", 16),
		HostKey: []byte("PRIVATE"), HostPub: []byte("ssh-ed25519 AAAA\n"),
		Authorized: []byte("ssh-ed25519 BBBB lab\n"), Hosts: []string{"10.213.0.10\tt-m1"},
	}
	if err := prepareTree(base, upper, id); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path     string
		mode     os.FileMode
		uid, gid uint32
		content  string
	}{
		{"root", 0o700, 0, 0, ""},
		{"root/.ssh", 0o700, 0, 0, ""},
		{"root/.ssh/authorized_keys", 0o600, 0, 0, "ssh-ed25519 BBBB lab\n"},
		{"home/" + SudoUser, 0o750, 1000, 1001, ""},
		{"home/" + SudoUser + "/.ssh", 0o700, 1000, 1001, ""},
		{"home/" + SudoUser + "/.ssh/authorized_keys", 0o600, 1000, 1001, "ssh-ed25519 BBBB lab\n"},
		{"etc/ssh/ssh_host_ed25519_key", 0o600, 0, 0, "PRIVATE"},
		{"etc/machine-id", 0o444, 0, 0, strings.Repeat("ab", 16) + "\n"},
		{"etc/hostname", 0o644, 0, 0, "t-m1\n"},
	} {
		p := filepath.Join(upper, tc.path)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != tc.mode || st.Uid != tc.uid || st.Gid != tc.gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", tc.path, fi.Mode().Perm(), st.Uid, st.Gid, tc.mode, tc.uid, tc.gid)
		}
		if tc.content != "" {
			if data, _ := os.ReadFile(p); string(data) != tc.content {
				t.Errorf("%s: %q", tc.path, data)
			}
		}
	}
	if hosts, _ := os.ReadFile(filepath.Join(upper, "etc/hosts")); !strings.Contains(string(hosts), "10.213.0.10\tt-m1\n") {
		t.Errorf("/etc/hosts:\n%s", hosts)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/var/lib/anvil/lab/t`:     "/var/lib/anvil/lab/t",
		`/mnt/with\040space`:       "/mnt/with space",
		`/tab\011and\134backslash`: "/tab\tand\\backslash",
		`/not\escape\9`:            `/not\escape\9`,
		`/trailing\04`:             `/trailing\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProcessIdentity(t *testing.T) {
	pid := os.Getpid()
	start, state, err := procStart(pid)
	if err != nil || state == 'Z' {
		t.Fatalf("procStart(self) = %d %c %v", start, state, err)
	}
	if !alive(pid, start) || alive(pid, start+1) || alive(0, 0) {
		t.Error("alive does not tell this process from a recycled PID")
	}
}

func TestRaiseLimitsOnlyRaises(t *testing.T) {
	dir := t.TempDir()
	low, high := filepath.Join(dir, "low"), filepath.Join(dir, "high")
	if err := os.WriteFile(low, []byte("128\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(high, []byte("99999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var said []string
	if err := raiseLimits([]sysctlFloor{{low, 8192}, {high, 8192}}, func(s string) { said = append(said, s) }); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{low: "8192\n", high: "99999\n"} {
		if b, _ := os.ReadFile(p); string(b) != want {
			t.Errorf("%s = %q, want %q", p, b, want)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], "from 128 to 8192") {
		t.Errorf("said %q", said)
	}
	if err := raiseLimits([]sysctlFloor{{filepath.Join(dir, "missing"), 1}}, nil); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing setting: %v", err)
	}
}

// requireRoot skips a test that needs root, or fails it under CI=true.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root")
	}
	t.Skip("needs root")
}

func TestParseHierarchies(t *testing.T) {
	// This host's hybrid layout, plus what others have: co-mounted
	// controllers, a hierarchy mounted twice, and a bind of a subtree (not
	// a hierarchy's root).
	const mountinfo = `23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 1 0:32 / /mnt/memory\040again rw,relatime - cgroup cgroup rw,memory
51 1 0:31 /docker/abc /mnt/cpuset-sub rw,relatime - cgroup cgroup rw,cpuset
`
	got := parseHierarchies(mountinfo)
	want := []string{
		"/sys/fs/cgroup/cpu,cpuacct [cpu cpuacct]",
		"/sys/fs/cgroup/cpuset [cpuset]",
		"/sys/fs/cgroup/memory [memory]",
		"/sys/fs/cgroup/net_cls,net_prio [net_cls net_prio]",
		"/sys/fs/cgroup/systemd [name=systemd]",
		"/sys/fs/cgroup/unified v2",
	}
	var gotS []string
	for _, h := range got {
		s := h.Mount + " " + fmt.Sprint(h.Controllers)
		if h.V2 {
			s = h.Mount + " v2"
		}
		gotS = append(gotS, s)
	}
	if strings.Join(gotS, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(gotS, "\n"), strings.Join(want, "\n"))
	}
	if !got[1].has("cpuset") || got[0].has("cpuset") {
		t.Errorf("cpuset detection: %+v", got[:2])
	}
}

// TestEnsureCgroups makes a machine's cgroups in this host's real
// hierarchies: one in each, every v1 cpuset level with CPUs and memory
// nodes (else no process may join), and all gone after removeCgroups,
// including one made inside as a kubelet would.
func TestEnsureCgroups(t *testing.T) {
	requireRoot(t)
	lab := fmt.Sprintf("lt-cg-%d", os.Getpid())
	t.Cleanup(func() { _ = removeCgroups(context.Background(), lab, "") })
	hs := cgroupHierarchies()
	if len(hs) == 0 {
		t.Fatal("no cgroup hierarchy mounted")
	}
	dirs, err := ensureCgroups(lab, lab+"-m1")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != len(hs) {
		t.Fatalf("%d cgroups for %d hierarchies", len(dirs), len(hs))
	}
	for i, h := range hs {
		if want := filepath.Join(h.Mount, cgroupDir, lab, lab+"-m1"); dirs[i] != want {
			t.Errorf("cgroup %s, want %s", dirs[i], want)
		}
		if !h.has("cpuset") {
			continue
		}
		for _, d := range []string{filepath.Join(h.Mount, cgroupDir), filepath.Join(h.Mount, cgroupDir, lab), dirs[i]} {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(d, f)); err != nil || strings.TrimSpace(string(b)) == "" {
					t.Errorf("%s/%s = %q, %v: want the parent's", d, f, b, err)
				}
			}
		}
	}
	if _, err := ensureCgroups(lab, lab+"-m1"); err != nil {
		t.Errorf("a second time: %v", err)
	}
	// CPU weight: a machine weighs as a VM of the host's cores would, its
	// lab as its machines together, anvil-lab at least as much.
	shares := func(d string) int {
		b, _ := os.ReadFile(filepath.Join(d, "cpu.shares"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	for _, h := range hs {
		if !h.has("cpu") {
			continue
		}
		labDir := filepath.Join(h.Mount, cgroupDir, lab)
		per := machineCPUShares()
		if got := shares(filepath.Join(labDir, lab+"-m1")); got != per {
			t.Errorf("machine cpu.shares %d, want %d", got, per)
		}
		if got := shares(labDir); got != per {
			t.Errorf("lab cpu.shares %d with one machine, want %d", got, per)
		}
		if _, err := ensureCgroups(lab, lab+"-m2"); err != nil {
			t.Fatal(err)
		}
		if got := shares(labDir); got != 2*per {
			t.Errorf("lab cpu.shares %d with two machines, want %d", got, 2*per)
		}
		if got := shares(filepath.Join(h.Mount, cgroupDir)); got < 2*per {
			t.Errorf("anvil-lab cpu.shares %d, want at least %d", got, 2*per)
		}
		if err := removeCgroups(t.Context(), lab, lab+"-m2"); err != nil {
			t.Fatal(err)
		}
		if got := shares(labDir); got != per {
			t.Errorf("lab cpu.shares %d after a machine went, want %d", got, per)
		}
	}
	inner := filepath.Join(dirs[0], "kubepods", "burstable")
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := removeCgroups(t.Context(), lab, lab+"-m1"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h.Mount, cgroupDir, lab)); err == nil {
			t.Errorf("%s left behind", filepath.Join(h.Mount, cgroupDir, lab))
		}
	}
}

// TestHostSysctls sets and restores kernel settings in a directory
// standing in for /proc/sys: previous values recorded before the first
// change, kept through a second lab's hold, restored only where the value
// is still the lab's.
func TestHostSysctls(t *testing.T) {
	dir := t.TempDir()
	procSys := filepath.Join(dir, "proc-sys")
	initial := map[string]string{"vm/overcommit_memory": "0", "kernel/panic": "1", "kernel/panic_on_oops": "1"}
	for p, v := range initial {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(procSys, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(procSys, p), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var said []string
	h := hostSysctls{procSys: procSys, record: filepath.Join(dir, "state", ".host-sysctls.json"), progress: func(s string) { said = append(said, s) }}
	value := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(procSys, p))
		return strings.TrimSpace(string(b))
	}

	if err := h.hold(nodeSysctls()); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"} {
		if got := value(p); got != want {
			t.Errorf("%s = %s, want %s", p, got, want)
		}
	}
	r, err := h.load()
	if err != nil {
		t.Fatal(err)
	}
	// panic_on_oops was 1 already: not the lab's change, not the lab's to restore.
	if len(r.Changed) != 2 || r.Changed[0].Name != "vm.overcommit_memory" || r.Changed[0].Previous != "0" || r.Changed[1].Name != "kernel.panic" || r.Changed[1].Previous != "1" {
		t.Errorf("record %+v", r.Changed)
	}
	if len(said) != 1 || !strings.Contains(said[0], "vm.overcommit_memory 0→1") || !strings.Contains(said[0], "kernel.panic 1→10") || !strings.Contains(said[0], "restored when the last lab goes down") {
		t.Errorf("said %q", said)
	}
	fi, err := os.Stat(h.record)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record %s: %v %v", h.record, fi, err)
	}

	// A second lab, after someone put overcommit back: set again, the
	// host's own previous value kept.
	said = nil
	if err := os.WriteFile(filepath.Join(procSys, "vm/overcommit_memory"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.hold(nodeSysctls()); err != nil {
		t.Fatal(err)
	}
	if r2, _ := h.load(); len(r2.Changed) != 2 || r2.Changed[0].Previous != "0" {
		t.Errorf("second hold rewrote the record: %+v", r2.Changed)
	}
	if value("vm/overcommit_memory") != "1" || len(said) != 1 {
		t.Errorf("second hold: overcommit %s, said %q", value("vm/overcommit_memory"), said)
	}
	said = nil
	if err := h.hold(nodeSysctls()); err != nil || len(said) != 0 {
		t.Errorf("nothing to change: %v, said %q", err, said)
	}

	// Someone sets kernel.panic while the lab runs: theirs, left alone.
	if err := os.WriteFile(filepath.Join(procSys, "kernel/panic"), []byte("30\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	said = nil
	if err := h.release(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"vm/overcommit_memory": "0", "kernel/panic": "30", "kernel/panic_on_oops": "1"} {
		if got := value(p); got != want {
			t.Errorf("after release %s = %s, want %s", p, got, want)
		}
	}
	if len(said) != 2 || !strings.Contains(said[0], "vm.overcommit_memory=0") || !strings.Contains(said[1], "kernel.panic at 30") {
		t.Errorf("said %q", said)
	}
	if _, err := os.Stat(h.record); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("record still there: %v", err)
	}
	if err := h.release(); err != nil {
		t.Errorf("release with nothing recorded: %v", err)
	}

	// A setting that cannot be written leaves no record of a change:
	// /proc/version reads, and refuses writes even from root.
	if err := os.Remove(filepath.Join(procSys, "kernel/panic")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc/version", filepath.Join(procSys, "kernel/panic")); err != nil {
		t.Fatal(err)
	}
	if err := h.hold([]nodeSysctl{{"vm.overcommit_memory", "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.hold([]nodeSysctl{{"kernel.panic", "10"}}); err == nil || !strings.Contains(err.Error(), "set sysctl kernel.panic=10") {
		t.Errorf("unwritable kernel.panic: %v", err)
	}
	if r, _ := h.load(); len(r.Changed) != 1 || r.Changed[0].Name != "vm.overcommit_memory" {
		t.Errorf("record after a failed change: %+v", r.Changed)
	}
}

func TestNspawnArgs(t *testing.T) {
	p := paths{dir: "/var/lib/anvil/lab/t"}
	ms := &machineState{Name: "t-w1", MachineID: strings.Repeat("ab", 16)}
	args := strings.Join(nspawnArgs(p, ms), " ")
	for _, want := range []string{
		"--capability=CAP_NET_ADMIN,CAP_SYSLOG",
		"--bind=/dev/kmsg",
		"--system-call-filter=@keyring",
		"--bind=/var/lib/anvil/lab/t/machines/t-w1/containerd:/var/lib/containerd",
		"--register=no --keep-unit",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("nspawn arguments lack %s:\n%s", want, args)
		}
	}
	if got := nspawnPath(`/a:b\c`); got != `/a\:b\\c` {
		t.Errorf("nspawnPath = %s", got)
	}
}
