package labtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/lab"
)

// Options is the lab a test wants.
type Options struct {
	// Name of the lab; default "lt-" and random hex, so parallel tests and a
	// person's own labs never meet.
	Name    string
	Masters int // default 1
	Workers int
	// Subnet; default a free /24 of lab.DefaultPool.
	Subnet netip.Prefix
	// BootTimeout per machine; default the lab's.
	BootTimeout time.Duration
}

// Host is one machine of the lab.
type Host struct {
	Name    string
	Role    v1alpha1.Role
	Address netip.Addr
}

// Lab is a running lab, removed when the test that started it ends.
type Lab struct {
	Name        string
	Hosts       []Host
	ClusterFile string
	SSHKey      string
	KnownHosts  string
	// BackupKey is the age identity the lab cluster's backups need.
	BackupKey string
	// Status is what `anvil lab status` said when the lab came up.
	Status  *lab.Status
	Manager *lab.Manager
}

// Require checks that this machine can run a lab, installing missing
// packages if it can. It skips the test when it cannot, or fails it under
// CI=true.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab tests boot real machines: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := lab.CheckPrerequisites(ctx, true, func(s string) { t.Log(s) }); err != nil {
		if lab.IsPrerequisite(err) && os.Getenv("CI") != "true" {
			t.Skipf("cannot run a lab here: %v", err)
		}
		t.Fatalf("cannot run a lab here: %v", err)
	}
}

// Start brings a lab up and registers its removal with t.Cleanup, which
// also runs when Start itself fails half-way.
func Start(t testing.TB, o Options) *Lab {
	t.Helper()
	Require(t)
	if o.Name == "" {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		o.Name = "lt-" + hex.EncodeToString(b)
	}
	if o.Masters == 0 {
		o.Masters = 1
	}
	m := lab.New(lab.Config{
		Install:     true,
		BootTimeout: o.BootTimeout,
		Progress:    func(s string) { t.Log(s) },
	})
	t.Cleanup(func() {
		// Not the test's context: cleanup must run after it is done.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := m.Down(ctx, o.Name); err != nil {
			t.Errorf("remove lab %s: %v (run `anvil lab down --name %s`)", o.Name, err, o.Name)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	st, err := m.Up(ctx, lab.Spec{Name: o.Name, Masters: o.Masters, Workers: o.Workers, Subnet: o.Subnet})
	if err != nil {
		t.Fatalf("lab %s: %v", o.Name, err)
	}
	l := &Lab{
		Name: st.Name, ClusterFile: st.ClusterFile, SSHKey: st.SSHKey, BackupKey: st.BackupKey, KnownHosts: st.KnownHosts,
		Status: st, Manager: m,
	}
	for _, mc := range st.Machines {
		l.Hosts = append(l.Hosts, Host{Name: mc.Name, Role: mc.Role, Address: mc.Address})
	}
	return l
}

// Masters returns the master hosts in order.
func (l *Lab) Masters() []Host { return l.role(v1alpha1.RoleMaster) }

// Workers returns the worker hosts in order.
func (l *Lab) Workers() []Host { return l.role(v1alpha1.RoleWorker) }

func (l *Lab) role(r v1alpha1.Role) []Host {
	var out []Host
	for _, h := range l.Hosts {
		if h.Role == r {
			out = append(out, h)
		}
	}
	return out
}

// SSHConfig is how to reach host as user ("" is root), host keys checked
// strictly against the lab's known_hosts. Tests that build their own SSH
// layer (the installer's) start from it.
func (l *Lab) SSHConfig(t testing.TB, host, user string) sshx.Config {
	t.Helper()
	cfg, err := l.Manager.SSHConfig(host, user)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Dial connects to host as root; the client is closed when the test ends.
func (l *Lab) Dial(t testing.TB, host string) *sshx.Client {
	t.Helper()
	c, err := sshx.Dial(context.Background(), l.SSHConfig(t, host, ""))
	if err != nil {
		t.Fatalf("ssh %s: %v", host, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Run runs cmd on host as root and returns its stdout, trimmed; any failure
// fails the test.
func (l *Lab) Run(t testing.TB, host, cmd string) string {
	t.Helper()
	c, err := sshx.Dial(context.Background(), l.SSHConfig(t, host, ""))
	if err != nil {
		t.Fatalf("ssh %s: %v", host, err)
	}
	defer c.Close()
	out, err := c.Output(context.Background(), cmd)
	if err != nil {
		t.Fatalf("%s: %v", host, err)
	}
	return strings.TrimSpace(string(out))
}

// Stop powers host off (force: at once, like pulling the plug).
func (l *Lab) Stop(t testing.TB, host string, force bool) {
	t.Helper()
	if err := l.Manager.Stop(context.Background(), host, force); err != nil {
		t.Fatalf("stop %s: %v", host, err)
	}
}

// Start boots host again and waits until it answers ssh.
func (l *Lab) Start(t testing.TB, host string) {
	t.Helper()
	if err := l.Manager.Start(context.Background(), host); err != nil {
		t.Fatalf("start %s: %v", host, err)
	}
}

// Cut takes host's link down.
func (l *Lab) Cut(t testing.TB, host string) {
	t.Helper()
	if err := l.Manager.Cut(context.Background(), host); err != nil {
		t.Fatalf("cut %s: %v", host, err)
	}
}

// Heal brings host's link back up.
func (l *Lab) Heal(t testing.TB, host string) {
	t.Helper()
	if err := l.Manager.Heal(context.Background(), host); err != nil {
		t.Fatalf("heal %s: %v", host, err)
	}
}
