package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/master"
)

// Paths on a host, beyond the ones hostfs names.
const (
	// applyDir holds what a step hands to a command on the host as a file
	// (the cluster file for init); it is on tmpfs, root's only, and
	// emptied after each use.
	applyDir = hostfs.RunDir + "/apply"
	// lockFile serialises the mutating commands of concurrent or
	// abandoned applies on one host: a join whose SSH session died may
	// still be running, and the next apply waits for it instead of racing
	// it.
	lockFile = hostfs.RunDir + "/apply.lock"
	// lockWait bounds that wait.
	lockWait = 15 * time.Minute
)

// hashCacheFile is where a host's anvil keeps the sha256 of the binaries
// it verified (HashFiles): beside the versions, removed with them.
const hashCacheFile = "/opt/anvil/sha256-cache.json"

// binDir is where a version's binaries live on a host.
func binDir(version string) string { return path.Join(hostfs.BinDir, version) }

// anvilOn is the anvil binary of version on a host.
func anvilOn(version string) string { return path.Join(binDir(version), images.AnvilBinary) }

// nodeStateFile and clusterFileOnHost are what init and join leave: the
// node's role and name once it completed, and the cluster file it ran with.
const (
	nodeStateFile     = master.NodeStateFile
	clusterFileOnHost = master.ClusterFile
)

// locked wraps a shell command so that it runs holding the host's apply
// lock, so two applies (or an abandoned one) never change a host at once.
func locked(cmd string) string {
	return fmt.Sprintf("mkdir -p %s && exec flock -w %d %s sh -c %s",
		hostfs.RunDir, int(lockWait.Seconds()), lockFile, sshx.ShellQuote(cmd))
}

// lineWriter calls fn with every complete line written to it, for the
// progress of a remote command.
type lineWriter struct {
	fn  func(string)
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(w.buf[:i])); line != "" {
			w.fn(line)
		}
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// runLogged runs cmd as root on h, showing each line the command writes
// to stderr as the step's detail and keeping the last lines for the error,
// which names the command by what (the command line itself may be a long
// script). stdout goes to out; nil discards it (it may hold a token).
func (r *run) runLogged(ctx context.Context, h *host, what, cmd string, stdin io.Reader, out io.Writer) error {
	var last []string
	lw := &lineWriter{fn: func(line string) {
		h.task.Detail("%s", line)
		r.log.Debug("remote", "host", h.Name, "cmd", what, "line", line)
		last = append(last, line)
		if len(last) > 10 {
			last = last[1:]
		}
	}}
	err := h.client.RunAsRoot(ctx, cmd, stdin, out, lw)
	var exit *sshx.ExitError
	var sudo *sshx.SudoError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		return &CommandError{What: what, Exit: exit, Output: last}
	case errors.As(err, &sudo):
		return err
	case errors.Is(err, sshx.ErrNoExitStatus):
		// The message would otherwise carry the whole script.
		return fmt.Errorf("%s: the connection was lost before it ended (it may still be running there; the next apply waits for it): %w", what, sshx.ErrNoExitStatus)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	return fmt.Errorf("%s: %w", what, err)
}

// CommandError is a command anvil ran on a host that failed.
type CommandError struct {
	// What names the command ("anvil join").
	What string
	Exit *sshx.ExitError
	// Output is the end of what it wrote to stderr.
	Output []string
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s exited with status %d", e.What, e.Exit.Status)
	if e.Exit.Signal != "" {
		msg = fmt.Sprintf("%s was killed by signal %s", e.What, e.Exit.Signal)
	}
	if len(e.Output) > 0 {
		msg += ":\n    " + strings.Join(e.Output, "\n    ")
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Exit }
