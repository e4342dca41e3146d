// Package supervise is the process layout's supervisor: anvil itself runs
// the components (etcd, the apiserver, the controller-manager, the
// scheduler, the agent) on machines without systemd, and in fast tests.
//
// One supervisor runs per root, detached in its own session so it outlives
// the command that started it. Its life cycle:
//
//	Start ─► lock + PID file ─► kill stale children ─► start specs in
//	dependency order (a process starts once what it requires is ready)
//	  ▲                                   │ exits: restart, doubling backoff
//	  └── SIGHUP: rescan specs: start new, stop removed, restart changed
//	SIGTERM ─► stop every process in reverse order ─► remove PID/status
package supervise

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// Dir is where the supervisor keeps its lock, PID files, notify sockets and
// status, under the runtime root.
const Dir = hostfs.RunDir + "/supervisor"

// Files in Dir.
const (
	lockFile   = "supervisor.lock"
	pidFile    = "supervisor.pid"
	statusFile = "status.json"
)

// LogFile is the supervisor's own log under the runtime root.
const LogFile = hostfs.LogDir + "/supervisor.log"

// ProcState is what a supervised process is doing.
type ProcState string

const (
	ProcStarting ProcState = "starting"
	ProcRunning  ProcState = "running"
	ProcBackoff  ProcState = "backoff"
	ProcStopped  ProcState = "stopped"
)

