package supervise

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
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
