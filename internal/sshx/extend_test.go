package sshx

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func TestJumpHost(t *testing.T) {
	bastion := newFixture(t)
	target := newFixture(t)
	cfg := target.config()
	jump := bastion.config()
	cfg.Jump = &jump
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Output(context.Background(), "hello")
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("Output = %q, %v", out, err)
	}
	if n := bastion.srv.conns.Load(); n != 1 {
		t.Errorf("bastion saw %d connections, want 1", n)
	}
	jc := c.jump
	c.Close()
	select {
	case <-jc.Done():
	case <-time.After(5 * time.Second):
		t.Error("closing the client left its bastion connection open")
	}
}

func TestJumpHostKeyIsChecked(t *testing.T) {
	bastion := newFixture(t)
	target := newFixture(t)
	if err := os.WriteFile(bastion.knownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := target.config()
	jump := bastion.config()
	cfg.Jump = &jump
	_, err := Dial(context.Background(), cfg)
	var unknown *UnknownHostError
	if !errors.As(err, &unknown) || unknown.Host != bastion.srv.addr {
		t.Fatalf("err = %v, want the bastion %s refused as unknown", err, bastion.srv.addr)
	}
	if target.srv.conns.Load() != 0 {
		t.Error("reached the target through a bastion whose key was not checked")
	}
}

// flakyProxy forwards to addr, dropping the first drop connections at once
// (as sshd does beyond MaxStartups).
func flakyProxy(t *testing.T, addr string, drop int32) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := &atomic.Int32{}
	acceptAll(t, ln, func(c net.Conn) {
		defer c.Close()
		if seen.Add(1) <= drop {
			return
		}
		up, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, c) }()
		_, _ = io.Copy(c, up)
	})
	return ln.Addr().String(), seen
}

func TestDialRetriesWhatMayPass(t *testing.T) {
	f := newFixture(t)
	proxy, seen := flakyProxy(t, f.srv.addr, 2)
	// The proxy's address must be trusted with the server's key.
	if err := AppendKnownHosts(f.knownHosts, []KnownHost{{Addresses: []string{proxy}, Key: f.srv.hostKeys[0].PublicKey()}}); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.Addr = proxy
	cfg.Attempts = 1
	_, err := Dial(context.Background(), cfg)
	if err == nil || !Transient(err) {
		t.Fatalf("one attempt: err = %v, want a transient failure", err)
	}
	cfg.Attempts, cfg.RetryDelay = 4, 10*time.Millisecond
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("four attempts: %v", err)
	}
	c.Close()
	if n := seen.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (2 dropped, 1 good)", n)
	}
}

func TestDialDoesNotRetryRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, f fixture, cfg *Config)
	}{
		{"unknown host", func(t *testing.T, f fixture, cfg *Config) {
			if err := os.WriteFile(f.knownHosts, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"changed key", func(t *testing.T, f fixture, cfg *Config) {
			if err := WriteKnownHosts(f.knownHosts, []KnownHost{{Addresses: []string{f.srv.addr}, Key: newKey(t).Signer.PublicKey()}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"wrong client key", func(t *testing.T, f fixture, cfg *Config) {
			cfg.IdentityFiles = nil
			cfg.Signers = []ssh.Signer{newKey(t).Signer}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.config()
			cfg.Attempts, cfg.RetryDelay = 5, time.Millisecond
			tc.spoil(t, f, &cfg)
			if _, err := Dial(context.Background(), cfg); err == nil || Transient(err) {
				t.Fatalf("err = %v, want a permanent failure", err)
			}
			if n := f.srv.conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1: refusals are not retried", n)
			}
		})
	}
}

func TestSudo(t *testing.T) {
	dir := t.TempDir()
	client := newKey(t)
	identity := filepath.Join(dir, "id")
	if err := client.Write(identity); err != nil {
		t.Fatal(err)
	}
	hostKey := newKey(t).Signer
	dial := func(t *testing.T, o serverOptions) *Client {
		srv := startServerWith(t, o, client.Signer.PublicKey(), hostKey)
		kh := filepath.Join(t.TempDir(), "known_hosts")
		if err := WriteKnownHosts(kh, []KnownHost{{Addresses: []string{srv.addr}, Key: hostKey.PublicKey()}}); err != nil {
			t.Fatal(err)
		}
		c, err := Dial(context.Background(), Config{Addr: srv.addr, User: "debian", IdentityFiles: []string{identity}, KnownHosts: kh, Sudo: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("passwordless", func(t *testing.T) {
		c := dial(t, serverOptions{})
		if err := c.CheckSudo(context.Background()); err != nil {
			t.Fatal(err)
		}
		out, err := c.OutputAsRoot(context.Background(), "hello")
		if err != nil || string(out) != "hello\n" {
			t.Fatalf("OutputAsRoot = %q, %v", out, err)
		}
		_, err = c.OutputAsRoot(context.Background(), "exit 3")
		var exit *ExitError
		if !errors.As(err, &exit) || exit.Cmd != "exit 3" || exit.Status != 3 || exit.Stderr != "failing on purpose" {
			t.Fatalf("err = %v, want *ExitError for %q", err, "exit 3")
		}
	})
	t.Run("needs a password", func(t *testing.T) {
		c := dial(t, serverOptions{sudoNeedsPassword: true})
		err := c.CheckSudo(context.Background())
		var se *SudoError
		if !errors.As(err, &se) || se.User != "debian" || se.Host != c.Addr() {
			t.Fatalf("err = %v, want *SudoError for debian", err)
		}
		for _, want := range []string{"debian", "password", "NOPASSWD", c.Addr()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not say %q", err, want)
			}
		}
		if _, err := c.OutputAsRoot(context.Background(), "hello"); !errors.As(err, &se) {
			t.Errorf("OutputAsRoot: %v, want *SudoError", err)
		}
	})
}

func TestRootCommand(t *testing.T) {
	root := &Client{}
	if got := root.RootCommand("id -u"); got != "id -u" {
		t.Errorf("root login: %q", got)
	}
	sudo := &Client{sudo: true}
	if got, want := sudo.RootCommand("echo 'a b'"), `LC_ALL=C sudo -n -- sh -c 'echo '\''a b'\'''`; got != want {
		t.Errorf("sudo: %q, want %q", got, want)
	}
}

func TestShellQuoteRoundTrips(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, s := range []string{"", "plain", "two words", "it's", `"dq" $HOME \ * ; |`, "new\nline", "/opt/anvil/bin/v1.37.2/anvil"} {
		out, err := exec.Command(sh, "-c", "printf %s "+ShellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("ShellQuote(%q) = %s: sh printed %q, %v", s, ShellQuote(s), out, err)
		}
	}
}

func TestAgentKeys(t *testing.T) {
	dir := t.TempDir()
	client := newKey(t)
	keyring := agent.NewKeyring()
	priv, err := ssh.ParseRawPrivateKey(client.Private)
	if err != nil {
		t.Fatal(err)
	}
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv, Comment: "test"}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	acceptAll(t, ln, func(c net.Conn) {
		defer c.Close()
		_ = agent.ServeAgent(keyring, c)
	})

	if _, err := DialAgent(""); err == nil || !strings.Contains(err.Error(), "SSH_AUTH_SOCK") {
		t.Errorf("no socket: %v", err)
	}
	a, err := DialAgent(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	signers, err := a.Signers()
	if err != nil || len(signers) != 1 {
		t.Fatalf("Signers = %d, %v", len(signers), err)
	}
	hostKey := newKey(t).Signer
	srv := startServer(t, client.Signer.PublicKey(), hostKey)
	kh := filepath.Join(dir, "known_hosts")
	if err := WriteKnownHosts(kh, []KnownHost{{Addresses: []string{srv.addr}, Key: hostKey.PublicKey()}}); err != nil {
		t.Fatal(err)
	}
	c, err := Dial(context.Background(), Config{Addr: srv.addr, Signers: signers, KnownHosts: kh})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Run(context.Background(), "exit 0", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCancelDoesNotWaitForACommandThatIgnoresSignals(t *testing.T) {
	c := newFixture(t).dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Run(ctx, "hang", nil, nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > cancelGrace+2*time.Second {
		t.Errorf("a cancelled Run took %s", d)
	}
}
