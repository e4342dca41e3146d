package sshx

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/crypto/ssh"
)

// WindowSize is a terminal's size in character cells.
type WindowSize struct{ Width, Height int }

// Terminal is the local terminal an interactive shell is attached to. The
// caller puts it in raw mode; this package only speaks the protocol.
type Terminal struct {
	// Term is the TERM value to ask for ("xterm-256color").
	Term string
	Size WindowSize
	// Resize delivers new sizes as the local terminal changes; nil if it
	// never does.
	Resize <-chan WindowSize
}

// Shell runs an interactive login shell on a pseudo-terminal and returns
// when it ends, with the shell's exit status as *ExitError.
func (c *Client) Shell(ctx context.Context, t Terminal, stdin io.Reader, stdout, stderr io.Writer) error {
	s, err := c.conn.NewSession()
	if err != nil {
		return fmt.Errorf("%s: open session: %w", c.addr, err)
	}
	defer s.Close()
	term := t.Term
	if term == "" {
		term = "xterm"
	}
	modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	if err := s.RequestPty(term, t.Size.Height, t.Size.Width, modes); err != nil {
		return fmt.Errorf("%s: request terminal: %w", c.addr, err)
	}
	s.Stdout, s.Stderr = stdout, stderr
	w, err := s.StdinPipe()
	if err != nil {
		return fmt.Errorf("%s: stdin: %w", c.addr, err)
	}
	go func() {
		_, _ = io.Copy(w, stdin)
		_ = w.Close()
	}()
	if err := s.Shell(); err != nil {
		return fmt.Errorf("%s: start shell: %w", c.addr, err)
	}
	stop := make(chan struct{})
	defer close(stop)
	if t.Resize != nil {
		go func() {
			for {
				select {
				case <-stop:
					return
				case sz := <-t.Resize:
					_ = s.WindowChange(sz.Height, sz.Width)
				}
			}
		}()
	}
	return c.wait(ctx, s, "shell")
}
