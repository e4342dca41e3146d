package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"anvil.dev/anvil/internal/fsutil"
)

// The base every machine's tree is an overlay on. Changing any of these
// changes the stamp, so the next `up` builds a new base beside the old one
// (labs still running keep theirs).
const (
	baseSuite   = "bookworm"
	baseVariant = "minbase"
	// basePackages is what a machine has beyond minbase: systemd as PID 1,
	// sshd, the tools an installer and its tests use, sudo for the
	// non-root user, and what a node's runtime calls that a Debian server
	// has: iptables and nftables (the bridge CNI's masquerading, portmap,
	// kube-proxy), conntrack, netbase (/etc/protocols and /etc/services,
	// which iptables and Go's resolver read) and kmod (modprobe and lsmod,
	// which node set-up scripts and kube-proxy's IPVS mode call; whether a
	// module loads is the host kernel's business, not the machine's).
	basePackages = "systemd,systemd-sysv,dbus,libpam-systemd,openssh-server,iproute2,iputils-ping,procps,sudo," +
		"iptables,nftables,conntrack,netbase,kmod"
	// baseRecipe is the version of configureBase; bump it when it changes.
	baseRecipe = 2
	// SudoUser is the non-root user every machine has, with passwordless
	// sudo, as Debian's cloud images do.
	SudoUser = "debian"
)

// BaseStamp identifies the base by what goes into it.
func BaseStamp() string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%s|%d", baseSuite, baseVariant, basePackages, baseRecipe))
	return hex.EncodeToString(h[:])[:12]
}

// Base is a built base tree.
type Base struct {
	Stamp    string        `json:"stamp"`
	Dir      string        `json:"dir"` // the root file system
	Suite    string        `json:"suite"`
	Packages string        `json:"packages"`
	Built    time.Time     `json:"built"`
	Took     time.Duration `json:"took"`
	// Reused is true when the base was already there.
	Reused bool `json:"-"`
}

func (m *Manager) baseDir(stamp string) string { return filepath.Join(m.cacheDir, "base-"+stamp) }

// EnsureBase returns the base for the current stamp, building it first if
// needed. Concurrent callers (other `anvil lab up`s) wait on a lock file
// and then reuse what the first one built.
func (m *Manager) EnsureBase(ctx context.Context) (Base, error) {
	stamp := BaseStamp()
	if b, err := readBase(m.baseDir(stamp)); err == nil {
		b.Reused = true
		return b, nil
	}
	lock, err := lockFile(ctx, filepath.Join(m.cacheDir, "base.lock"), func() {
		say(m.progress, "lab: waiting for another anvil to finish building the base")
	})
	if err != nil {
		return Base{}, err
	}
	defer lock.unlock()
	if b, err := readBase(m.baseDir(stamp)); err == nil {
		b.Reused = true
		return b, nil
	}
	return m.buildBase(ctx, stamp)
}

func readBase(dir string) (Base, error) {
	data, err := os.ReadFile(filepath.Join(dir, "base.json"))
	if err != nil {
		return Base{}, err
	}
	var b Base
	if err := json.Unmarshal(data, &b); err != nil {
		return Base{}, fmt.Errorf("read %s: %w", dir, err)
	}
	b.Dir = filepath.Join(dir, "rootfs")
	return b, nil
}

// buildBase runs debootstrap into a scratch directory, makes the tree fit
// for cloning, and renames it into place; base.json, written last, marks it
// complete. The caller holds the base lock.
func (m *Manager) buildBase(ctx context.Context, stamp string) (Base, error) {
	start := time.Now()
	// Scratch trees of builds that crashed: nobody else builds while we
	// hold the lock.
	if old, _ := filepath.Glob(filepath.Join(m.cacheDir, ".build-*")); len(old) > 0 {
		for _, d := range old {
			if err := os.RemoveAll(d); err != nil {
				return Base{}, fmt.Errorf("remove unfinished base %s: %w", d, err)
			}
		}
	}
	mirror := m.mirror
	if mirror == "" {
		var err error
		if mirror, err = aptMirror("/etc/apt", baseSuite); err != nil {
			return Base{}, err
		}
	}
	scratch, err := os.MkdirTemp(m.cacheDir, ".build-"+stamp+"-")
	if err != nil {
		return Base{}, fmt.Errorf("base scratch directory: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(scratch)
		}
	}()
	rootfs := filepath.Join(scratch, "rootfs")
	say(m.progress, "lab: building the base file system (Debian %s, %s + %s); this takes a few minutes, once", baseSuite, baseVariant, basePackages)
	if err := m.debootstrap(ctx, rootfs, mirror, filepath.Join(scratch, "debootstrap.log")); err != nil {
		return Base{}, err
	}
	say(m.progress, "lab: configuring the base")
	if err := configureBase(ctx, rootfs); err != nil {
		return Base{}, fmt.Errorf("configure base: %w", err)
	}
	dir := m.baseDir(stamp)
	// A base renamed into place whose base.json was never written.
	if err := os.RemoveAll(dir); err != nil {
		return Base{}, fmt.Errorf("remove unfinished base %s: %w", dir, err)
	}
	if err := os.Rename(scratch, dir); err != nil {
		return Base{}, fmt.Errorf("install base: %w", err)
	}
	ok = true
	b := Base{Stamp: stamp, Suite: baseSuite, Packages: basePackages, Built: time.Now().UTC(), Took: time.Since(start)}
	data, _ := json.MarshalIndent(b, "", "  ")
	if err := fsutil.WriteFile(filepath.Join(dir, "base.json"), append(data, '\n'), 0o644, 0o755); err != nil {
		return Base{}, err
	}
	b.Dir = filepath.Join(dir, "rootfs")
	say(m.progress, "lab: base built in %s", b.Took.Round(time.Second))
	m.pruneBases(stamp)
	return b, nil
}

