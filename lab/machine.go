package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"

	"anvil.dev/anvil/internal/sshx"
)

// bootScript runs between fork and systemd-nspawn, in a mount namespace of
// its own (SysProcAttr.Unshareflags): it joins the machine's cgroups (one
// in every hierarchy, see ensureCgroups), gives nspawn a private
// /run/systemd/nspawn (else it leaves directories on hosts whose /run is
// not a tmpfs), mounts the machine's overlay and execs nspawn under the
// same PID. Every mount lives and dies with that
// namespace, so no machine ever leaves a mount on the host, even when
// killed.
const bootScript = `set -eu
for cg in $` + envCgroups + `; do echo $$ > "$cg/cgroup.procs"; done
mkdir -p /run/systemd/nspawn
mount -t tmpfs -o mode=0755 anvil-lab /run/systemd/nspawn
mount -t overlay anvil-lab -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
shift 4
exec "$@"`

const envCgroups = "ANVIL_LAB_CGROUPS"

// boot starts a machine: its network namespace wired to the bridge, then
// systemd-nspawn, detached in a session of its own so that the machine
// outlives the anvil that started it. It records the PID in ms and
// returns without waiting for the machine to come up. A boot that fails
// leaves no process and no cgroup behind.
func (m *Manager) boot(ctx context.Context, s *state, p paths, br netlink.Link, ms *machineState) (err error) {
	for _, d := range []string{p.work(ms.Name), p.root(ms.Name), p.containerd(ms.Name)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("%s: %w", ms.Name, err)
		}
	}
	// Leftovers of a machine that died without `stop`, or that a crashed
	// anvil started without recording: one tree never boots twice.
	if err := m.discard(ctx, s.Name, ms.Name); err != nil {
		return err
	}
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return &PrerequisiteError{Missing: "systemd-nspawn", Fix: "apt-get install systemd-container"}
	}
	if err := m.holdSysctls(ctx); err != nil {
		return fmt.Errorf("%s: %w", ms.Name, err)
	}
	cgroups, err := ensureCgroups(s.Name, ms.Name)
	defer func() {
		if err != nil {
			if derr := m.discard(context.WithoutCancel(ctx), s.Name, ms.Name); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	if err != nil {
		return fmt.Errorf("%s: %w", ms.Name, err)
	}
	console, err := os.OpenFile(p.console(ms.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%s: console log: %w", ms.Name, err)
	}
	defer console.Close()
	fmt.Fprintf(console, "\n--- anvil lab: booting %s at %s ---\n", ms.Name, time.Now().UTC().Format(time.RFC3339))

	ns, err := machineNet(s.Name, br, ms, s.Subnet)
	if err != nil {
		return err
	}
	defer ns.Close() // nspawn has its own copy

	args := append([]string{"-c", bootScript, "anvil-lab-boot",
		s.Base, p.upper(ms.Name), p.work(ms.Name), p.root(ms.Name),
		nspawn}, nspawnArgs(p, ms)...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Dir = "/"
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LC_ALL=C",
		envLab + "=" + s.Name,
		envMachine + "=" + ms.Name,
		envCgroups + "=" + strings.Join(cgroups, " "),
		// /proc/sys/net writable in the machine: it is its own network
		// namespace's, and the bridge CNI enables forwarding there ("open
		// /proc/sys/net/ipv4/ip_forward: read-only file system"). The rest
		// of /proc/sys is the host's and stays read-only.
		"SYSTEMD_NSPAWN_API_VFS_WRITABLE=network",
	}
	cmd.Stdout, cmd.Stderr = console, console
	cmd.ExtraFiles = []*os.File{ns}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start systemd-nspawn: %w", ms.Name, err)
	}
	// Reap it if it ends while this process lives (a test); otherwise it
	// is reparented when anvil exits.
	go func() { _ = cmd.Wait() }()
	start, _, err := procStart(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("%s: systemd-nspawn exited at once (see %s): %w", ms.Name, p.console(ms.Name), err)
	}
	ms.PID, ms.StartTime = cmd.Process.Pid, start
	m.log.Debug("machine booting", "host", ms.Name, "pid", ms.PID, "address", ms.Address, "veth", ms.Veth)
	return nil
}

// nspawnArgs are systemd-nspawn's arguments for a machine whose tree is
// mounted at p.root and whose network namespace is fd 3.
func nspawnArgs(p paths, ms *machineState) []string {
	return []string{
		"--boot", "--quiet",
		"--directory=" + p.root(ms.Name),
		"--machine=" + ms.Name,
		"--uuid=" + uuidOf(ms.MachineID),
		// No machined and no systemd on the host to register with.
		"--register=no", "--keep-unit",
		// The namespace made by machineNet, passed as fd 3.
		"--network-namespace-path=/proc/self/fd/3",
		// nspawn grants CAP_NET_ADMIN only with a network it makes itself;
		// the machine owns its namespace, and a master adds and removes the
		// floating control-plane address in it. CAP_SYSLOG: the kubelet
		// reads /dev/kmsg, which this host restricts (dmesg_restrict=1).
		"--capability=CAP_NET_ADMIN,CAP_SYSLOG",
		// The kubelet watches the kernel log for OOM kills, and exits
		// without it ("open /dev/kmsg: no such file or directory").
		"--bind=/dev/kmsg",
		// runc gives each container a session keyring ("unable to join
		// session keyring: operation not permitted" otherwise).
		"--system-call-filter=@keyring",
		// containerd's overlayfs snapshotter cannot stack on the machine's
		// overlay root; it gets a host directory of its own.
		"--bind=" + nspawnPath(p.containerd(ms.Name)) + ":" + containerdDir,
		"--console=read-only",
		"--link-journal=no",
		// The host's resolver and time zone are not the machine's business.
		"--resolv-conf=off", "--timezone=off",
	}
}

// containerdDir is containerd's state in a machine, a host directory.
const containerdDir = "/var/lib/containerd"

// nspawnPath escapes a path for nspawn's SOURCE:DEST options.
func nspawnPath(p string) string { return strings.NewReplacer(`\`, `\\`, ":", `\:`).Replace(p) }

// discard kills whatever runs of a machine and removes its cgroups, in
// every hierarchy.
func (m *Manager) discard(ctx context.Context, lab, machine string) error {
	if err := killAll(ctx, lab, machine); err != nil {
		return fmt.Errorf("%s: %w", machine, err)
	}
	if err := removeCgroups(ctx, lab, machine); err != nil {
		return fmt.Errorf("%s: %w", machine, err)
	}
	return nil
}

// uuidOf formats a machine-id as the UUID nspawn passes to the container.
func uuidOf(id string) string {
	if len(id) != 32 {
		return id
	}
	return id[0:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:32]
}

func (ms *machineState) running() bool { return alive(ms.PID, ms.StartTime) }

// waitReady waits until the machine's sshd answers with the host key the
// lab recorded for it, and its systemd has finished booting. A machine
// whose nspawn dies fails at once, with the end of its console.
func (m *Manager) waitReady(ctx context.Context, s *state, p paths, ms *machineState) error {
	ctx, cancel := context.WithTimeout(ctx, m.bootTimeout)
	defer cancel()
	cfg := m.sshConfig(p, ms, "root")
	cfg.Timeout = 3 * time.Second
	var lastErr error
	for {
		if !ms.running() {
			err := fmt.Errorf("%s stopped while booting: %s", ms.Name, consoleTail(p.console(ms.Name)))
			if derr := m.discard(context.WithoutCancel(ctx), s.Name, ms.Name); derr != nil {
				err = errors.Join(err, derr)
			}
			ms.PID, ms.StartTime = 0, 0
			return err
		}
		c, err := sshx.Dial(ctx, cfg)
		if err == nil {
			defer c.Close()
			return waitBooted(ctx, c, ms.Name)
		}
		var unknown *sshx.UnknownHostError
		var changed *sshx.HostKeyChangedError
		if errors.As(err, &unknown) || errors.As(err, &changed) {
			return err // not a matter of waiting
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: sshd did not answer within %s: %w", ms.Name, m.bootTimeout, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitBooted waits for systemd inside to finish booting and insists that
// it is "running": a degraded machine is a broken lab.
func waitBooted(ctx context.Context, c *sshx.Client, name string) error {
	out, err := c.Output(ctx, "systemctl is-system-running --wait")
	state := strings.TrimSpace(string(out))
	if state == "running" {
		return nil
	}
	var exit *sshx.ExitError
	if err != nil && !errors.As(err, &exit) {
		return fmt.Errorf("%s: wait for boot: %w", name, err)
	}
	failed, _ := c.Output(ctx, "systemctl --failed --no-legend --plain")
	return fmt.Errorf("%s: system is %q, not running; failed units: %s", name, state, strings.TrimSpace(string(failed)))
}

func consoleTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "no console log"
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "console (" + path + "):\n" + strings.Join(lines, "\n")
}

// halt stops a machine: with graceful, as a power button would (nspawn
// passes SIGTERM on as a poweroff request to systemd), then, after the
// stop timeout or right away, by killing everything in it, as pulling the
// plug would.
func (m *Manager) halt(ctx context.Context, lab string, ms *machineState, graceful bool) error {
	m.log.Debug("machine stopping", "host", ms.Name, "pid", ms.PID, "graceful", graceful)
	if graceful && ms.running() {
		if err := signal(ms.PID, syscall.SIGTERM, lab, ms.Name); err != nil {
			return err
		}
		deadline := time.Now().Add(m.stopTimeout)
		for ms.running() && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if err := m.discard(ctx, lab, ms.Name); err != nil {
		return err
	}
	// The namespace died with the machine and took the veth pair along;
	// this only matters if something else held the namespace.
	if l, err := netlink.LinkByName(ms.Veth); err == nil {
		_ = netlink.LinkDel(l)
	}
	ms.PID, ms.StartTime = 0, 0
	return nil
}

func (m *Manager) sshConfig(p paths, ms *machineState, user string) sshx.Config {
	return sshx.Config{
		Addr:          net.JoinHostPort(ms.Address.String(), "22"),
		User:          user,
		IdentityFiles: []string{p.key()},
		KnownHosts:    p.knownHosts(),
	}
}

// knownHostsEntries lists each machine under its name and its address.
func knownHostsEntries(s *state) ([]sshx.KnownHost, error) {
	var out []sshx.KnownHost
	for _, ms := range s.Machines {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ms.HostKey))
		if err != nil {
			return nil, fmt.Errorf("%s: host key: %w", ms.Name, err)
		}
		out = append(out, sshx.KnownHost{Addresses: []string{ms.Name, ms.Address.String()}, Key: key})
	}
	return out, nil
}

func hostsLines(s *state) []string {
	var out []string
	for _, ms := range s.Machines {
		out = append(out, ms.Address.String()+"\t"+ms.Name)
	}
	return out
}

// gateway is the bridge's address in the lab.
func (s *state) gateway() netip.Addr { return offset(s.Subnet, gatewayOffset) }
