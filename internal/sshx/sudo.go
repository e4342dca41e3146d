package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// SudoError means the login cannot become root without a password (or not
// at all), so nothing that needs root can run over this connection.
type SudoError struct {
	Host string
	User string
	// Said is what sudo printed.
	Said string
}

func (e *SudoError) Error() string {
	return fmt.Sprintf("%s: user %s cannot run commands as root without a password (sudo -n said %q); "+
		"give it a NOPASSWD rule in /etc/sudoers.d, or log in as root", e.Host, e.User, e.Said)
}

// ShellQuote quotes s as one word for a POSIX shell.
func ShellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// RootCommand is cmd as the connection runs it as root: unchanged for a
// root login, through `sudo -n` (which fails instead of asking for a
// password) when Config.Sudo is set. sudo's messages are asked for in
// English because RunAsRoot recognises them.
func (c *Client) RootCommand(cmd string) string {
	if !c.sudo {
		return cmd
	}
	return "LC_ALL=C sudo -n -- sh -c " + ShellQuote(cmd)
}

// RunAsRoot is Run with cmd run as root (RootCommand). When sudo refuses,
// the error is *SudoError; a failing command is *ExitError naming cmd as
// given, not the sudo wrapper.
func (c *Client) RunAsRoot(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	if !c.sudo {
		return c.Run(ctx, cmd, stdin, stdout, stderr)
	}
	t := &tailWriter{w: stderr, max: 1024}
	err := c.Run(ctx, c.RootCommand(cmd), stdin, stdout, t)
	return c.sudoError(err, cmd, t.String())
}

// OutputAsRoot is Output with cmd run as root.
func (c *Client) OutputAsRoot(ctx context.Context, cmd string) ([]byte, error) {
	var out, errOut strings.Builder
	err := c.RunAsRoot(ctx, cmd, nil, &out, &errOut)
	var exit *ExitError
	if errors.As(err, &exit) {
		exit.Stderr = tail(strings.TrimSpace(errOut.String()), 512)
	}
	return []byte(out.String()), err
}

// CheckSudo makes sure commands can run as root: nothing to check for a
// root login, `sudo -n true` otherwise, failing with *SudoError.
func (c *Client) CheckSudo(ctx context.Context) error {
	if !c.sudo {
		return nil
	}
	return c.RunAsRoot(ctx, "true", nil, nil, nil)
}

// sudoError turns sudo's own refusals into *SudoError and names the
// command as the caller gave it.
func (c *Client) sudoError(err error, cmd, stderr string) error {
	var exit *ExitError
	if !errors.As(err, &exit) {
		return err
	}
	for _, said := range []string{"a password is required", "a terminal is required", "is not in the sudoers file", "may not run sudo", "is not allowed to execute"} {
		if exit.Status == 1 && strings.Contains(stderr, "sudo: ") && strings.Contains(stderr, said) {
			return &SudoError{Host: c.addr, User: c.user, Said: strings.TrimSpace(lastLine(stderr))}
		}
	}
	exit.Cmd = cmd
	return err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// tailWriter passes writes on to w (when not nil) and keeps the last max
// bytes.
type tailWriter struct {
	w   io.Writer
	max int
	mu  sync.Mutex
	b   []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	t.mu.Unlock()
	if t.w == nil {
		return len(p), nil
	}
	return t.w.Write(p)
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
