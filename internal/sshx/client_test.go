package sshx

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// testServer is a real x/crypto/ssh server on 127.0.0.1 that understands a
// few commands:
//
//	hello      "hello" on stdout, "warn" on stderr, exit 0
//	exit N     exit status N
//	cat        copy stdin to stdout until EOF, exit 0
//	sleep      run until signalled, then die of that signal
//	hang       ignore signals and never end
//	shell      (pty + shell request) print the pty's term and size, exit 0
//	LC_ALL=C sudo -n -- sh -c CMD
//	           run CMD, or refuse as sudo does when the server was told
//	           that sudo needs a password
//
// It also forwards direct-tcpip channels to loopback, as a bastion does.
type testServer struct {
	addr     string
	hostKeys []ssh.Signer
	// conns counts accepted TCP connections.
	conns *atomic.Int32
}

// serverOptions change how a test server behaves.
type serverOptions struct {
	sudoNeedsPassword bool
}

func newKey(t *testing.T) *KeyPair {
	t.Helper()
	k, err := NewEd25519("test")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func startServer(t *testing.T, client ssh.PublicKey, hostKeys ...ssh.Signer) *testServer {
	t.Helper()
	return startServerWith(t, serverOptions{}, client, hostKeys...)
}

// acceptAll serves every connection ln accepts with handle, each in a
// goroutine of its own, until the test ends: then the listener is closed
// and the accept loop waited for.
func acceptAll(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
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
			go handle(c)
		}
	}()
}

func startServerWith(t *testing.T, opts serverOptions, client ssh.PublicKey, hostKeys ...ssh.Signer) *testServer {
	t.Helper()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), client.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	for _, k := range hostKeys {
		cfg.AddHostKey(k)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := &atomic.Int32{}
	acceptAll(t, ln, func(conn net.Conn) {
		conns.Add(1)
		serveConn(conn, cfg, opts)
	})
	return &testServer{addr: ln.Addr().String(), hostKeys: hostKeys, conns: conns}
}

func serveConn(conn net.Conn, cfg *ssh.ServerConfig, opts serverOptions) {
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		conn.Close()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs) // keep-alives get "false", which still is an answer
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go serveSession(ch, creqs, opts)
		case "direct-tcpip":
			go forward(nc)
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "no")
		}
	}
}

// forward serves a direct-tcpip channel to a loopback address only.
func forward(nc ssh.NewChannel) {
	var p struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil || p.Host != "127.0.0.1" {
		_ = nc.Reject(ssh.Prohibited, "loopback only")
		return
	}
	conn, err := net.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))))
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	go func() {
		_, _ = io.Copy(ch, conn)
		_ = ch.CloseWrite()
	}()
	_, _ = io.Copy(conn, ch)
	conn.Close()
	ch.Close()
}

func serveSession(ch ssh.Channel, reqs <-chan *ssh.Request, opts serverOptions) {
	signalled := make(chan string, 1)
	var term string
	var width, height uint32
	for req := range reqs {
		switch req.Type {
		case "pty-req":
			var p struct {
				Term          string
				Width, Height uint32
				PW, PH        uint32
				Modes         string
			}
			_ = ssh.Unmarshal(req.Payload, &p)
			term, width, height = p.Term, p.Width, p.Height
			_ = req.Reply(true, nil)
		case "shell":
			_ = req.Reply(true, nil)
			go func() {
				fmt.Fprintf(ch, "term=%s size=%dx%d\r\n", term, width, height)
				exit(ch, 0)
			}()
		case "exec":
			var p struct{ Cmd string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			go runCommand(ch, p.Cmd, signalled, opts)
		case "signal":
			var p struct{ Signal string }
			_ = ssh.Unmarshal(req.Payload, &p)
			select {
			case signalled <- p.Signal:
			default:
			}
		default:
			_ = req.Reply(false, nil)
		}
	}
}

func runCommand(ch ssh.Channel, cmd string, signalled <-chan string, opts serverOptions) {
	const sudo = "LC_ALL=C sudo -n -- sh -c "
	if inner, ok := strings.CutPrefix(cmd, sudo); ok {
		if opts.sudoNeedsPassword {
			fmt.Fprintln(ch.Stderr(), "sudo: a password is required")
			exit(ch, 1)
			return
		}
		cmd = strings.Trim(inner, "'")
	}
	f := strings.Fields(cmd)
	switch {
	case cmd == "true":
		exit(ch, 0)
	case cmd == "hello":
		fmt.Fprintln(ch, "hello")
		fmt.Fprintln(ch.Stderr(), "warn")
		exit(ch, 0)
	case len(f) == 2 && f[0] == "exit":
		n, _ := strconv.Atoi(f[1])
		fmt.Fprintln(ch.Stderr(), "failing on purpose")
		exit(ch, uint32(n))
	case cmd == "cat":
		_, _ = io.Copy(ch, ch)
		exit(ch, 0)
	case cmd == "hang":
		// Like OpenSSH without a terminal: signals are not delivered and
		// the session stays until the command ends, here never.
		<-make(chan struct{})
	case cmd == "sleep":
		sig := <-signalled
		_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{Signal: sig}))
		ch.Close()
	default:
		exit(ch, 127)
	}
}

