package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// The status file, Dir/status.json: the supervisor rewrites it whole on
// every change; other commands read it.

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
