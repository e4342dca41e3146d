package layout

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/supervise"
)

// Restart makes running components read their files again: systemd
// restarts their units; under the supervisor SIGTERM makes each exit
// cleanly and the supervisor starts it again at once. A component that is
// not running is left alone (starting it is Start's job).
func Restart(ctx context.Context, o Options, cs []component.Spec) error {
	switch o.Layout {
	case v1alpha1.LayoutProcess:
		st, err := supervise.ReadStatus(o.Root)
		if err != nil {
			return nil // the supervisor was just started: it reads the new files
		}
		for _, c := range cs {
			p, ok := st.Process(c.Name)
			if !ok || p.PID <= 0 {
				continue
			}
			if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("restart %s (pid %d): %w", c.Name, p.PID, err)
			}
		}
		return nil
	case v1alpha1.LayoutSystemd, v1alpha1.LayoutStaticPod:
		return restartUnits(ctx, unitNames(cs))
	default:
		return fmt.Errorf("unknown layout %q", o.Layout)
	}
}

func restartUnits(ctx context.Context, units []string) error {
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return systemdError(err)
	}
	defer conn.Close()
	// Unit files may have changed under the running units.
	if err := conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("reload systemd: %w", err)
	}
	for _, u := range units {
		// A unit caught in its restart loop (a start that keeps failing)
		// may have a start of its old definition under way, which the
		// restart job joins and fails with: it is tried once more.
		var err error
		for attempt := range 2 {
			if attempt > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(3 * time.Second):
				}
			}
			if err = restartUnit(ctx, conn, u); !errors.Is(err, errJobFailed) {
				break
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// errJobFailed marks a restart job systemd ended as failed.
var errJobFailed = errors.New("job failed")

func restartUnit(ctx context.Context, conn *dbus.Conn, u string) error {
	ch := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, u, "replace", ch); err != nil {
		return fmt.Errorf("restart %s: %w", u, err)
	}
	select {
	case r := <-ch:
		switch r {
		case "done":
			return nil
		case "failed":
			return fmt.Errorf("restart %s: %w (see journalctl -u %s)", u, errJobFailed, u)
		}
		return fmt.Errorf("restart %s: job %s (see journalctl -u %s)", u, r, u)
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("restart %s: no answer from systemd", u)
	}
}