func exit(ch ssh.Channel, status uint32) {
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	ch.Close()
}

// fixture is a server, a client key and a known_hosts file that trusts the
// server.
type fixture struct {
	srv        *testServer
	identity   string
	knownHosts string
}

func newFixture(t *testing.T, hostKeys ...ssh.Signer) fixture {
	t.Helper()
	dir := t.TempDir()
	client := newKey(t)
	identity := filepath.Join(dir, "id_ed25519")
	if err := client.Write(identity); err != nil {
		t.Fatal(err)
	}
	if len(hostKeys) == 0 {
		hostKeys = []ssh.Signer{newKey(t).Signer}
	}
	srv := startServer(t, client.Signer.PublicKey(), hostKeys...)
	kh := filepath.Join(dir, "known_hosts")
	if err := WriteKnownHosts(kh, []KnownHost{{Addresses: []string{srv.addr}, Key: hostKeys[0].PublicKey()}}); err != nil {
		t.Fatal(err)
	}
	return fixture{srv: srv, identity: identity, knownHosts: kh}
}

func (f fixture) config() Config {
	return Config{Addr: f.srv.addr, IdentityFiles: []string{f.identity}, KnownHosts: f.knownHosts, Timeout: 5 * time.Second}
}

func (f fixture) dial(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(context.Background(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRunAcceptsKnownHost(t *testing.T) {
	c := newFixture(t).dial(t)
	var out, errOut bytes.Buffer
	if err := c.Run(context.Background(), "hello", nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello\n" || errOut.String() != "warn\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errOut.String())
	}
}

func TestUnknownHostIsRefused(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(f.knownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Dial(context.Background(), f.config())
	var unknown *UnknownHostError
	if !errors.As(err, &unknown) {
		t.Fatalf("err = %v, want *UnknownHostError", err)
	}
	want := Fingerprint(f.srv.hostKeys[0].PublicKey())
	if unknown.Host != f.srv.addr || unknown.Fingerprint != want || unknown.KnownHosts != f.knownHosts {
		t.Errorf("got %+v, want host %s fingerprint %s", unknown, f.srv.addr, want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not show the fingerprint", err)
	}
}

func TestChangedHostKeyIsRefused(t *testing.T) {
	f := newFixture(t)
	old := newKey(t).Signer.PublicKey()
	if err := WriteKnownHosts(f.knownHosts, []KnownHost{{Addresses: []string{f.srv.addr}, Key: old}}); err != nil {
		t.Fatal(err)
	}
	_, err := Dial(context.Background(), f.config())
	var changed *HostKeyChangedError
	if !errors.As(err, &changed) {
		t.Fatalf("err = %v, want *HostKeyChangedError", err)
	}
	offered := Fingerprint(f.srv.hostKeys[0].PublicKey())
	if changed.Host != f.srv.addr || changed.Fingerprint != offered || len(changed.Known) != 1 || changed.Known[0] != Fingerprint(old) {
		t.Errorf("got %+v", changed)
	}
	if len(changed.Lines) != 1 || changed.Lines[0] != f.knownHosts+":1" {
		t.Errorf("lines %v", changed.Lines)
	}
	for _, want := range []string{f.srv.addr, offered, Fingerprint(old)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %s", err, want)
		}
	}
}

func TestHostKeyAlgorithmFollowsKnownHosts(t *testing.T) {
	// The server has an ECDSA key it prefers and the ed25519 key known_hosts
	// records: the client must ask for the recorded kind.
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecSigner, err := ssh.NewSignerFromKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ed := newKey(t).Signer
	f := newFixture(t, ed, ecSigner)
	c := f.dial(t)
	if err := c.Run(context.Background(), "exit 0", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestWrongClientKeyFails(t *testing.T) {
	f := newFixture(t)
	other := filepath.Join(t.TempDir(), "other")
	if err := newKey(t).Write(other); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.IdentityFiles = []string{other}
	_, err := Dial(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("err = %v, want an authentication failure", err)
	}
	var unknown *UnknownHostError
	var changed *HostKeyChangedError
	if errors.As(err, &unknown) || errors.As(err, &changed) {
		t.Errorf("an auth failure reported as a host key problem: %v", err)
	}
}

func TestExitStatus(t *testing.T) {
	c := newFixture(t).dial(t)
	for _, tc := range []struct {
		cmd    string
		status int // 0: success
	}{
		{"exit 0", 0},
		{"exit 1", 1},
		{"exit 42", 42},
		{"no-such-command", 127},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			err := c.Run(context.Background(), tc.cmd, nil, nil, io.Discard)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			var exit *ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("err = %v, want *ExitError", err)
			}
			if exit.Status != tc.status || exit.Cmd != tc.cmd || exit.Host != c.Addr() {
				t.Errorf("got %+v, want status %d", exit, tc.status)
			}
		})
	}
}

func TestOutputKeepsStderrForTheError(t *testing.T) {
	c := newFixture(t).dial(t)
	_, err := c.Output(context.Background(), "exit 3")
	var exit *ExitError
	if !errors.As(err, &exit) || exit.Stderr != "failing on purpose" || !strings.Contains(err.Error(), "failing on purpose") {
		t.Fatalf("err = %v (%+v)", err, exit)
	}
	out, err := c.Output(context.Background(), "hello")
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("Output = %q, %v", out, err)
	}
}

func TestStdinIsStreamed(t *testing.T) {
	c := newFixture(t).dial(t)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- c.Run(context.Background(), "cat", inR, outW, nil)
		outW.Close()
	}()
	lines := bufio.NewReader(outR)
	// Each line must come back before the next is written: the input is
	// streamed, not gathered until EOF.
	for i := range 3 {
		want := fmt.Sprintf("line %d\n", i)
		if _, err := io.WriteString(inW, want); err != nil {
			t.Fatal(err)
		}
		got, err := lines.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRunDoesNotWaitForEndlessStdin(t *testing.T) {
	// A terminal's stdin never ends; Run must return when the command does.
	c := newFixture(t).dial(t)
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background(), "exit 0", r, nil, nil) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run waited for stdin to end")
	}
}

