package lab_test

// End-to-end tests that lab machines can host a Kubernetes node (issue 14
// item 7): what containerd, runc and the kubelet need from a machine,
// checked in booted machines, and a host given back as it was after
// `down`, also when a machine failed to boot.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"anvil.dev/anvil/lab"
	"anvil.dev/anvil/lab/labtest"
)

// nodeSettings are the host kernel settings the kubelet needs, and the
// values a lab sets them to.
func nodeSettings() map[string]string {
	return map[string]string{"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
}

func sysctlRecord() string { return filepath.Join(lab.DefaultStateDir, ".host-sysctls.json") }

// hostSettings is what the node settings were before a test's lab.
type hostSettings struct {
	values map[string]string
	// recorded: a lab of someone else's already holds them, so the values
	// read are a lab's, not the host's own.
	recorded bool
}

func readHostSettings(t *testing.T) hostSettings {
	t.Helper()
	h := hostSettings{values: map[string]string{}}
	for p := range nodeSettings() {
		h.values[p] = readSysctl(t, p)
	}
	_, err := os.Stat(sysctlRecord())
	h.recorded = err == nil
	return h
}

func readSysctl(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc/sys", p))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// otherLabs names the labs on this host, whoever made them: cgroups,
// interfaces, state directories.
func otherLabs() []string {
	seen := map[string]bool{}
	for _, h := range hierarchies() {
		ents, _ := os.ReadDir(filepath.Join(h, "anvil-lab"))
		for _, e := range ents {
			seen["cgroup "+e.Name()] = true
		}
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if name, ok := strings.CutPrefix(l.Attrs().Alias, "anvil-lab:"); ok {
			seen["link "+name] = true
		}
	}
	ents, _ := os.ReadDir(lab.DefaultStateDir)
	for _, e := range ents {
		if e.IsDir() {
			seen["dir "+e.Name()] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// controllerHierarchies are the mount points of this host's v1 controller
// hierarchies (cpu, memory, …; not the named or unified ones).
func controllerHierarchies() []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, _ := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 3 && g[0] == "cgroup" && f[3] == "/" && !strings.Contains(g[2], "name=") && !slices.Contains(out, f[4]) {
			out = append(out, f[4])
		}
	}
	return out
}

// assertHostSettingsHeld checks that a running lab holds the settings and
// that the record says what they were.
func assertHostSettingsHeld(t *testing.T, before hostSettings) {
	t.Helper()
	for p, want := range nodeSettings() {
		if got := readSysctl(t, p); got != want {
			t.Errorf("host %s = %s while a lab runs, want %s", p, got, want)
		}
	}
	changed := false
	for p, v := range before.values {
		changed = changed || v != nodeSettings()[p]
	}
	if !changed {
		return
	}
	data, err := os.ReadFile(sysctlRecord())
	if err != nil {
		t.Fatalf("the lab changed host settings but recorded nothing: %v", err)
	}
	if before.recorded {
		return // someone else's lab recorded the host's own values
	}
	var record struct {
		Changed []struct{ Name, Previous string }
	}
	if err := json.Unmarshal(data, &record); err != nil {
		t.Fatalf("%s: %v", sysctlRecord(), err)
	}
	for p, v := range before.values {
		name := strings.ReplaceAll(p, "/", ".")
		found := v == nodeSettings()[p] // unchanged: nothing to record
		for _, c := range record.Changed {
			found = found || (c.Name == name && c.Previous == v)
		}
		if !found {
			t.Errorf("record %s lacks %s's previous value %s:\n%s", sysctlRecord(), name, v, data)
		}
	}
}

// assertHostSettingsBack checks, after the test's last lab went down, that
// the host has its own settings back, unless another lab is still here
// (someone else's): then they must still be held for it.
func assertHostSettingsBack(t *testing.T, before hostSettings) {
	t.Helper()
	if others := otherLabs(); len(others) > 0 {
		t.Logf("other labs on this host (%s): the settings stay theirs", strings.Join(others, ", "))
		if before.recorded {
			return
		}
		for p, v := range before.values {
			if v != nodeSettings()[p] {
				if _, err := os.Stat(sysctlRecord()); err != nil {
					t.Errorf("a lab is still here and the record is gone: %v", err)
				}
				return
			}
		}
		return
	}
	for _, p := range []string{sysctlRecord(), filepath.Join(lab.DefaultStateDir, ".lock")} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("no lab left, and %s is still there: %v", p, err)
		}
	}
	if before.recorded {
		return // the values before were someone's lab's, not the host's
	}
	for p, v := range before.values {
		if got := readSysctl(t, p); got != v {
			t.Errorf("host %s = %s after the last lab went down, want %s as before", p, got, v)
		}
	}
}

// exiting reports whether pid is gone or on its way out (PF_EXITING).
func exiting(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(data, ')')
	// After the command: state ppid pgrp session tty_nr tpgid flags …
	f := strings.Fields(string(data[i+1:]))
	if i < 0 || len(f) < 7 || f[0] == "Z" || f[0] == "X" {
		return true
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	const pfExiting = 0x4
	return err != nil || flags&pfExiting != 0
}

// keyctlCheck builds a static program that joins a new session keyring,
// as runc does for every container, to run in a machine.
func keyctlCheck(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	const src = `package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

func main() {
	const keyctlJoinSessionKeyring = 1
	name, _ := syscall.BytePtrFromString("_ses.anvil-lab-check")
	if _, _, errno := syscall.Syscall(syscall.SYS_KEYCTL, keyctlJoinSessionKeyring, uintptr(unsafe.Pointer(name)), 0); errno != 0 {
		fmt.Println("keyctl:", errno)
		os.Exit(1)
	}
	fmt.Println("ok")
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "keyctl-check")
	cmd := exec.Command("go", "build", "-o", bin, "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build keyctl check: %v\n%s", err, out)
	}
	return bin
}

// TestLabNodeRuntime checks in booted machines what containerd, runc and
// the kubelet need, each the way they use it, then that `down` leaves the
// host as it found it.
func TestLabNodeRuntime(t *testing.T) {
	labtest.Require(t)
	before := readHostSettings(t)
	check := keyctlCheck(t)
	l := labtest.Start(t, labtest.Options{Masters: 1, Workers: 1})
	assertHostSettingsHeld(t, before)
	hs := hierarchies()

	for _, h := range l.Hosts {
		t.Run(h.Name, func(t *testing.T) {
			c := l.Dial(t, h.Name)
			run := func(cmd string) string {
				t.Helper()
				out, err := c.Output(context.Background(), cmd)
				if err != nil {
					t.Errorf("%s: %q: %v", h.Name, cmd, err)
				}
				return strings.TrimSpace(string(out))
			}
			machineCg := func(hier string) string { return filepath.Join(hier, "anvil-lab", l.Name, h.Name) }

			t.Run("cgroups are the machine's own, in every hierarchy", func(t *testing.T) {
				// Every process of the machine, seen from the host.
				machine := []string{machineCg("/sys/fs/cgroup/systemd")}
				pids := pidsOf(machine)
				if len(pids) == 0 {
					t.Fatalf("no process in %s", machine[0])
				}
				checked := 0
				for _, pid := range pids {
					data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
					// A process that has begun to exit (an ssh session ending)
					// shows the root cgroups while still listed; one that is
					// not exiting after the read was not exiting during it.
					if err != nil || exiting(pid) {
						continue
					}
					checked++
					lines := strings.Split(strings.TrimSpace(string(data)), "\n")
					if len(lines) < len(hs) {
						t.Errorf("pid %d is in %d hierarchies, the host has %d", pid, len(lines), len(hs))
					}
					for _, line := range lines {
						if f := strings.SplitN(line, ":", 3); len(f) != 3 || !strings.HasPrefix(f[2]+"/", "/anvil-lab/"+l.Name+"/"+h.Name+"/") {
							t.Errorf("pid %d of %s: %s is not the machine's cgroup", pid, h.Name, line)
						}
					}
				}
				if checked < 5 {
					t.Errorf("only %d processes of %s checked", checked, h.Name)
				}
			})

			t.Run("cgroups are writable after the oneshot", func(t *testing.T) {
				if got := run("systemctl is-active " + lab.CgroupsUnit); got != "active" {
					t.Fatalf("%s is %q", lab.CgroupsUnit, got)
				}
				if got := run("systemctl show -p Before --value " + lab.CgroupsUnit); !strings.Contains(got, "containerd.service") || !strings.Contains(got, "kubelet.service") {
					t.Errorf("%s is not ordered before containerd and the kubelet: %s", lab.CgroupsUnit, got)
				}
				// As the kubelet and containerd would; left for down to remove.
				run("mkdir -p /sys/fs/cgroup/cpuset/kubepods/burstable /sys/fs/cgroup/memory/kubepods/burstable")
				run(`for c in $(findmnt -rn -t cgroup -o TARGET); do mkdir -p "$c/kubepods"; done`)
				ctls := controllerHierarchies()
				if len(ctls) == 0 {
					t.Fatal("this host has no cgroup v1 controller mounted: nothing to check")
				}
				for _, hier := range ctls {
					if _, err := os.Stat(filepath.Join(machineCg(hier), "kubepods")); err != nil {
						t.Errorf("kubepods made in %s is not under the machine's cgroup on the host: %v", h.Name, err)
					}
				}
				for _, ctl := range []string{"cpuset", "memory"} {
					if _, err := os.Stat(filepath.Join(machineCg("/sys/fs/cgroup/"+ctl), "kubepods", "burstable")); err != nil {
						t.Errorf("%s: %v", ctl, err)
					}
				}
			})

			t.Run("kernel log", func(t *testing.T) {
				if got := run("dd if=/dev/kmsg bs=8192 count=1 iflag=nonblock status=none"); !strings.Contains(got, ";") {
					t.Errorf("/dev/kmsg gave %q, want a kernel record", got)
				}
			})

			t.Run("keyctl", func(t *testing.T) {
				f, err := os.Open(check)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := c.Run(context.Background(), "cat > /usr/local/bin/keyctl-check && chmod 755 /usr/local/bin/keyctl-check", f, nil, nil); err != nil {
					t.Fatal(err)
				}
				if got := run("/usr/local/bin/keyctl-check"); got != "ok" {
					t.Errorf("joining a session keyring: %s", got)
				}
			})

			t.Run("network sysctls writable, host ones not", func(t *testing.T) {
				if got := run("echo 1 > /proc/sys/net/ipv4/ip_forward && cat /proc/sys/net/ipv4/ip_forward"); got != "1" {
					t.Errorf("ip_forward: %q", got)
				}
				if _, err := c.Output(context.Background(), "echo 0 > /proc/sys/vm/overcommit_memory"); err == nil {
					t.Error("a machine may change the host's vm.overcommit_memory")
				}
				if got := run("cat /proc/sys/vm/overcommit_memory /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops"); got != "1\n10\n1" {
					t.Errorf("the kubelet's settings, seen in the machine: %q", got)
				}
			})

			t.Run("containerd directory is the host's", func(t *testing.T) {
				if got := run("stat -f -c %T /var/lib/containerd"); got == "overlayfs" || got == "" {
					t.Errorf("/var/lib/containerd is on %q", got)
				}
				if got := run("stat -f -c %T /"); got != "overlayfs" {
					t.Errorf("/ is on %q: the check above proves nothing", got)
				}
				run("mkdir -p /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs && touch /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/probe")
				if _, err := os.Stat(filepath.Join(l.Status.Dir, "machines", h.Name, "containerd", "io.containerd.snapshotter.v1.overlayfs", "probe")); err != nil {
					t.Error(err)
				}
				// What the snapshotter does: an overlay with its layers there.
				run("d=/var/lib/containerd/probe; mkdir -p $d/l $d/u $d/w $d/m && mount -t overlay overlay -o lowerdir=$d/l,upperdir=$d/u,workdir=$d/w $d/m && umount $d/m && rm -r $d")
			})

			t.Run("node tools", func(t *testing.T) {
				run("command -v iptables ip6tables nft conntrack modprobe findmnt")
				run("iptables -S >/dev/null && nft list ruleset >/dev/null && test -s /etc/protocols && test -s /etc/services")
			})
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := l.Manager.Down(ctx, l.Name); err != nil {
		t.Fatal(err)
	}
	t.Logf("down of 2 machines took %s", time.Since(start).Round(time.Millisecond))
	assertGone(t, l.Status)
	assertHostSettingsBack(t, before)
}

// TestLabFailedBoot breaks a machine's init so that it dies while booting:
// the failed start leaves no cgroup of it in any hierarchy, and `down`
// leaves nothing of the lab and gives the host its settings back.
func TestLabFailedBoot(t *testing.T) {
	labtest.Require(t)
	before := readHostSettings(t)
	l := labtest.Start(t, labtest.Options{Masters: 1})
	m := l.Hosts[0]
	l.Stop(t, m.Name, true)
	init := filepath.Join(l.Status.Dir, "machines", m.Name, "upper", "usr/lib/systemd/systemd")
	if err := os.MkdirAll(filepath.Dir(init), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(init, []byte("#!/bin/sh\necho 'anvil lab test: this init fails' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := l.Manager.Start(ctx, m.Name)
	if err == nil || !strings.Contains(err.Error(), "stopped while booting") || !strings.Contains(err.Error(), "this init fails") {
		t.Fatalf("start with a broken init: %v", err)
	}
	for _, cg := range machineCgroups(l.Name) {
		if _, err := os.Stat(filepath.Join(cg, m.Name)); err == nil {
			t.Errorf("the failed start left cgroup %s", filepath.Join(cg, m.Name))
		}
	}
	st, err := l.Manager.Status(ctx, l.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Host(m.Name); got.State != lab.Stopped || got.PID != 0 {
		t.Errorf("after the failed start: %+v", got)
	}
	if _, err := l.Manager.Dial(ctx, m.Name, ""); !errors.Is(err, lab.ErrStopped) {
		t.Errorf("dial: %v", err)
	}
	if err := l.Manager.Down(ctx, l.Name); err != nil {
		t.Fatal(err)
	}
	assertGone(t, l.Status)
	assertHostSettingsBack(t, before)
}

// TestLabSysctlsHeldWhileAnyLabExists counts labs as `down` does: the host
// settings stay while another lab of this state directory is up, or a
// lab that only shows as an interface or a cgroup (another state
// directory, another anvil), and come back once none is left.
func TestLabSysctlsHeldWhileAnyLabExists(t *testing.T) {
	labtest.Require(t)
	before := readHostSettings(t)
	a := labtest.Start(t, labtest.Options{Masters: 1})
	b := labtest.Start(t, labtest.Options{Masters: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	held := func(why string) {
		t.Helper()
		for p, want := range nodeSettings() {
			if got := readSysctl(t, p); got != want {
				t.Errorf("%s: host %s = %s, want %s still", why, p, got, want)
			}
		}
	}

	if err := a.Manager.Down(ctx, a.Name); err != nil {
		t.Fatal(err)
	}
	held("lab " + b.Name + " still up")

	// A lab this anvil has no state of: its bridge is all there is.
	ghost := uniqueName("lt-ghost-")
	link := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "anvt" + ghost[len(ghost)-6:]}}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(link) })
	if err := netlink.LinkSetAlias(link, "anvil-lab:"+ghost); err != nil {
		t.Fatal(err)
	}
	if err := b.Manager.Down(ctx, b.Name); err != nil {
		t.Fatal(err)
	}
	held("a lab's interface is still here")
	if err := netlink.LinkDel(link); err != nil {
		t.Fatal(err)
	}

	// Or its cgroups.
	ctls := controllerHierarchies()
	if len(ctls) == 0 {
		t.Fatal("no cgroup v1 controller mounted")
	}
	cg := filepath.Join(ctls[0], "anvil-lab", ghost)
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(cg); _ = os.Remove(filepath.Dir(cg)) })
	if err := b.Manager.Down(ctx, b.Name); err != nil {
		t.Fatal(err)
	}
	held("a lab's cgroup is still here")
	if err := os.Remove(cg); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Dir(cg)) // fails if another lab is here, as it should

	// Nothing of any lab left: a down of nothing gives the settings back.
	if err := b.Manager.Down(ctx, b.Name); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a.Status)
	assertGone(t, b.Status)
	assertHostSettingsBack(t, before)
}
