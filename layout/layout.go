package layout

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/supervise"
)

// Options says where and how the components run.
type Options struct {
	Layout v1alpha1.Layout
	// Root is the runtime root of the process layout (the --root of a test).
	Root hostfs.Root
	// Anvil is the anvil binary that runs the supervisor.
	Anvil string
	// SupervisorArgs are extra flags for `anvil supervise`.
	SupervisorArgs []string
}

// Start makes the given components run; their files (units, manifests,
// process specs) must already be written. Starting what already runs is a
// no-op for systemd and a reload for the supervisor, so it is safe to repeat.
func Start(ctx context.Context, o Options, cs []component.Spec) error {
	switch o.Layout {
	case v1alpha1.LayoutProcess:
		if o.Anvil == "" {
			return errors.New("process layout: no anvil binary to run the supervisor")
		}
		_, err := supervise.Start(supervise.StartOptions{Root: o.Root, Anvil: o.Anvil, ExtraArgs: o.SupervisorArgs})
		return err
	case v1alpha1.LayoutSystemd:
		return startUnits(ctx, unitNames(cs))
	case v1alpha1.LayoutStaticPod:
		// The kubelet watches the manifests directory itself.
		return nil
	default:
		return fmt.Errorf("unknown layout %q", o.Layout)
	}
}

// Stop stops the given components in reverse order. For the process layout
// it stops the supervisor (and so everything it runs) when all=true, else
// it removes their specs and has the supervisor reload.
func Stop(ctx context.Context, o Options, cs []component.Spec, all bool) error {
	switch o.Layout {
	case v1alpha1.LayoutProcess:
		if all {
			return supervise.Stop(ctx, o.Root, 60*time.Second)
		}
		for _, c := range cs {
			p := filepath.Join(o.Root.Path(component.ProcessSpecDir), c.Name+".json")
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if supervise.Running(o.Root) {
			_, err := supervise.Start(supervise.StartOptions{Root: o.Root, Anvil: o.Anvil})
			return err
		}
		return nil
	case v1alpha1.LayoutSystemd:
		names := unitNames(cs)
		slices.Reverse(names)
		return stopUnits(ctx, names)
	case v1alpha1.LayoutStaticPod:
		return nil
	default:
		return fmt.Errorf("unknown layout %q", o.Layout)
	}
}

// Kill sends sig to every process of the given components now, without
// waiting for anything: for a stop that must not wait out a component's
// graceful shutdown (restore does not let an apiserver drain its watches
// for a minute). The supervisor or systemd still sees the process end.
func Kill(ctx context.Context, o Options, cs []component.Spec, sig syscall.Signal) error {
	switch o.Layout {
	case v1alpha1.LayoutProcess:
		st, err := supervise.ReadStatus(o.Root)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if p, ok := st.Process(c.Name); ok && p.PID > 0 {
				// Each supervised process leads its own process group.
				if err := syscall.Kill(-p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
					return fmt.Errorf("kill %s (pid %d): %w", c.Name, p.PID, err)
				}
			}
		}
		return nil
	case v1alpha1.LayoutSystemd:
		conn, err := dbus.NewSystemConnectionContext(ctx)
		if err != nil {
			return systemdError(err)
		}
		defer conn.Close()
		for _, u := range unitNames(cs) {
			if err := conn.KillUnitWithTarget(ctx, u, dbus.All, int32(sig)); err != nil {
				return fmt.Errorf("kill %s: %w", u, err)
			}
		}
		return nil
	default:
		return fmt.Errorf("layout %q: anvil does not run the processes itself", o.Layout)
	}
}

// UnitState is a systemd unit's state as `anvil status` shows it.
type UnitState struct {
	Name        string
	ActiveState string
	SubState    string
	// Restarts is systemd's NRestarts.
	Restarts uint32
	// Since is when the unit last entered the active state.
	Since   time.Time
	MainPID uint32
}