// ProcStatus is one process in the status file, which `anvil status` and
// `anvil init` read.
type ProcStatus struct {
	Name      string    `json:"name"`
	State     ProcState `json:"state"`
	PID       int       `json:"pid,omitempty"`
	Ready     bool      `json:"ready"`
	Restarts  int       `json:"restarts"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	// LastExit describes the last time the process ended.
	LastExit   string    `json:"lastExit,omitempty"`
	LastExitAt time.Time `json:"lastExitAt,omitzero"`
	LogFile    string    `json:"logFile"`
}

// Status is the whole status file.
type Status struct {
	PID       int          `json:"pid"`
	StartedAt time.Time    `json:"startedAt"`
	Processes []ProcStatus `json:"processes"`
}

// Process returns the status of the process called name.
func (s *Status) Process(name string) (ProcStatus, bool) {
	for _, p := range s.Processes {
		if p.Name == name {
			return p, true
		}
	}
	return ProcStatus{}, false
}

// Options configures Run.
type Options struct {
	// Root is the runtime root; specs are read from
	// Root/etc/anvil/processes and state kept in Root/run/anvil/supervisor.
	Root hostfs.Root
	Log  *slog.Logger
	// StopTimeout is how long a process gets after SIGTERM before SIGKILL.
	StopTimeout time.Duration
	// StableAfter is how long a process must run before its restart backoff
	// resets to the first delay.
	StableAfter time.Duration
}

// Run supervises until ctx ends, then stops everything in reverse order.
func Run(ctx context.Context, o Options) error {
	s, err := newSupervisor(o)
	if err != nil {
		return err
	}
	defer s.release()
	return s.run(ctx)
}

type supervisor struct {
	o     Options
	log   *slog.Logger
	dir   string
	lock  *os.File
	probe *Prober

	mu      sync.Mutex
	procs   []*supervised // in start order
	started time.Time
}

type supervised struct {
	spec   component.Process
	ready  chan struct{} // closed once the process first became ready
	notify *net.UnixConn // sd_notify socket, for specs with Notify
	cancel context.CancelFunc
	done   chan struct{} // closed when its keepRunning loop has returned

	mu       sync.Mutex
	status   ProcStatus
	cmd      *exec.Cmd
	stopping bool
	once     sync.Once
}

func newSupervisor(o Options) (*supervisor, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 15 * time.Second
	}
	if o.StableAfter == 0 {
		o.StableAfter = time.Minute
	}
	s := &supervisor{o: o, log: o.Log.With("component", "supervisor"), dir: o.Root.Path(Dir), probe: NewProber(), started: time.Now()}
	specs, err := LoadSpecs(o.Root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", s.dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(s.dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		pid, _ := readPIDFile(filepath.Join(s.dir, pidFile))
		return nil, fmt.Errorf("another supervisor (pid %d) already runs under %s", pid, s.dir)
	}
	s.lock = lock
	if err := fsutil.WriteFile(filepath.Join(s.dir, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600, 0o700); err != nil {
		s.release()
		return nil, err
	}
	for _, spec := range specs {
		s.procs = append(s.procs, newSupervised(spec))
	}
	s.killStale()
	return s, nil
}

func newSupervised(spec component.Process) *supervised {
	return &supervised{
		spec:   spec,
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		status: ProcStatus{Name: spec.Name, State: ProcStopped, LogFile: spec.LogFile},
	}
}

func (s *supervisor) release() {
	s.probe.Close()
	for _, p := range s.procs {
		s.closeNotify(p)
	}
	os.Remove(filepath.Join(s.dir, pidFile))
	os.Remove(filepath.Join(s.dir, statusFile))
	if s.lock != nil {
		s.lock.Close()
	}
}

// LoadSpecs reads the process specs under root and orders them so that
// every process comes after what it requires.
func LoadSpecs(root hostfs.Root) ([]component.Process, error) {
	dir := root.Path(component.ProcessSpecDir)
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no process specs in %s", dir)
	}
	byName := map[string]component.Process{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var spec component.Process
		if err := json.Unmarshal(b, &spec); err != nil {
			return nil, fmt.Errorf("read process spec %s: %w", p, err)
		}
		byName[spec.Name] = spec
	}
	return orderByRequires(byName)
}

// orderByRequires is a topological sort with ties broken by name, so the
// order is the same every time.
func orderByRequires(byName map[string]component.Process) ([]component.Process, error) {
	var out []component.Process
	placed := map[string]bool{}
	for len(placed) < len(byName) {
		var next []string
		for name, spec := range byName {
			if placed[name] {
				continue
			}
			ok := true
			for _, r := range spec.Requires {
				if _, known := byName[r]; !known {
					return nil, fmt.Errorf("process %s requires %s, which has no spec", name, r)
				}
				if !placed[r] {
					ok = false
				}
			}
			if ok {
				next = append(next, name)
			}
		}
		if len(next) == 0 {
			return nil, errors.New("process specs require each other in a cycle")
		}
		slices.Sort(next)
		for _, n := range next {
			placed[n] = true
			out = append(out, byName[n])
		}
	}
	return out, nil
}

func (s *supervisor) run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	s.log.Info("supervisor started", "pid", os.Getpid(), "processes", len(s.procs))
	for _, p := range s.snapshot() {
		if err := s.launch(ctx, p); err != nil {
			return err
		}
	}
	s.writeStatus()
	for {
		select {
		case <-ctx.Done():
			s.log.Info("stopping all processes in reverse order")
			procs := s.snapshot()
			for i := len(procs) - 1; i >= 0; i-- {
				s.retire(procs[i])
			}
			s.writeStatus()
			return nil
		case <-hup:
			s.reload(ctx)
		}
	}
}

// reload makes the running set match the specs on disk: a removed spec's
// process is stopped, a changed one restarted, a new one started.
func (s *supervisor) reload(ctx context.Context) {
	specs, err := LoadSpecs(s.o.Root)
	if err != nil {
		s.log.Error("reload: keeping the running set", "err", err)
		return
	}
	want := map[string]component.Process{}
	for _, sp := range specs {
		want[sp.Name] = sp
	}
	cur := s.snapshot()
	for i := len(cur) - 1; i >= 0; i-- {
		p := cur[i]
		if sp, ok := want[p.spec.Name]; !ok || !reflect.DeepEqual(sp, p.spec) {
			s.log.Info("reload: stopping", "process", p.spec.Name, "removed", !ok)
			s.retire(p)
			s.remove(p)
		}
	}
	for _, sp := range specs {
		if s.find(sp.Name) != nil {
			continue
		}
		p := newSupervised(sp)
		s.mu.Lock()
		s.procs = append(s.procs, p)
		s.mu.Unlock()
		s.log.Info("reload: starting", "process", sp.Name)
		if err := s.launch(ctx, p); err != nil {
			s.log.Error("reload: cannot start", "process", sp.Name, "err", err)
		}
	}
	s.writeStatus()
}

func (s *supervisor) launch(ctx context.Context, p *supervised) error {
	if p.spec.Notify {
		if err := s.listenNotify(p); err != nil {
			return err
		}
	}
	pctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	go func() {
		defer close(p.done)
		s.keepRunning(pctx, p)
	}()
	return nil
}

// retire ends p's process and its restart loop, and waits for both.
func (s *supervisor) retire(p *supervised) {
	if p.cancel != nil {
		p.cancel()
	}
	s.stop(p)
	<-p.done
	s.closeNotify(p)
}

func (s *supervisor) remove(p *supervised) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = slices.DeleteFunc(s.procs, func(q *supervised) bool { return q == p })
}

func (s *supervisor) snapshot() []*supervised {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.procs)
}

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

// killStale ends processes a crashed supervisor left running: each PID file
// names a PID and the binary it ran, and only a live process still running
// that binary is killed, so a recycled PID is never hit.
func (s *supervisor) killStale() {
	paths, _ := filepath.Glob(filepath.Join(s.dir, "*.pid"))
	for _, f := range paths {
		if filepath.Base(f) == pidFile {
			continue
		}
		killRecorded(f, s.o.StopTimeout, func(pid int) {
			s.log.Warn("killing a process left by an earlier supervisor", "pidfile", f, "pid", pid)
		})
	}
}

// killRecorded kills the process group a PID file names, if that process
// still runs the binary the file recorded, then removes the file.
func killRecorded(pidFile string, timeout time.Duration, before func(int)) {
	pid, exe := readPIDFileWithExe(pidFile)
	if pid > 0 && exe != "" && alive(pid) && processExe(pid) == exe {
		before(pid)
		syscall.Kill(-pid, syscall.SIGTERM)
		if !waitGone(pid, timeout) {
			syscall.Kill(-pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
	}
	os.Remove(pidFile)
}

func (s *supervisor) find(name string) *supervised {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.spec.Name == name {
			return p
		}
	}
	return nil
}

func (s *supervisor) writeStatus() {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{PID: os.Getpid(), StartedAt: s.started}
	for _, p := range s.procs {
		p.mu.Lock()
		st.Processes = append(st.Processes, p.status)
		p.mu.Unlock()
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := fsutil.WriteFile(filepath.Join(s.dir, statusFile), append(b, '\n'), 0o600, 0o700); err != nil {
		s.log.Warn("cannot write status", "err", err)
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

// ReadStatus reads the status of the supervisor running under root; it
// fails when none runs.
func ReadStatus(root hostfs.Root) (*Status, error) {
	dir := root.Path(Dir)
	pid, err := readPIDFile(filepath.Join(dir, pidFile))
	if err != nil || !alive(pid) {
		return nil, fmt.Errorf("no supervisor runs under %s", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, statusFile))
	if err != nil {
		return nil, err
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, statusFile), err)
	}
	return &st, nil
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

func writePID(path string, pid int, exe string) {
	fsutil.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"+exe+"\n"), 0o600, 0o700)
}

func readPIDFile(path string) (int, error) {
	pid, _ := readPIDFileWithExe(path)
	if pid == 0 {
		return 0, fmt.Errorf("no pid in %s", path)
	}
	return pid, nil
}

func readPIDFileWithExe(path string) (int, string) {
	f, err := os.Open(path)
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var pid int
	var exe string
	if sc.Scan() {
		pid, _ = strconv.Atoi(strings.TrimSpace(sc.Text()))
	}
	if sc.Scan() {
		exe = strings.TrimSpace(sc.Text())
	}
	return pid, exe
}

// processExe is the binary a live process runs, as /proc reports it.
func processExe(pid int) string {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(exe, " (deleted)")
}

// Alive reports whether pid is a live, non-zombie process.
func Alive(pid int) bool { return alive(pid) }

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

func waitGone(pid int, timeout time.Duration) bool {
	return waitGoneCtx(context.Background(), pid, timeout)
}

func waitGoneCtx(ctx context.Context, pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !alive(pid)
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
