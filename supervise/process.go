package supervise

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// One supervised process's life: wait for what it requires, start it as its
// spec says, watch its health, restart it with a doubling backoff when it
// ends, stop it with SIGTERM then SIGKILL.

// keepRunning starts p once its requirements are ready and restarts it
// whenever it ends, until ctx ends.
func (s *supervisor) keepRunning(ctx context.Context, p *supervised) {
	for _, r := range p.spec.Requires {
		for {
			dep := s.find(r)
			if dep == nil {
				select {
				case <-time.After(200 * time.Millisecond):
					continue
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-dep.ready:
			case <-ctx.Done():
				return
			}
			break
		}
	}
	delay := max(p.spec.Restart.Delay, 100*time.Millisecond)
	maxDelay := max(p.spec.Restart.MaxDelay, delay)
	for ctx.Err() == nil {
		startedAt := time.Now()
		exit := s.runOnce(ctx, p)
		if ctx.Err() != nil {
			return
		}
		ran := time.Since(startedAt)
		if ran >= s.o.StableAfter {
			delay = max(p.spec.Restart.Delay, 100*time.Millisecond)
		}
		s.log.Warn("process exited, restarting", "process", p.spec.Name, "exit", exit, "ran", ran.Round(time.Millisecond), "backoff", delay)
		p.set(func(st *ProcStatus) {
			st.State, st.PID, st.LastExit, st.LastExitAt = ProcBackoff, 0, exit, time.Now()
		})
		s.writeStatus()
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
		delay = min(delay*2, maxDelay)
		p.set(func(st *ProcStatus) { st.Restarts++ })
	}
}

// runOnce starts p and waits for it to end; it returns how it ended.
func (s *supervisor) runOnce(ctx context.Context, p *supervised) string {
	cmd, logf, err := s.command(p)
	if err != nil {
		return err.Error()
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- %s: anvil supervisor starting %s\n", time.Now().Format(time.RFC3339), strings.Join(append([]string{p.spec.Path}, p.spec.Args...), " "))
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logf, "---- start failed: %v\n", err)
		return "start failed: " + err.Error()
	}
	pid := cmd.Process.Pid
	if p.spec.LimitNOFILE > 0 {
		lim := unix.Rlimit{Cur: p.spec.LimitNOFILE, Max: p.spec.LimitNOFILE}
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			s.log.Warn("cannot set the open-file limit", "process", p.spec.Name, "err", err)
		}
	}
	p.mu.Lock()
	stopping := p.stopping
	if !stopping {
		p.cmd = cmd
		p.status.State, p.status.PID, p.status.StartedAt = ProcStarting, pid, time.Now()
	}
	p.mu.Unlock()
	if stopping {
		// A stop came between the loop's check and the start.
		syscall.Kill(-pid, syscall.SIGKILL)
	} else {
		writePID(filepath.Join(s.dir, p.spec.Name+".pid"), pid, processExe(pid))
		s.writeStatus()
		s.log.Info("process started", "process", p.spec.Name, "pid", pid)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	go s.watchHealth(watchCtx, p, pid)
	err = cmd.Wait()
	stopWatch()
	os.Remove(filepath.Join(s.dir, p.spec.Name+".pid"))
	p.mu.Lock()
	p.cmd = nil
	p.status.Ready = false
	p.mu.Unlock()
	exit := describeExit(err)
	fmt.Fprintf(logf, "---- %s: %s\n", time.Now().Format(time.RFC3339), exit)
	return exit
}

// command prepares p's exec.Cmd: its own process group (so a stop reaches
// its children too), its log file, its user and its environment.
func (s *supervisor) command(p *supervised) (*exec.Cmd, *os.File, error) {
	spec := p.spec
	if err := os.MkdirAll(filepath.Dir(spec.LogFile), 0o700); err != nil {
		return nil, nil, err
	}
	rotateLog(spec.LogFile, 64<<20)
	logf, err := os.OpenFile(spec.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open log %s: %w", spec.LogFile, err)
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, spec.Env...)
	if spec.Notify {
		cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+s.notifyPath(spec.Name))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if spec.User != "" {
		cred, err := lookupCredential(spec.User)
		if err != nil {
			logf.Close()
			return nil, nil, err
		}
		cmd.SysProcAttr.Credential = cred
	}
	return cmd, logf, nil
}

// watchHealth marks p ready when its readiness probe (or its READY=1)
// first succeeds, and kills it when its liveness probe fails three times in
// a row once it has been ready, so that keepRunning restarts it.
func (s *supervisor) watchHealth(ctx context.Context, p *supervised, pid int) {
	ready := p.spec.Health.Ready
	live := p.spec.Health.Live
	if ready == nil && !p.spec.Notify {
		p.markReady()
		s.writeStatus()
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !p.isReady() {
			if ready != nil && s.probe.Check(ctx, *ready, 2*time.Second) == nil {
				p.markReady()
				s.writeStatus()
				tick.Reset(5 * time.Second)
			}
			continue
		}
		if live == nil {
			continue
		}
		if err := s.probe.Check(ctx, *live, 5*time.Second); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			s.log.Warn("liveness probe failed", "process", p.spec.Name, "failures", failures, "err", err)
			if failures >= 3 {
				s.log.Error("process is not alive, killing it for a restart", "process", p.spec.Name, "pid", pid)
				syscall.Kill(-pid, syscall.SIGKILL)
				return
			}
			continue
		}
		failures = 0
	}
}

// listenNotify gives p a private sd_notify socket; READY=1 on it marks p
// ready, exactly as systemd treats a Type=notify unit.
func (s *supervisor) listenNotify(p *supervised) error {
	path := s.notifyPath(p.spec.Name)
	os.Remove(path)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify socket for %s: %w", p.spec.Name, err)
	}
	os.Chmod(path, 0o600)
	p.notify = c
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == "READY=1" {
					p.markReady()
					s.writeStatus()
				}
			}
		}
	}()
	return nil
}

func (s *supervisor) closeNotify(p *supervised) {
	if p.notify != nil {
		p.notify.Close()
		os.Remove(s.notifyPath(p.spec.Name))
		p.notify = nil
	}
}

func (s *supervisor) notifyPath(name string) string { return filepath.Join(s.dir, name+".notify") }

// stop ends p's process: SIGTERM to its process group, SIGKILL after
// StopTimeout. Once called, p never starts again.
func (s *supervisor) stop(p *supervised) {
	p.mu.Lock()
	p.stopping = true
	cmd := p.cmd
	p.status.State = ProcStopped
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	pid := cmd.Process.Pid
	s.log.Info("stopping process", "process", p.spec.Name, "pid", pid)
	syscall.Kill(-pid, syscall.SIGTERM)
	if !waitGone(pid, s.o.StopTimeout) {
		s.log.Warn("process did not stop in time, killing it", "process", p.spec.Name, "pid", pid)
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func (p *supervised) set(f func(*ProcStatus)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.status)
}

func (p *supervised) markReady() {
	p.mu.Lock()
	p.status.Ready = true
	if p.status.State == ProcStarting {
		p.status.State = ProcRunning
	}
	p.mu.Unlock()
	p.once.Do(func() { close(p.ready) })
}

func (p *supervised) isReady() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status.Ready
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return "exited with status " + strconv.Itoa(ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "exited with status 0"
}

func rotateLog(path string, limit int64) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > limit {
		os.Rename(path, path+".1")
	}
}

func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