// pruneBases removes bases of other stamps that no lab sits on any more;
// one a lab still uses stays until that lab is removed and a later build
// prunes it.
func (m *Manager) pruneBases(keep string) {
	inUse := map[string]bool{}
	ents, _ := os.ReadDir(m.stateDir)
	for _, e := range ents {
		if s, err := loadState(m.paths(e.Name())); err == nil {
			inUse[filepath.Dir(s.Base)] = true
		} else if e.IsDir() && !errors.Is(err, ErrNoLab) {
			return // a state we cannot read might use any of them
		}
	}
	old, _ := filepath.Glob(filepath.Join(m.cacheDir, "base-*"))
	for _, d := range old {
		if d == m.baseDir(keep) || inUse[d] {
			continue
		}
		if err := os.RemoveAll(d); err == nil {
			say(m.progress, "lab: removed the outdated base %s", d)
		}
	}
}

// debootstrapPhase matches debootstrap's step lines worth showing; the
// per-package lines are only counted.
var debootstrapPhase = regexp.MustCompile(`^I: (Retrieving Release|Retrieving InRelease|Validating Packages|Resolving dependencies of base|Installing core packages|Unpacking the base system|Configuring the base system|Base system installed)`)

func (m *Manager) debootstrap(ctx context.Context, rootfs, mirror, logPath string) error {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("debootstrap log: %w", err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, "debootstrap",
		"--variant="+baseVariant, "--include="+basePackages, "--components=main",
		baseSuite, rootfs, mirror)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("debootstrap: %w", err)
	}
	var tail []string
	var steps atomic.Int64
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			steps.Add(1)
			fmt.Fprintln(logf, line)
			if debootstrapPhase.MatchString(line) {
				say(m.progress, "lab: debootstrap: %s", strings.TrimSpace(strings.TrimPrefix(line, "I: ")))
			}
			if tail = append(tail, line); len(tail) > 20 {
				tail = tail[1:]
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	// Some phases print nothing for a minute: say that it still works.
	start := time.Now()
	beat := time.NewTicker(30 * time.Second)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for waiting := true; waiting; {
		select {
		case err = <-waited:
			waiting = false
		case <-beat.C:
			say(m.progress, "lab: debootstrap: %d steps in %s", steps.Load(), time.Since(start).Round(time.Second))
		}
	}
	beat.Stop()
	pw.Close()
	<-scanned
	if err != nil {
		return fmt.Errorf("debootstrap %s into %s: %w (log %s):\n%s", baseSuite, rootfs, err, logPath, strings.Join(tail, "\n"))
	}
	return nil
}