func TestCancelKillsCommand(t *testing.T) {
	c := newFixture(t).dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Run(ctx, "sleep", nil, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s", d)
	}
	// The connection is still good for the next command.
	if err := c.Run(context.Background(), "exit 0", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestShellGetsTerminal(t *testing.T) {
	c := newFixture(t).dial(t)
	var out bytes.Buffer
	err := c.Shell(context.Background(), Terminal{Term: "xterm-256color", Size: WindowSize{Width: 100, Height: 30}}, strings.NewReader(""), &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "term=xterm-256color size=100x30\r\n" {
		t.Errorf("shell saw %q", got)
	}
}

func TestDialTimeout(t *testing.T) {
	// A listener that accepts but never speaks SSH.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			conns <- c
		}
	}()
	t.Cleanup(func() {
		select {
		case c := <-conns:
			c.Close()
		default:
		}
	})
	f := newFixture(t)
	cfg := f.config()
	cfg.Addr = ln.Addr().String()
	cfg.Timeout = 300 * time.Millisecond
	start := time.Now()
	if _, err := Dial(context.Background(), cfg); err == nil {
		t.Fatal("dial succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timeout took %s", d)
	}
}

// freezer forwards TCP to target until frozen, then forwards nothing: a
// host that vanished without closing anything.
type freezer struct {
	addr   string
	frozen atomic.Bool
}

func startFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{addr: ln.Addr().String()}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if f.frozen.Load() {
						<-stop
						return
					}
					if n > 0 {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						dst.Close()
						return
					}
				}
			}
			go pipe(out, in)
			go pipe(in, out)
			go func() { <-stop; in.Close(); out.Close() }()
		}
	}()
	return f
}

