package supervise

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"anvil.dev/anvil/internal/hostfs"
)

// Controlling a root's supervisor from outside it: start it detached (or
// make it reload), ask whether it runs, stop it.

// StartOptions says how to start (or refresh) the supervisor of a root.
type StartOptions struct {
	Root hostfs.Root
	// Anvil is the anvil binary that runs `anvil supervise`.
	Anvil string
	// ExtraArgs are passed to `anvil supervise` (e.g. a log level).
	ExtraArgs []string
	// Wait bounds how long Start waits for a new supervisor to take its lock.
	Wait time.Duration
}

// Start makes a supervisor run the specs under root: when one already runs
// it is told to reload them (SIGHUP); otherwise `anvil supervise` is started
// detached, in its own session, with its output in LogFile, so it outlives
// the command that called Start.
func Start(o StartOptions) (pid int, err error) {
	dir := o.Root.Path(Dir)
	if pid, err := readPIDFile(filepath.Join(dir, pidFile)); err == nil && alive(pid) && holdsLock(dir) {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return 0, fmt.Errorf("reload supervisor %d: %w", pid, err)
		}
		return pid, nil
	}
	logPath := o.Root.Path(LogFile)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	args := append([]string{"supervise", "--root", rootArg(o.Root)}, o.ExtraArgs...)
	cmd := exec.Command(o.Anvil, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start supervisor: %w", err)
	}
	pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	wait := o.Wait
	if wait == 0 {
		wait = 10 * time.Second
	}
	deadline := time.After(wait)
	for {
		select {
		case err := <-exited:
			return 0, fmt.Errorf("supervisor exited at once (%v); see %s", describeExit(err), logPath)
		case <-deadline:
			return pid, fmt.Errorf("supervisor %d did not take its lock within %s; see %s", pid, wait, logPath)
		case <-time.After(20 * time.Millisecond):
			if p, err := readPIDFile(filepath.Join(dir, pidFile)); err == nil && p == pid && holdsLock(dir) {
				// The supervisor lives on; nobody waits for it here.
				cmd.Process.Release()
				return pid, nil
			}
		}
	}
}

func rootArg(r hostfs.Root) string {
	if r == "" {
		return "/"
	}
	return string(r)
}

// Running reports whether a supervisor runs under root.
func Running(root hostfs.Root) bool {
	dir := root.Path(Dir)
	pid, err := readPIDFile(filepath.Join(dir, pidFile))
	return err == nil && alive(pid) && holdsLock(dir)
}

// Stop stops the supervisor running under root (which stops its processes
// in reverse order) and waits for it to exit; then it kills any process
// whose PID file outlived it. It is a no-op when none runs.
func Stop(ctx context.Context, root hostfs.Root, timeout time.Duration) error {
	dir := root.Path(Dir)
	pid, err := readPIDFile(filepath.Join(dir, pidFile))
	if err == nil && pid > 0 && alive(pid) && holdsLock(dir) {
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitGoneCtx(ctx, pid, timeout) {
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	for _, p := range paths {
		if filepath.Base(p) == pidFile {
			os.Remove(p)
			continue
		}
		killRecorded(p, 5*time.Second, func(int) {})
	}
	return nil
}

// holdsLock reports whether some process holds the supervisor lock in dir.
func holdsLock(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}