// configureBase makes a debootstrapped tree something to clone: no
// identity of its own (host keys, machine-id, hostname, the build host's
// resolver), sshd taking keys only, a sudo user, and nothing that wakes an
// idle machine up.
func configureBase(ctx context.Context, root string) error {
	in := func(p string) string { return filepath.Join(root, p) }
	keys, _ := filepath.Glob(in("/etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	files := []struct {
		path string
		data string
		mode fs.FileMode
	}{
		{"/etc/ssh/sshd_config.d/anvil-lab.conf", sshdConfig, 0o644},
		// Empty: each machine gets its own in its tree.
		{"/etc/machine-id", "", 0o444},
		{"/etc/resolv.conf", "", 0o644},
		{"/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644},
		{"/etc/sudoers.d/" + SudoUser, SudoUser + " ALL=(ALL) NOPASSWD:ALL\n", 0o440},
		{"/etc/systemd/journald.conf.d/anvil-lab.conf", journaldConfig, 0o644},
		{cgroupsScript, cgroupsScriptText, 0o755},
		{"/etc/systemd/system/" + CgroupsUnit, cgroupsUnitText, 0o644},
	}
	for _, f := range files {
		if err := fsutil.WriteFile(in(f.path), []byte(f.data), f.mode, 0o755); err != nil {
			return err
		}
	}
	for _, p := range []string{"/etc/hostname", "/var/lib/dbus/machine-id"} {
		if err := os.Remove(in(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.Symlink("/etc/machine-id", in("/var/lib/dbus/machine-id")); err != nil {
		return err
	}
	// Enabled as `systemctl enable` would, without running anything of the
	// tree's.
	wants := in("/etc/systemd/system/sysinit.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	if err := os.Symlink("../"+CgroupsUnit, filepath.Join(wants, CgroupsUnit)); err != nil {
		return err
	}
	// Timers that would make idle machines do work (and try the network).
	for _, u := range []string{"apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer"} {
		p := in("/etc/systemd/system/" + u)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Symlink("/dev/null", p); err != nil {
			return err
		}
	}
	if err := run(ctx, "chroot", root, "useradd", "--create-home", "--user-group", "--shell", "/bin/bash", SudoUser); err != nil {
		return err
	}
	// Package caches: a third of the tree, and no machine installs from
	// them (there is no route out).
	for _, glob := range []string{"/var/cache/apt/archives/*.deb", "/var/cache/apt/*.bin", "/var/lib/apt/lists/*_*"} {
		matches, _ := filepath.Glob(in(glob))
		for _, p := range matches {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// The host's kernel log is bound into every machine (the kubelet reads
// /dev/kmsg), and machines may read it (CAP_SYSLOG); it is not theirs to
// journal, ten times over.
const journaldConfig = `# Written by anvil lab: /dev/kmsg is the host's kernel log.
[Journal]
ReadKMsg=no
`

// CgroupsUnit runs in every machine at boot, before sysinit.target and so
// before containerd and the kubelet: systemd-nspawn mounts the cgroup v1
// controllers read-only inside (only name=systemd is writable), where
// containerd and the kubelet must create their cgroups (without it:
// "mkdir /sys/fs/cgroup/cpuset/kubepods: read-only file system"). Each
// machine's hierarchies are its own cgroups on the host (see
// ensureCgroups), so this hands a machine only what is already its own.
// remount,bind changes the mount's flag alone, which memory accepts too; a
// plain remount of memory is refused as busy.
const CgroupsUnit = "anvil-lab-cgroups.service"

const cgroupsScript = "/usr/local/sbin/anvil-lab-cgroups"

const cgroupsScriptText = `#!/bin/sh
# Written by anvil lab (` + CgroupsUnit + `): make this machine's cgroup
# v1 hierarchies writable for containerd and the kubelet.
set -eu
mount -o remount,rw /sys/fs/cgroup
for c in $(findmnt -rn -t cgroup -o TARGET); do
	mount -o remount,bind,rw "$c"
done
`

const cgroupsUnitText = `# Written by anvil lab.
[Unit]
Description=Writable cgroup hierarchies for containerd and the kubelet
DefaultDependencies=no
ConditionVirtualization=container
Before=sysinit.target containerd.service kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=` + cgroupsScript + `

[Install]
WantedBy=sysinit.target
`

const sshdConfig = `# Written by anvil lab. Each machine has its own ed25519 host key, and
# logins are by key only.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
`

// HostMirror is the Debian mirror this host's apt uses for suite, which
// the lab's base and other debootstrapped trees (the conformance images'
// root) are made from.
func HostMirror(suite string) (string, error) { return aptMirror("/etc/apt", suite) }

// aptMirror finds the URI this host's apt uses for suite, in deb822
// sources (sources.list.d/*.sources) or one-line ones (sources.list,
// sources.list.d/*.list), so the lab uses the mirror the host already
// trusts and reaches.
func aptMirror(etcApt, suite string) (string, error) {
	var files []string
	deb822, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.sources"))
	oneLine, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.list"))
	files = append(files, deb822...)
	files = append(files, filepath.Join(etcApt, "sources.list"))
	files = append(files, oneLine...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var uri string
		if strings.HasSuffix(f, ".sources") {
			uri = mirrorFromDeb822(string(data), suite)
		} else {
			uri = mirrorFromList(string(data), suite)
		}
		if uri != "" {
			return uri, nil
		}
	}
	return "", fmt.Errorf("no apt source for Debian %s under %s: give the mirror's URL with --mirror", suite, etcApt)
}

func mirrorFromDeb822(data, suite string) string {
	for _, stanza := range strings.Split(data, "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") || strings.HasPrefix(line, " ") {
				continue
			}
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if fields["enabled"] == "no" || !hasWord(fields["types"], "deb") || !hasWord(fields["suites"], suite) {
			continue
		}
		if uris := strings.Fields(fields["uris"]); len(uris) > 0 {
			return uris[0]
		}
	}
	return ""
}

func mirrorFromList(data, suite string) string {
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // [signed-by=… arch=…]
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) == 0 {
				continue
			}
			f = f[1:]
		}
		if len(f) >= 2 && f[1] == suite {
			return f[0]
		}
	}
	return ""
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if f == w {
			return true
		}
	}
	return false
}
