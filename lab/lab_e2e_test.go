package lab_test

// End-to-end tests of `anvil lab` on real systemd-nspawn machines, real
// systemd and real sshd. Select them with -run TestLab; -short skips them.
// They need root; under CI=true a missing prerequisite fails them.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/lab"
	"anvil.dev/anvil/lab/labtest"
)

// cli runs the anvil binary built for the test.
type cli struct {
	t   *testing.T
	bin string
}

func buildCLI(t *testing.T) cli {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "anvil")
	start := time.Now()
	out, err := exec.Command("go", "build", "-o", bin, "anvil.dev/anvil/cmd/anvil").CombinedOutput()
	if err != nil {
		t.Fatalf("build anvil: %v\n%s", err, out)
	}
	t.Logf("built anvil in %s", time.Since(start).Round(time.Second))
	return cli{t: t, bin: bin}
}

// run runs anvil with args and returns stdout, stderr and the exit code.
func (c cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		c.t.Fatalf("anvil %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// must runs anvil and fails the test unless it exits 0.
func (c cli) must(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("anvil %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (c cli) status(name string) *lab.Status {
	c.t.Helper()
	var st lab.Status
	if err := json.Unmarshal([]byte(c.must("lab", "status", "--name", name, "-o", "json")), &st); err != nil {
		c.t.Fatal(err)
	}
	return &st
}

// TestLabCLI is the "done when", through the command line: three
// masters that answer ssh with strict host keys, traffic only over the lab
// bridge, stop/start and cut/heal, a second lab beside the first, and a
// down that leaves nothing.
func TestLabCLI(t *testing.T) {
	labtest.Require(t)
	name := uniqueName("t-")
	if _, err := os.Stat(filepath.Join(lab.DefaultStateDir, name)); err == nil {
		t.Fatalf("a lab %q already exists: remove it with `anvil lab down --name %s` first", name, name)
	}
	a := buildCLI(t)
	t.Cleanup(func() { a.run("lab", "down", "--name", name) })

	start := time.Now()
	a.must("lab", "up", "--name", name, "--masters", "3", "--workers", "0")
	t.Logf("lab up --masters 3 took %s", time.Since(start).Round(100*time.Millisecond))
	st := a.status(name)
	if len(st.Machines) != 3 {
		t.Fatalf("status lists %d machines", len(st.Machines))
	}
	for _, m := range st.Machines {
		if m.State != lab.Running || m.Link != lab.LinkUp || m.PID == 0 || !strings.HasPrefix(m.HostKey, "SHA256:") {
			t.Errorf("%s: %+v", m.Name, m)
		}
	}
	m1, m2, m3 := st.Machines[0], st.Machines[1], st.Machines[2]

	t.Run("files", func(t *testing.T) {
		for path, mode := range map[string]os.FileMode{st.SSHKey: 0o600, st.KnownHosts: 0o600, st.ClusterFile: 0o600} {
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != mode {
				t.Errorf("%s: %v, mode %v; want %v", path, err, fi.Mode(), mode)
			}
		}
		c, warnings, err := v1alpha1.Load(st.ClusterFile)
		if err != nil || len(warnings) > 0 {
			t.Fatalf("cluster file: %v %v", err, warnings)
		}
		if len(c.Masters()) != 3 || c.Hosts[0].Address != m1.Address || c.Hosts[0].SSH.KnownHosts != st.KnownHosts || c.ControlPlane.Layout != v1alpha1.LayoutSystemd {
			t.Errorf("cluster file: %+v", c)
		}
		// Three masters: HA out of the box, on the address status reports.
		if c.ControlPlane.VIP != st.VIP || c.ControlPlane.Endpoint != st.VIP.String() {
			t.Errorf("cluster file: controlPlane.vip %s, endpoint %s; want both %s", c.ControlPlane.VIP, c.ControlPlane.Endpoint, st.VIP)
		}
	})

	t.Run("ssh is-system-running", func(t *testing.T) {
		out := a.must("lab", "ssh", name+"-m1", "--", "systemctl", "is-system-running")
		if out != "running\n" {
			t.Fatalf("got %q, want running", out)
		}
		if _, _, code := a.run("lab", "ssh", name+"-m1", "--", "exit 7"); code != 7 {
			t.Errorf("remote exit 7 gave exit code %d", code)
		}
		if out := a.must("lab", "ssh", name+"-m2", "--user", "debian", "--", "sudo", "-n", "id", "-u"); out != "0\n" {
			t.Errorf("sudo as debian: %q", out)
		}
	})

	t.Run("host keys are checked strictly", func(t *testing.T) {
		orig, err := os.ReadFile(st.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.WriteFile(st.KnownHosts, orig, 0o600); err != nil {
				t.Fatal(err)
			}
		}()
		// m1's line carrying m2's key: m1 now offers a key that is not the
		// recorded one.
		lines := strings.Split(strings.TrimSpace(string(orig)), "\n")
		tampered := strings.Fields(lines[0])[0] + " " + strings.Join(strings.Fields(lines[1])[1:], " ")
		if err := os.WriteFile(st.KnownHosts, []byte(tampered+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := a.run("lab", "ssh", name+"-m1", "--", "true")
		if code == 0 || !strings.Contains(errOut, "changed") || !strings.Contains(errOut, m1.HostKey) || !strings.Contains(errOut, m2.HostKey) {
			t.Errorf("changed key: exit %d, %q; want a refusal naming %s and %s", code, errOut, m1.HostKey, m2.HostKey)
		}
		_, err = dial(st, m1, 5*time.Second)
		var changed *sshx.HostKeyChangedError
		if !errors.As(err, &changed) || changed.Fingerprint != m1.HostKey {
			t.Errorf("sshx: %v", err)
		}
		if err := os.WriteFile(st.KnownHosts, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = dial(st, m1, 5*time.Second)
		var unknown *sshx.UnknownHostError
		if !errors.As(err, &unknown) || unknown.Fingerprint != m1.HostKey {
			t.Errorf("unknown host: %v", err)
		}
	})

	t.Run("traffic stays on the lab bridge", func(t *testing.T) {
		for _, other := range []lab.Machine{m2, m3} {
			route := a.must("lab", "ssh", m1.Name, "--", "ip", "-o", "route", "get", other.Address.String())
			if !strings.Contains(route, " dev eth0 ") || strings.Contains(route, " via ") {
				t.Errorf("route from %s to %s: %q, want directly on eth0", m1.Name, other.Name, route)
			}
			a.must("lab", "ssh", m1.Name, "--", "ping", "-c1", "-W2", other.Address.String())
		}
		if routes := a.must("lab", "ssh", m1.Name, "--", "ip", "-4", "route", "show"); strings.Contains(routes, "default") || strings.Count(strings.TrimSpace(routes), "\n") != 0 {
			t.Errorf("%s has routes beyond the lab subnet:\n%s", m1.Name, routes)
		}
		br, err := netlink.LinkByName(st.Bridge)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range st.Machines {
			routes, err := netlink.RouteGet(m.Address.AsSlice())
			if err != nil || len(routes) == 0 || routes[0].LinkIndex != br.Attrs().Index || routes[0].Gw != nil {
				t.Errorf("host route to %s: %+v, %v; want on-link via %s", m.Name, routes, err, st.Bridge)
			}
			veth, err := netlink.LinkByName(m.Interface)
			if err != nil || veth.Attrs().MasterIndex != br.Attrs().Index {
				t.Errorf("%s's veth %s is not on the bridge: %v", m.Name, m.Interface, err)
			}
		}
	})

	t.Run("cut and heal", func(t *testing.T) {
		a.must("lab", "cut", m2.Name)
		if _, _, code := a.run("lab", "ssh", m1.Name, "--", "ping", "-c1", "-W1", m2.Address.String()); code == 0 {
			t.Error("a cut machine answered ping")
		}
		if _, err := dial(st, m2, 2*time.Second); err == nil {
			t.Error("a cut machine answered ssh")
		}
		if got := a.status(name).Machines[1]; got.Link != lab.LinkCut || got.State != lab.Running {
			t.Errorf("status of a cut machine: %+v", got)
		}
		a.must("lab", "heal", m2.Name)
		a.must("lab", "ssh", m1.Name, "--", "ping", "-c1", "-W2", m2.Address.String())
		a.must("lab", "ssh", m2.Name, "--", "true")
	})

	t.Run("stop and start", func(t *testing.T) {
		id := a.must("lab", "ssh", m3.Name, "--", "cat /etc/machine-id; touch /root/survives-a-reboot")
		for _, force := range []bool{false, true} {
			args := []string{"lab", "stop", m3.Name}
			if force {
				args = append(args, "--force")
			}
			a.must(args...)
			got := a.status(name).Machines[2]
			if got.State != lab.Stopped || got.PID != 0 || got.Link != lab.LinkNone {
				t.Errorf("stopped (force=%t): %+v", force, got)
			}
			if alive(m3.PID) {
				t.Errorf("nspawn %d still runs after stop", m3.PID)
			}
			if _, err := dial(st, m3, 2*time.Second); err == nil {
				t.Error("a stopped machine answered ssh")
			}
			a.must("lab", "start", m3.Name)
			got = a.status(name).Machines[2]
			if got.State != lab.Running || got.HostKey != m3.HostKey || got.Address != m3.Address {
				t.Errorf("restarted: %+v, want the same host key and address", got)
			}
			m3 = got
			// The strict check against the unchanged known_hosts is the proof
			// that the host key survived.
			if out := a.must("lab", "ssh", m3.Name, "--", "cat /etc/machine-id; ls /root/survives-a-reboot"); out != id+"/root/survives-a-reboot\n" {
				t.Errorf("after restart: %q, want machine-id %q and the marker file", out, id)
			}
		}
		a.must("lab", "start", m3.Name) // starting a running machine does nothing
	})

	t.Run("two labs coexist", func(t *testing.T) {
		// A long name: nspawn's own vb-NAME veths would collide here.
		other := uniqueName("t-second-lab-long-name-")
		t.Cleanup(func() { a.run("lab", "down", "--name", other) })
		a.must("lab", "up", "--name", other, "--masters", "1", "--workers", "1")
		st2 := a.status(other)
		if st2.Subnet.Overlaps(st.Subnet) || st2.Bridge == st.Bridge {
			t.Errorf("labs share %s/%s", st2.Subnet, st2.Bridge)
		}
		for _, m := range append(st.Machines[:1:1], st2.Machines...) {
			if out := a.must("lab", "ssh", m.Name, "--", "hostname"); out != m.Name+"\n" {
				t.Errorf("hostname of %s: %q", m.Name, out)
			}
		}
		// No route between labs: the other lab is not on this one's wire.
		if _, _, code := a.run("lab", "ssh", st2.Machines[0].Name, "--", "ping", "-c1", "-W1", m1.Address.String()); code == 0 {
			t.Error("a machine reached another lab")
		}
		a.must("lab", "down", "--name", other)
		assertGone(t, st2)
		a.must("lab", "ssh", m1.Name, "--", "true") // the first lab is untouched
	})

	t.Run("down leaves nothing", func(t *testing.T) {
		final := a.status(name)
		start := time.Now()
		a.must("lab", "down", "--name", name)
		t.Logf("lab down took %s", time.Since(start).Round(time.Millisecond))
		assertGone(t, final)
		a.must("lab", "down", "--name", name) // and again: nothing to do is success
	})
}

// TestLabDownAfterCrash kills `anvil lab up` while machines boot, throws
// the state file away, and expects `lab down` to find and remove
// everything anyway.
func TestLabDownAfterCrash(t *testing.T) {
	labtest.Require(t)
	name := uniqueName("tcrash-")
	before := readHostSettings(t)
	a := buildCLI(t)
	t.Cleanup(func() { a.run("lab", "down", "--name", name) })

	up := exec.Command(a.bin, "lab", "up", "--name", name, "--masters", "2", "--workers", "0")
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until both machines run, then kill anvil in the middle of `up`.
	cg := machineCgroups(name)
	deadline := time.Now().Add(5 * time.Minute)
	for machinesBooting(name) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_ = up.Process.Signal(syscall.SIGKILL)
	_ = up.Wait()
	pids := pidsOf(cg)
	if len(pids) == 0 {
		t.Fatal("no machine processes found before the crash")
	}
	dir := filepath.Join(lab.DefaultStateDir, name)
	if err := os.Remove(filepath.Join(dir, "state.json")); err != nil {
		t.Fatal(err)
	}
	a.must("lab", "down", "--name", name)
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("machine process %d survived down", pid)
		}
	}
	assertGone(t, &lab.Status{Name: name, Dir: dir})
	// The record of the host's settings is not the state file: a crash
	// and a lost state do not cost the host its own values.
	assertHostSettingsBack(t, before)
}

// TestLabHelper checks labtest itself: a master and a worker, hosts
// handed back, commands run, everything removed by t.Cleanup.
func TestLabHelper(t *testing.T) {
	var l *labtest.Lab
	t.Run("start", func(t *testing.T) {
		l = labtest.Start(t, labtest.Options{Masters: 1, Workers: 1})
		if len(l.Masters()) != 1 || len(l.Workers()) != 1 {
			t.Fatalf("hosts %+v", l.Hosts)
		}
		for _, h := range l.Hosts {
			if got := l.Run(t, h.Name, "hostname"); got != h.Name {
				t.Errorf("hostname %q on %s", got, h.Name)
			}
			c := l.Dial(t, h.Name)
			if c.Addr() != net.JoinHostPort(h.Address.String(), "22") {
				t.Errorf("dialled %s for %s", c.Addr(), h.Name)
			}
		}
		if _, err := os.Stat(l.ClusterFile); err != nil {
			t.Error(err)
		}
	})
	if l != nil {
		assertGone(t, l.Status)
	}
}

func dial(st *lab.Status, m lab.Machine, timeout time.Duration) (*sshx.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := sshx.Dial(ctx, sshx.Config{
		Addr:          net.JoinHostPort(m.Address.String(), "22"),
		IdentityFiles: []string{st.SSHKey},
		KnownHosts:    st.KnownHosts,
	})
	if err == nil {
		c.Close()
	}
	return c, err
}

// assertGone checks that nothing of the lab is left: no link of it, no
// process of it, no mount under its directory or of its overlays, no
// cgroup, no directory.
func assertGone(t *testing.T, st *lab.Status) {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	owned := map[string]bool{}
	for _, m := range st.Machines {
		owned[m.Interface] = true
	}
	if st.Bridge != "" {
		owned[st.Bridge] = true
	}
	for _, l := range links {
		a := l.Attrs()
		if owned[a.Name] || a.Alias == "anvil-lab:"+st.Name || strings.HasPrefix(a.Alias, "anvil-lab:"+st.Name+"/") {
			t.Errorf("interface %s (%s) left behind", a.Name, a.Alias)
		}
	}
	for _, m := range st.Machines {
		if alive(m.PID) {
			t.Errorf("%s's nspawn %d still runs", m.Name, m.PID)
		}
	}
	for _, pid := range nspawnsOf(st.Dir) {
		t.Errorf("systemd-nspawn %d for %s still runs", pid, st.Dir)
	}
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, st.Dir) || strings.HasPrefix(line, "anvil-lab ") {
			t.Errorf("mount left behind: %s", line)
		}
	}
	for _, cg := range machineCgroups(st.Name) {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup %s left behind", cg)
		}
	}
	if _, err := os.Stat(st.Dir); err == nil {
		t.Errorf("%s left behind", st.Dir)
	}
}

// machineCgroups are the lab's cgroup directories in every hierarchy this
// host has.
func machineCgroups(name string) []string {
	var out []string
	for _, h := range hierarchies() {
		out = append(out, filepath.Join(h, "anvil-lab", name))
	}
	return out
}

// hierarchies are the mount points of this host's cgroup hierarchies (v1
// controllers, named and unified), each once; read here rather than asked
// of the lab, which is what is tested.
func hierarchies() []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, _ := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 1 && (g[0] == "cgroup" || g[0] == "cgroup2") && f[3] == "/" && !seen[f[2]] {
			seen[f[2]] = true
			out = append(out, f[4])
		}
	}
	return out
}

// uniqueName is prefix and random hex: a lab no other test run, and no
// other person's lab on this host, has.
func uniqueName(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// machinesBooting counts the lab's machines whose container has started.
func machinesBooting(name string) int {
	n := 0
	for _, dir := range machineCgroups(name) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() && len(pidsOf([]string{filepath.Join(dir, e.Name(), "payload")})) > 0 {
				n++
			}
		}
		if n > 0 {
			return n
		}
	}
	return n
}

func pidsOf(cgroups []string) []int {
	seen := map[int]bool{}
	for _, dir := range cgroups {
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var out []int
	for pid := range seen {
		out = append(out, pid)
	}
	return out
}

// alive reports whether pid runs and is not a zombie waiting for its
// parent.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z' && data[i+2] != 'X'
}

// nspawnsOf lists live systemd-nspawn processes whose arguments name dir.
func nspawnsOf(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte("systemd-nspawn")) && bytes.Contains(cmdline, []byte(dir+"/")) {
			out = append(out, pid)
		}
	}
	return out
}
