package component

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// Process is what anvil's supervisor needs to run a component itself
// (the process layout): the command line, where its output goes, how it is
// restarted and how to tell it is healthy.
type Process struct {
	Name string   `json:"name"`
	Path string   `json:"path"`
	Args []string `json:"args"`
	// Env is KEY=value pairs added to a minimal environment, in order.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory.
	Dir string `json:"dir"`
	// LogFile receives the process's stdout and stderr.
	LogFile string `json:"logFile"`
	// User runs the process; empty means the supervisor's own user.
	User    string        `json:"user,omitempty"`
	Restart RestartPolicy `json:"restart"`
	// Requires are started (and ready) first and stopped last.
	Requires []string `json:"requires,omitempty"`
	// Notify says the process speaks sd_notify, so the supervisor can offer
	// it a NOTIFY_SOCKET and wait for READY=1.
	Notify      bool   `json:"notify,omitempty"`
	LimitNOFILE uint64 `json:"limitNOFILE,omitempty"`
	Health      Health `json:"health"`
	// KeepChildren: stopping the process signals it alone, not its process
	// group (see Spec.KeepChildren).
	KeepChildren bool `json:"keepChildren,omitempty"`
}

// ProcessOptions are where a supervised process lives on this machine.
type ProcessOptions struct {
	// LogDir holds one NAME.log per process.
	LogDir string
	// Dir is the working directory; empty means "/".
	Dir string
}

// ProcessSpec renders c for anvil's supervisor.
func ProcessSpec(c Spec, o ProcessOptions) (Process, error) {
	if err := c.Validate(); err != nil {
		return Process{}, err
	}
	if !filepath.IsAbs(o.LogDir) {
		return Process{}, fmt.Errorf("component %s: log directory %q is not absolute", c.Name, o.LogDir)
	}
	dir := o.Dir
	if dir == "" {
		dir = "/"
	}
	p := Process{
		Name:         c.Name,
		Path:         c.Binary,
		Args:         append(slices.Clone(c.Subcommand), c.ArgStrings()...),
		Dir:          dir,
		LogFile:      filepath.Join(o.LogDir, c.Name+".log"),
		User:         c.User,
		Restart:      c.Restart,
		Requires:     slices.Clone(c.Requires),
		Notify:       c.Notify,
		LimitNOFILE:  c.LimitNOFILE,
		Health:       c.Health,
		KeepChildren: c.KeepChildren,
	}
	for _, e := range c.Env {
		p.Env = append(p.Env, e.Name+"="+e.Value)
	}
	return p, nil
}

// ProcessJSON renders c's process spec as indented JSON, the file the
// process layout writes for review (and that a supervisor may read back).
func ProcessJSON(c Spec, o ProcessOptions) ([]byte, error) {
	p, err := ProcessSpec(c, o)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", c.Name, err)
	}
	return append(b, '\n'), nil
}

// MarshalJSON writes the delays as Go durations ("2s"), which people read
// better than nanoseconds.
func (r RestartPolicy) MarshalJSON() ([]byte, error) {
	return json.Marshal(restartJSON{Delay: r.Delay.String(), MaxDelay: r.MaxDelay.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *RestartPolicy) UnmarshalJSON(b []byte) error {
	var j restartJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var out RestartPolicy
	for _, f := range []struct {
		s   string
		dst *time.Duration
	}{{j.Delay, &out.Delay}, {j.MaxDelay, &out.MaxDelay}} {
		if f.s == "" {
			continue
		}
		d, err := time.ParseDuration(f.s)
		if err != nil {
			return fmt.Errorf("restart policy: %w", err)
		}
		*f.dst = d
	}
	*r = out
	return nil
}

type restartJSON struct {
	Delay    string `json:"delay,omitempty"`
	MaxDelay string `json:"maxDelay,omitempty"`
}
