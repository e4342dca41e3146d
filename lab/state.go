package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/fsutil"
)

const stateVersion = 1

// state is what a lab remembers between commands, in LAB/state.json. It is
// written before anything it describes is made, so `down` after a crash
// knows what to look for; `down` also finds what state never recorded.
type state struct {
	Version  int            `json:"version"`
	Name     string         `json:"name"`
	Subnet   netip.Prefix   `json:"subnet"`
	Bridge   string         `json:"bridge"`
	Base     string         `json:"base"` // the lower layer every machine's tree sits on
	Created  time.Time      `json:"created"`
	Machines []machineState `json:"machines"`
}

type machineState struct {
	Name      string        `json:"name"`
	Role      v1alpha1.Role `json:"role"`
	Address   netip.Addr    `json:"address"`
	Veth      string        `json:"veth"`
	MachineID string        `json:"machineID"`
	// HostKey is the machine's ed25519 public key, authorized_keys format.
	HostKey string `json:"hostKey"`
	// PID and StartTime identify the systemd-nspawn process; the start
	// time (clock ticks since boot) tells a recycled PID from ours.
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"startTime,omitempty"`
}

func (s *state) machine(name string) (*machineState, bool) {
	for i := range s.Machines {
		if s.Machines[i].Name == name {
			return &s.Machines[i], true
		}
	}
	return nil, false
}

func (s *state) counts() (masters, workers int) {
	for _, m := range s.Machines {
		if m.Role == v1alpha1.RoleWorker {
			workers++
		} else {
			masters++
		}
	}
	return masters, workers
}

// paths of one lab's files under the state directory.
type paths struct{ dir string }

func (p paths) state() string { return filepath.Join(p.dir, "state.json") }

// lock sits beside the lab's directory, not in it, so `down` can remove
// the directory while holding it.
func (p paths) lock() string               { return p.dir + ".lock" }
func (p paths) key() string                { return filepath.Join(p.dir, "id_ed25519") }
func (p paths) knownHosts() string         { return filepath.Join(p.dir, "known_hosts") }
func (p paths) backupKey() string          { return filepath.Join(p.dir, "backup.key") }
func (p paths) clusterFile() string        { return filepath.Join(p.dir, "cluster.yaml") }
func (p paths) machine(name string) string { return filepath.Join(p.dir, "machines", name) }
func (p paths) upper(name string) string   { return filepath.Join(p.machine(name), "upper") }
func (p paths) work(name string) string    { return filepath.Join(p.machine(name), "work") }
func (p paths) root(name string) string    { return filepath.Join(p.machine(name), "root") }
func (p paths) console(name string) string { return filepath.Join(p.machine(name), "console.log") }

// containerd is the host directory a machine has as /var/lib/containerd.
func (p paths) containerd(name string) string { return filepath.Join(p.machine(name), "containerd") }

// ErrNoLab means the named lab does not exist.
var ErrNoLab = errors.New("no such lab")

func loadState(p paths) (*state, error) {
	data, err := os.ReadFile(p.state())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoLab
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read lab state %s: %w", p.state(), err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("lab state %s has version %d, this anvil reads %d: run `anvil lab down --name %s` with the anvil that made it", p.state(), s.Version, stateVersion, s.Name)
	}
	return &s, nil
}

func saveState(p paths, s *state) error {
	s.Version = stateVersion
	sort.SliceStable(s.Machines, func(i, j int) bool { return s.Machines[i].Address.Less(s.Machines[j].Address) })
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	return fsutil.WriteFile(p.state(), append(data, '\n'), 0o600, 0o700)
}

// flock holds an exclusive advisory lock on a file. Locks die with the
// process, so a crashed anvil never leaves one behind.
type flock struct{ f *os.File }

// lockFile takes the lock on path, waiting while another anvil holds it;
// waiting is called once if it has to wait.
func lockFile(ctx context.Context, path string, waiting func()) (*flock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	told := false
	for gone := 0; ; {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if errors.Is(err, fs.ErrNotExist) && gone < 10 {
			// The last lab's `down` removed the state directory in between.
			gone++
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return nil, fmt.Errorf("lock %s: %w", path, err)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// The holder may have removed the file before letting go (down
			// does): then this lock guards nothing, and we start over.
			if held, herr := f.Stat(); herr == nil {
				if now, serr := os.Stat(path); serr == nil && os.SameFile(held, now) {
					return &flock{f: f}, nil
				}
			}
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (l *flock) unlock() {
	if l != nil && l.f != nil {
		l.f.Close() // closing drops the lock
	}
}