// SystemdStates reads the state of units through D-Bus.
func SystemdStates(ctx context.Context, units []string) ([]UnitState, error) {
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, systemdError(err)
	}
	defer conn.Close()
	list, err := conn.ListUnitsByNamesContext(ctx, units)
	if err != nil {
		return nil, err
	}
	var out []UnitState
	for _, u := range list {
		st := UnitState{Name: u.Name, ActiveState: u.ActiveState, SubState: u.SubState}
		if p, err := conn.GetServicePropertyContext(ctx, u.Name, "NRestarts"); err == nil {
			if v, ok := p.Value.Value().(uint32); ok {
				st.Restarts = v
			}
		}
		if p, err := conn.GetServicePropertyContext(ctx, u.Name, "MainPID"); err == nil {
			if v, ok := p.Value.Value().(uint32); ok {
				st.MainPID = v
			}
		}
		if p, err := conn.GetUnitPropertyContext(ctx, u.Name, "ActiveEnterTimestamp"); err == nil {
			if v, ok := p.Value.Value().(uint64); ok && v > 0 {
				st.Since = time.UnixMicro(int64(v))
			}
		}
		out = append(out, st)
	}
	return out, nil
}

func unitNames(cs []component.Spec) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.UnitName())
	}
	return out
}

// startUnits reloads systemd (the unit files are new or changed), enables
// the units so they come back after a reboot, and starts them in order,
// waiting for each start job. A unit that is already active and unchanged
// stays as it is.
func startUnits(ctx context.Context, units []string) error {
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return systemdError(err)
	}
	defer conn.Close()
	if err := conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %w", err)
	}
	if _, _, err := conn.EnableUnitFilesContext(ctx, units, false, true); err != nil {
		return fmt.Errorf("enable %s: %w", strings.Join(units, ", "), err)
	}
	for _, u := range units {
		// Starting an active unit is a no-op; a changed unit file of an
		// active unit is applied by the caller with Restart.
		ch := make(chan string, 1)
		if _, err := conn.StartUnitContext(ctx, u, "replace", ch); err != nil {
			return fmt.Errorf("start %s: %w", u, err)
		}
		select {
		case res := <-ch:
			if res != "done" {
				return fmt.Errorf("start %s: job %s (see journalctl -u %s)", u, res, u)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func stopUnits(ctx context.Context, units []string) error {
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return systemdError(err)
	}
	defer conn.Close()
	var errs []error
	for _, u := range units {
		ch := make(chan string, 1)
		if _, err := conn.StopUnitContext(ctx, u, "replace", ch); err != nil {
			if !isNoSuchUnit(err) {
				errs = append(errs, fmt.Errorf("stop %s: %w", u, err))
			}
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if _, err := conn.DisableUnitFilesContext(ctx, units, false); err != nil && !isNoSuchUnit(err) {
		errs = append(errs, fmt.Errorf("disable units: %w", err))
	}
	return errors.Join(errs...)
}

// isNoSuchUnit reports whether systemd answered that a unit (or its unit
// file) does not exist: stopping or disabling it is then already done.
func isNoSuchUnit(err error) bool {
	var de godbus.Error
	return errors.As(err, &de) && (de.Name == "org.freedesktop.systemd1.NoSuchUnit" || de.Name == "org.freedesktop.DBus.Error.FileNotFound")
}

// Reload tells systemd that unit files changed or went away.
func Reload(ctx context.Context) error {
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return systemdError(err)
	}
	defer conn.Close()
	return conn.ReloadContext(ctx)
}

func systemdError(err error) error {
	return fmt.Errorf("cannot reach systemd over D-Bus (is systemd PID 1 here? use --layout process on machines without it): %w", err)
}

// Replaced are those of cs whose running process runs a replaced binary
// (supervise.ExeReplaced against the component's Binary): an upgrade put
// a new build in its place, and only a restart runs it. Systemd units
// are found by their main PID, supervised processes by the supervisor's
// status; static pods run the kubelet's images and are not looked at.
func Replaced(ctx context.Context, o Options, cs []component.Spec) ([]component.Spec, error) {
	pids := map[string]int{}
	switch o.Layout {
	case v1alpha1.LayoutProcess:
		if !supervise.Running(o.Root) {
			return nil, nil // nothing runs
		}
		st, err := supervise.ReadStatus(o.Root)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if p, ok := st.Process(c.Name); ok && supervise.Alive(p.PID) {
				pids[c.Name] = p.PID
			}
		}
	case v1alpha1.LayoutSystemd:
		states, err := SystemdStates(ctx, unitNames(cs))
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if i := slices.IndexFunc(states, func(s UnitState) bool { return s.Name == c.UnitName() }); i >= 0 {
				pids[c.Name] = int(states[i].MainPID)
			}
		}
	default:
		return nil, nil
	}
	var out []component.Spec
	for _, c := range cs {
		if c.Binary != "" && supervise.ExeReplaced(pids[c.Name], c.Binary) {
			out = append(out, c)
		}
	}
	return out, nil
}
