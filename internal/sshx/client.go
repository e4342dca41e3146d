package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout           = 15 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultKeepAliveMax      = 3
	DefaultRetryDelay        = 500 * time.Millisecond
	// cancelGrace bounds how long a cancelled Run waits for the server to
	// close the session.
	cancelGrace = 2 * time.Second
)

// Config says how to reach and trust one host.
type Config struct {
	// Addr is host:port.
	Addr string
	// User defaults to root.
	User string
	// IdentityFiles are private keys tried in order, after Signers.
	IdentityFiles []string
	// Signers are keys from elsewhere (ssh-agent, memory).
	Signers []ssh.Signer
	// KnownHosts is the known_hosts file the host key must be in. Required:
	// there is no way to turn checking off.
	KnownHosts string
	// Timeout bounds connecting plus the SSH handshake; the context may
	// bound it further.
	Timeout time.Duration
	// KeepAliveInterval is how often the server is asked whether it is
	// still there; after KeepAliveMax intervals without an answer the
	// connection is closed, so a host that vanished fails running commands
	// instead of hanging them. Negative disables keep-alives.
	KeepAliveInterval time.Duration
	KeepAliveMax      int
	// DialContext opens the transport; nil dials TCP directly. A jump host
	// is Config{DialContext: bastion.DialContext}.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Jump is a bastion to go through when DialContext is nil: Dial
	// connects to it first (checked as strictly as the target) and the
	// client closes it when it closes.
	Jump *Config
	// Sudo makes RunAsRoot and OutputAsRoot go through `sudo -n`, for a
	// login other than root that may become root without a password.
	Sudo bool
	// Attempts bounds how often Dial tries a connection that failed for a
	// reason that may pass (refused, reset, unreachable, timed out); host
	// key and authentication failures are never retried. 0 means 1.
	Attempts int
	// RetryDelay is the wait before the second attempt, doubled for each
	// one after it; 0 means DefaultRetryDelay.
	RetryDelay time.Duration
}

// Client is one authenticated SSH connection. It is safe for concurrent use:
// every Run opens its own session.
type Client struct {
	addr string
	user string
	sudo bool
	conn *ssh.Client
	// jump is the bastion this connection goes through, when Dial made it.
	jump *Client
	done chan struct{}
	once sync.Once
}

// Dial connects to cfg.Addr (through cfg.Jump when set), checks its host
// key against cfg.KnownHosts and authenticates, trying up to cfg.Attempts
// times while the failure is one that may pass. Host key refusals are
// *UnknownHostError, *HostKeyChangedError or *RevokedHostKeyError, for the
// bastion as for the target.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	attempts := max(cfg.Attempts, 1)
	delay := cfg.RetryDelay
	if delay <= 0 {
		delay = DefaultRetryDelay
	}
	for i := 1; ; i++ {
		c, err := dialVia(ctx, cfg)
		if err == nil || i >= attempts || ctx.Err() != nil || !Transient(err) {
			return c, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		delay *= 2
	}
}

// dialVia makes the connection to the bastion, when there is one, and then
// the one to the target through it.
func dialVia(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Jump == nil || cfg.DialContext != nil {
		return dialOnce(ctx, cfg, nil)
	}
	jcfg := *cfg.Jump
	jcfg.Attempts = 1 // the caller's loop retries the pair
	jump, err := dialVia(ctx, jcfg)
	if err != nil {
		return nil, fmt.Errorf("bastion for %s: %w", cfg.Addr, err)
	}
	cfg.DialContext = jump.DialContext
	c, err := dialOnce(ctx, cfg, jump)
	if err != nil {
		jump.Close()
		return nil, err
	}
	return c, nil
}

// dialOnce makes one connection; jump, when not nil, is the bastion it goes
// through, closed with it.
func dialOnce(ctx context.Context, cfg Config, jump *Client) (*Client, error) {
	if cfg.Addr == "" {
		return nil, errors.New("ssh: no address")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("ssh %s: address must be host:port: %w", cfg.Addr, err)
	}
	checker, err := newHostKeyChecker(cfg.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", cfg.Addr, err)
	}
	signers, err := loadSigners(cfg)
	if err != nil {
		return nil, err
	}
	user := cfg.User
	if user == "" {
		user = "root"
	}
	conn, err := handshake(ctx, cfg, checker, &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback:   checker.check,
		HostKeyAlgorithms: checker.algorithms(cfg.Addr),
	})
	if err != nil {
		return nil, err
	}
	c := &Client{addr: cfg.Addr, user: user, sudo: cfg.Sudo, conn: conn, jump: jump, done: make(chan struct{})}
	c.watch(cfg.KeepAliveInterval, cfg.KeepAliveMax)
	return c, nil
}

// loadSigners is cfg's signers, then the keys of its identity files; at
// least one.
func loadSigners(cfg Config) ([]ssh.Signer, error) {
	signers := append([]ssh.Signer(nil), cfg.Signers...)
	for _, f := range cfg.IdentityFiles {
		s, err := LoadIdentity(f)
		if err != nil {
			return nil, fmt.Errorf("ssh %s: %w", cfg.Addr, err)
		}
		signers = append(signers, s)
	}
	if len(signers) == 0 {
		return nil, fmt.Errorf("ssh %s: no keys: give an identity file or a signer", cfg.Addr)
	}
	return signers, nil
}