func TestKeepAliveDropsVanishedHost(t *testing.T) {
	fx := newFixture(t)
	fr := startFreezer(t, fx.srv.addr)
	// known_hosts names the host as dialled: the freezer's address.
	if err := WriteKnownHosts(fx.knownHosts, []KnownHost{{Addresses: []string{fr.addr}, Key: fx.srv.hostKeys[0].PublicKey()}}); err != nil {
		t.Fatal(err)
	}
	cfg := fx.config()
	cfg.Addr = fr.addr
	cfg.KeepAliveInterval = 50 * time.Millisecond
	cfg.KeepAliveMax = 2
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Alive: several keep-alive rounds pass without dropping it.
	time.Sleep(300 * time.Millisecond)
	select {
	case <-c.Done():
		t.Fatal("connection dropped while the host answered")
	default:
	}
	fr.frozen.Store(true)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection to a vanished host still open")
	}
	if err := c.Run(context.Background(), "exit 0", nil, nil, nil); err == nil {
		t.Error("Run on a dropped connection succeeded")
	}
}

func TestKnownHostsFiles(t *testing.T) {
	key := newKey(t).Signer.PublicKey()
	other := newKey(t).Signer.PublicKey()
	path := filepath.Join(t.TempDir(), "sub", "known_hosts")
	if err := WriteKnownHosts(path, []KnownHost{{Addresses: []string{"node1", "10.0.0.5"}, Key: key}}); err != nil {
		t.Fatal(err)
	}
	if err := AppendKnownHosts(path, []KnownHost{{Addresses: []string{"10.0.0.6:2222"}, Key: other}}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "node1,10.0.0.5 ssh-ed25519 ") || !strings.HasPrefix(lines[1], "[10.0.0.6]:2222 ssh-ed25519 ") {
		t.Errorf("known_hosts:\n%s", data)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
}

func TestKeyPairFiles(t *testing.T) {
	k := newKey(t)
	path := filepath.Join(t.TempDir(), "id")
	if err := k.Write(path); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, path + ".pub": 0o644} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, %v; want %v", p, fi.Mode(), err, mode)
		}
	}
	s, err := LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.PublicKey().Marshal(), k.Signer.PublicKey().Marshal()) {
		t.Error("loaded key differs")
	}
	pub, comment, _, _, err := ssh.ParseAuthorizedKey(k.Public)
	if err != nil || comment != "test" || !bytes.Equal(pub.Marshal(), s.PublicKey().Marshal()) {
		t.Errorf("public line %q: %v", k.Public, err)
	}
}

func TestConfigErrors(t *testing.T) {
	f := newFixture(t)
	for name, mutate := range map[string]func(*Config){
		"no known_hosts":   func(c *Config) { c.KnownHosts = "" },
		"no keys":          func(c *Config) { c.IdentityFiles = nil },
		"missing identity": func(c *Config) { c.IdentityFiles = []string{"/nonexistent/key"} },
		"no port":          func(c *Config) { c.Addr = "127.0.0.1" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := f.config()
			mutate(&cfg)
			if _, err := Dial(context.Background(), cfg); err == nil {
				t.Fatal("dial succeeded")
			}
		})
	}
}
