package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"anvil.dev/anvil/internal/fsutil"
)

// nodeSysctl is a host kernel setting the node stack in a lab machine
// needs and cannot make itself: /proc/sys is read-only in a machine, and
// these are not per network namespace but global to the host.
type nodeSysctl struct{ Name, Value string }

// nodeSysctls are what the kubelet sets at start (or, with
// protectKernelDefaults, insists on); it cannot write them in a machine and
// gives up: "Failed to start ContainerManager: open
// /proc/sys/vm/overcommit_memory: read-only file system".
// kernel.panic_on_oops=1 turns any oops on this host into a panic and
// kernel.panic=10 reboots it 10 s later: that is why they are said out
// loud and given back.
func nodeSysctls() []nodeSysctl {
	return []nodeSysctl{
		{"vm.overcommit_memory", "1"},
		{"kernel.panic", "10"},
		{"kernel.panic_on_oops", "1"},
	}
}

// sysctlRecord is what the labs changed in the host's kernel settings and
// what each was before. It lives in the state directory (a crash must not
// lose the values to restore) while any lab exists on the host.
type sysctlRecord struct {
	Changed []sysctlChange `json:"changed"`
}

type sysctlChange struct {
	Name     string    `json:"name"`
	Previous string    `json:"previous"`
	Set      string    `json:"set"`
	At       time.Time `json:"at"`
}

// hostSysctls sets and restores kernel settings under procSys (/proc/sys,
// or a directory of files in tests), recording the changes in record.
type hostSysctls struct {
	procSys  string
	record   string
	progress func(string)
}

func (m *Manager) sysctls() hostSysctls {
	return hostSysctls{procSys: "/proc/sys", record: filepath.Join(m.stateDir, ".host-sysctls.json"), progress: m.progress}
}

func (h hostSysctls) path(name string) string {
	return filepath.Join(h.procSys, strings.ReplaceAll(name, ".", "/"))
}

func (h hostSysctls) read(name string) (string, error) {
	b, err := os.ReadFile(h.path(name))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (h hostSysctls) write(name, value string) error {
	// /proc/sys files take a plain write; no temporary file and rename.
	if err := os.WriteFile(h.path(name), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

func (h hostSysctls) load() (sysctlRecord, error) {
	var r sysctlRecord
	data, err := os.ReadFile(h.record)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("read %s: %w", h.record, err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("read %s: %w", h.record, err)
	}
	return r, nil
}

func (h hostSysctls) save(r sysctlRecord) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", h.record, err)
	}
	return fsutil.WriteFile(h.record, append(data, '\n'), 0o600, 0o700)
}

func (r *sysctlRecord) find(name string) *sysctlChange {
	for i := range r.Changed {
		if r.Changed[i].Name == name {
			return &r.Changed[i]
		}
	}
	return nil
}

// hold sets each of want that differs, recording its previous value
// before changing it. A value already recorded keeps its first previous
// value: that is the host's own.
func (h hostSysctls) hold(want []nodeSysctl) error {
	r, err := h.load()
	if err != nil {
		return err
	}
	var said []string
	for _, w := range want {
		cur, err := h.read(w.Name)
		if err != nil {
			return err
		}
		if cur == w.Value {
			continue
		}
		recorded := r.find(w.Name) != nil
		if !recorded {
			r.Changed = append(r.Changed, sysctlChange{Name: w.Name, Previous: cur, Set: w.Value, At: time.Now().UTC()})
			if err := h.save(r); err != nil {
				return err
			}
		}
		if err := h.write(w.Name, w.Value); err != nil {
			if !recorded {
				r.Changed = r.Changed[:len(r.Changed)-1]
				err = errors.Join(err, h.save(r))
			}
			return err
		}
		said = append(said, fmt.Sprintf("%s %s→%s", w.Name, cur, w.Value))
	}
	if len(said) > 0 {
		say(h.progress, "lab: changed host kernel settings the kubelet in lab machines needs and cannot set there: %s; they are global to this host, and restored when the last lab goes down (record: %s)",
			strings.Join(said, ", "), h.record)
	}
	return nil
}

// release gives back what hold changed: each setting still at the value a
// lab set goes back to its previous one; one that someone changed since is
// theirs and stays. The caller makes sure no lab is left.
func (h hostSysctls) release() error {
	r, err := h.load()
	if err != nil || len(r.Changed) == 0 {
		if err == nil {
			err = removeIfExists(h.record)
		}
		return err
	}
	var restored, left []string
	for _, c := range r.Changed {
		cur, err := h.read(c.Name)
		if err != nil {
			return err
		}
		if cur != c.Set {
			left = append(left, fmt.Sprintf("%s at %s (changed since a lab set %s)", c.Name, cur, c.Set))
			continue
		}
		if err := h.write(c.Name, c.Previous); err != nil {
			return err
		}
		restored = append(restored, c.Name+"="+c.Previous)
	}
	if len(restored) > 0 {
		say(h.progress, "lab: no lab left: restored host kernel settings %s", strings.Join(restored, ", "))
	}
	if len(left) > 0 {
		say(h.progress, "lab: left host kernel settings %s", strings.Join(left, ", "))
	}
	return removeIfExists(h.record)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// holdSysctls sets the node sysctls before a machine boots, under the lock
// all labs share.
func (m *Manager) holdSysctls(ctx context.Context) error {
	lock, err := lockFile(ctx, m.globalLock(), nil)
	if err != nil {
		return err
	}
	defer lock.unlock()
	return m.sysctls().hold(nodeSysctls())
}

// globalLock is the lock all labs of the state directory share: subnets
// are chosen and host settings changed under it.
func (m *Manager) globalLock() string { return filepath.Join(m.stateDir, ".lock") }
