package installer

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/sshx"
)

// dryRun applies with DryRun and returns the result and error.
func dryRun(t *testing.T, o Options, bin string, kube []string) (*ApplyResult, error) {
	t.Helper()
	res, err := Apply(context.Background(), ApplyOptions{Options: o, DryRun: true, Anvil: bin, KubeDirs: kube, CacheDir: t.TempDir()})
	o.Progress.Close()
	return res, err
}

func hostErr(err error, host string) *HostError {
	for _, e := range unwrapAll(err) {
		var he *HostError
		if errors.As(e, &he) && he.Host == host {
			return he
		}
	}
	return nil
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// transportE2E is the SSH side against real sshd, with dry runs only, so
// the machines are as fresh afterwards: a dry run that changes nothing,
// sudo as the lab's user debian and a sudo that wants a password, a
// bastion, ssh-agent keys, an unknown host refused and then accepted, and
// an unreachable host named while the others go on.
func transportE2E(t *testing.T, e *e2e) {
	l, bin, kube := e.l, e.bin, e.kube
	m1, w1, w2 := l.Masters()[0], l.Workers()[0], l.Workers()[1]

	t.Run("dry run plans and changes nothing", func(t *testing.T) {
		o, out := options(t, l.ClusterFile)
		res, err := dryRun(t, o, bin, kube)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{m1.Name + "/init": true, m1.Name + "/kubeconfig": true, m1.Name + "/credentials": true}
		for _, h := range l.Hosts {
			want[h.Name+"/upload"] = true
			switch {
			case h.Role == v1alpha1.RoleWorker:
				want[h.Name+"/join-workers"] = true
			case h.Name != m1.Name:
				want[h.Name+"/join-masters"] = true
			}
		}
		for _, s := range res.Plan {
			if s.Change {
				delete(want, s.Host+"/"+s.Phase)
			}
		}
		if len(want) > 0 {
			t.Errorf("the plan lacks %v: %+v", want, res.Plan)
		}
		var plan strings.Builder
		res.WritePlan(&plan)
		for _, h := range l.Hosts {
			if !strings.Contains(plan.String(), "\n"+h.Name+" (") {
				t.Errorf("the printed plan has no section for %s:\n%s", h.Name, plan.String())
			}
		}
		// Progress: a line per host and phase, and the summary table.
		if !strings.Contains(out.String(), "HOST") || !strings.Contains(out.String(), "CONNECT") || !strings.Contains(out.String(), m1.Name+" ") {
			t.Errorf("no summary table in the progress output:\n%s", out.String())
		}
		for _, h := range l.Hosts {
			if out := onHost(t, l, h.Name, "ls -d /opt/anvil /run/anvil /usr/local/bin/anvil /etc/anvil 2>/dev/null; true"); out != "" {
				t.Errorf("%s: the dry run left %s", h.Name, out)
			}
		}
		if _, err := os.Stat(DefaultKubeconfigPath(l.ClusterFile)); err == nil {
			t.Error("the dry run wrote a kubeconfig")
		}
	})

	t.Run("sudo as debian", func(t *testing.T) {
		file := rewrite(t, l, func(c *v1alpha1.Cluster) { c.SSH.User = "debian" })
		o, _ := options(t, file)
		if _, err := dryRun(t, o, bin, kube); err != nil {
			t.Fatal(err)
		}
		// The facts were read as root: sudo logged the script, run by debian.
		log := onHost(t, l, w1.Name, "journalctl --no-pager -o cat _COMM=sudo | grep 'debian : .*USER=root' | tail -n 3")
		if !strings.Contains(log, "COMMAND=/usr/bin/sh -c") && !strings.Contains(log, "COMMAND=/bin/sh -c") {
			t.Errorf("sudo log on %s:\n%s", w1.Name, log)
		}
	})

	t.Run("sudo that wants a password", func(t *testing.T) {
		onHost(t, l, w1.Name, `id pw >/dev/null 2>&1 || useradd -m -s /bin/sh pw
install -d -o pw -m 700 /home/pw/.ssh && install -o pw -m 600 /root/.ssh/authorized_keys /home/pw/.ssh/
echo 'pw ALL=(ALL) ALL' > /etc/sudoers.d/pw && chmod 440 /etc/sudoers.d/pw`)
		t.Cleanup(func() { _, _ = tryRun(t, l, w1.Name, "rm -f /etc/sudoers.d/pw && userdel -r pw") })
		file := rewrite(t, l, func(c *v1alpha1.Cluster) {
			for i := range c.Hosts {
				if c.Hosts[i].Name == w1.Name {
					c.Hosts[i].SSH.User = "pw"
				}
			}
		})
		o, _ := options(t, file)
		_, err := dryRun(t, o, bin, kube)
		he := hostErr(err, w1.Name)
		var se *sshx.SudoError
		if he == nil || he.Phase != "connect" || !errors.As(he, &se) || se.User != "pw" {
			t.Fatalf("err = %v, want %s failing in connect with *sshx.SudoError for pw", err, w1.Name)
		}
		if hostErr(err, m1.Name) != nil {
			t.Errorf("%s failed too: %v", m1.Name, err)
		}
		for _, want := range []string{w1.Name, "pw", "password", "NOPASSWD"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not say %q", err, want)
			}
		}
	})

	t.Run("bastion", func(t *testing.T) {
		file := rewrite(t, l, func(c *v1alpha1.Cluster) {
			for i := range c.Hosts {
				if c.Hosts[i].Name == w1.Name {
					c.Hosts[i].SSH.Bastion = &v1alpha1.Bastion{Address: m1.Address.String(), User: "root"}
				}
			}
		})
		since := onHost(t, l, w1.Name, "date '+%Y-%m-%d %H:%M:%S'")
		o, _ := options(t, file)
		if _, err := dryRun(t, o, bin, kube); err != nil {
			t.Fatal(err)
		}
		log := onHost(t, l, w1.Name, "journalctl --no-pager -o cat -u ssh --since '"+since+"' | grep Accepted")
		if !strings.Contains(log, "from "+m1.Address.String()+" ") {
			t.Errorf("%s was not reached from the bastion %s:\n%s", w1.Name, m1.Name, log)
		}
	})

	t.Run("keys from ssh-agent", func(t *testing.T) {
		sock := startAgent(t, l.SSHKey)
		file := rewrite(t, l, func(c *v1alpha1.Cluster) { c.SSH.IdentityFile = "" })
		o, _ := options(t, file)
		if _, err := dryRun(t, o, bin, kube); err == nil || !strings.Contains(err.Error(), "no SSH key") {
			t.Errorf("without a key or an agent: %v", err)
		}
		o, _ = options(t, file)
		o.AgentSocket = sock
		if _, err := dryRun(t, o, bin, kube); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("unknown host", func(t *testing.T) {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		all, err := os.ReadFile(l.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		var keep []string
		for _, line := range strings.Split(strings.TrimSpace(string(all)), "\n") {
			if !strings.Contains(line, w1.Address.String()) {
				keep = append(keep, line)
			}
		}
		if err := os.WriteFile(kh, []byte(strings.Join(keep, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		file := rewrite(t, l, func(c *v1alpha1.Cluster) { c.SSH.KnownHosts = kh })
		w1m, _ := l.Status.Host(w1.Name)
		want := w1m.HostKey
		o, _ := options(t, file)
		_, err = dryRun(t, o, bin, kube)
		var unknown *sshx.UnknownHostError
		if he := hostErr(err, w1.Name); he == nil || he.Phase != "connect" || !errors.As(he, &unknown) || unknown.Fingerprint != want {
			t.Fatalf("err = %v, want %s refused as unknown with fingerprint %s", err, w1.Name, want)
		}
		if !strings.Contains(err.Error(), "--accept-new-host-keys") || !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not give the fingerprint and say how to accept it", err)
		}
		if hostErr(err, m1.Name) != nil {
			t.Errorf("%s failed too: %v", m1.Name, err)
		}
		o, _ = options(t, file)
		o.AcceptNewHostKeys = true
		if _, err := dryRun(t, o, bin, kube); err != nil {
			t.Fatal(err)
		}
		// Now recorded: a strict connection works.
		cfg := l.SSHConfig(t, w1.Name, "")
		cfg.KnownHosts = kh
		c, err := sshx.Dial(context.Background(), cfg)
		if err != nil {
			t.Fatalf("after accepting: %v", err)
		}
		c.Close()
	})

	t.Run("an unreachable host is named, the others go on", func(t *testing.T) {
		l.Cut(t, w2.Name)
		t.Cleanup(func() { l.Heal(t, w2.Name) })
		o, _ := options(t, l.ClusterFile)
		o.ConnectTimeout = 2 * time.Second
		start := time.Now()
		res, err := dryRun(t, o, bin, kube)
		he := hostErr(err, w2.Name)
		if he == nil || he.Phase != "connect" || !strings.Contains(err.Error(), w2.Address.String()) {
			t.Fatalf("err = %v, want %s failing in connect, naming its address", err, w2.Name)
		}
		t.Logf("%s unreachable after %s: %v", w2.Name, time.Since(start).Round(100*time.Millisecond), he)
		for _, h := range l.Hosts {
			if h.Name != w2.Name && hostErr(err, h.Name) != nil {
				t.Errorf("%s failed too: %v", h.Name, err)
			}
		}
		if !slices.ContainsFunc(res.Plan, func(s PlannedStep) bool { return s.Host == m1.Name && s.Phase == "init" && s.Change }) {
			t.Errorf("the other hosts were not planned: %+v", res.Plan)
		}
	})
}

// startAgent serves an ssh-agent holding the key at path on a socket of
// the test's own.
func startAgent(t *testing.T, path string) string {
	t.Helper()
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ssh.ParseRawPrivateKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = agent.ServeAgent(keyring, c)
			}()
		}
	}()
	return sock
}