// handshake connects to cfg.Addr and runs the SSH handshake, both within
// cfg.Timeout. A host key the checker refused is the error it returns.
func handshake(ctx context.Context, cfg Config, checker *hostKeyChecker, conf *ssh.ClientConfig) (*ssh.Client, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	dial := cfg.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", cfg.Addr, err)
	}
	// The handshake has no context of its own: a deadline on the conn bounds
	// it, and cancelling ctx expires that deadline at once.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	sc, chans, reqs, err := ssh.NewClientConn(conn, cfg.Addr, conf)
	stop()
	if err != nil {
		conn.Close()
		if checker.err != nil {
			return nil, checker.err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh %s: %w", cfg.Addr, ctx.Err())
		}
		return nil, fmt.Errorf("ssh %s: %w", cfg.Addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// watch keeps c's connection alive (an interval of 0 means the default, a
// negative one none) and marks c done when the connection ends, closing
// its jump host with it.
func (c *Client) watch(interval time.Duration, maxMissed int) {
	if interval == 0 {
		interval = DefaultKeepAliveInterval
	}
	if maxMissed <= 0 {
		maxMissed = DefaultKeepAliveMax
	}
	if interval > 0 {
		go c.keepAlive(interval, maxMissed)
	}
	go func() {
		_ = c.conn.Wait()
		c.once.Do(func() { close(c.done) })
		if c.jump != nil {
			c.jump.Close()
		}
	}()
}

// keepAlive asks the server for a reply every interval and closes the
// connection when none came for maxMissed intervals.
func (c *Client) keepAlive(interval time.Duration, maxMissed int) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		replied := make(chan error, 1)
		go func() {
			_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
			replied <- err
		}()
		wait := time.NewTimer(interval * time.Duration(maxMissed))
		select {
		case err := <-replied:
			wait.Stop()
			if err != nil {
				c.conn.Close()
				return
			}
		case <-wait.C:
			c.conn.Close()
			return
		case <-c.done:
			wait.Stop()
			return
		}
	}
}

// Addr is the address the client dialled.
func (c *Client) Addr() string { return c.addr }

// SSH is the underlying connection, for what this package does not wrap
// (port forwarding, SFTP).
func (c *Client) SSH() *ssh.Client { return c.conn }

// DialContext opens a TCP connection from the remote host, which makes the
// client usable as a jump host (Config.DialContext).
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.conn.DialContext(ctx, network, addr)
}

// Done is closed when the connection ends, whoever ended it.
func (c *Client) Done() <-chan struct{} { return c.done }

// User is the login the client authenticated as.
func (c *Client) User() string { return c.user }

// Close ends the connection, and the bastion's when Dial made it.
func (c *Client) Close() error {
	err := c.conn.Close()
	c.once.Do(func() { close(c.done) })
	if c.jump != nil {
		c.jump.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ExitError is a remote command that ran and failed.
type ExitError struct {
	Host   string
	Cmd    string
	Status int    // exit status; -1 when killed by a signal
	Signal string // the signal's name without SIG, when killed by one
	// Stderr is the end of what the command wrote to stderr, when the
	// caller did not take stderr itself (Output).
	Stderr string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s: %q exited with status %d", e.Host, e.Cmd, e.Status)
	if e.Signal != "" {
		msg = fmt.Sprintf("%s: %q killed by signal %s", e.Host, e.Cmd, e.Signal)
	}
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// ErrNoExitStatus means the command's session ended without the server
// sending an exit status: the connection or the server went away.
var ErrNoExitStatus = errors.New("remote command ended without an exit status (connection lost?)")

// Run runs cmd (a shell command line, as ssh(1) sends it) and waits for it.
// stdin is streamed as it is read and closed at EOF; nil means no input.
// stdout and stderr may be nil to discard. A non-zero exit is *ExitError;
// cancelling ctx kills the command and returns ctx's error.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	s, err := c.conn.NewSession()
	if err != nil {
		return fmt.Errorf("%s: open session: %w", c.addr, err)
	}
	defer s.Close()
	s.Stdout, s.Stderr = stdout, stderr
	if stdin != nil {
		// Our own copy, not s.Stdin: Session.Wait waits for its stdin copier,
		// which would hang on a reader that never ends (a terminal) after the
		// command has already exited.
		w, err := s.StdinPipe()
		if err != nil {
			return fmt.Errorf("%s: stdin: %w", c.addr, err)
		}
		go func() {
			_, _ = io.Copy(w, stdin)
			_ = w.Close()
		}()
	}
	if err := s.Start(cmd); err != nil {
		return fmt.Errorf("%s: start %q: %w", c.addr, cmd, err)
	}
	return c.wait(ctx, s, cmd)
}

// Output runs cmd without input and returns its stdout; stderr is kept for
// the error message when the command fails.
func (c *Client) Output(ctx context.Context, cmd string) ([]byte, error) {
	var out, errOut strings.Builder
	err := c.Run(ctx, cmd, nil, &out, &errOut)
	var exit *ExitError
	if errors.As(err, &exit) {
		exit.Stderr = tail(strings.TrimSpace(errOut.String()), 512)
	}
	return []byte(out.String()), err
}

func (c *Client) wait(ctx context.Context, s *ssh.Session, cmd string) error {
	waited := make(chan error, 1)
	go func() { waited <- s.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGKILL)
		s.Close()
		// OpenSSH delivers no signal to a session without a terminal and
		// keeps the session until its command ends by itself, which may be
		// never: wait only briefly for the close to be acknowledged.
		t := time.NewTimer(cancelGrace)
		select {
		case <-waited:
		case <-t.C:
		}
		t.Stop()
		return fmt.Errorf("%s: %q: %w", c.addr, cmd, ctx.Err())
	}
	var exit *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		e := &ExitError{Host: c.addr, Cmd: cmd, Status: exit.ExitStatus(), Signal: exit.Signal()}
		if e.Signal != "" {
			e.Status = -1
		}
		return e
	case errors.As(err, &missing):
		return fmt.Errorf("%s: %q: %w", c.addr, cmd, ErrNoExitStatus)
	default:
		return fmt.Errorf("%s: %q: %w", c.addr, cmd, err)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return "…" + s[i:]
}
