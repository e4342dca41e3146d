package backup

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/internal/calendar"
	"anvil.dev/anvil/master"
)

// RunBackupSchedule is the process layout's backup timer: it waits for
// the next time backup.schedule names, then runs ScheduledBackup (which
// takes the backup only on the etcd leader, then prunes), and again, until
// ctx ends. The cluster file is read again before every wait, so a changed
// schedule applies from the next run. Like a systemd timer with
// Persistent=true, a run missed while nothing ran the loop (the newest
// scheduled backup here is older than a time the schedule named since) is
// taken at once. A failed run is reported and the loop goes on, as a
// timer's next run would.
func RunBackupSchedule(ctx context.Context, o BackupOptions, report func(*ScheduledResult, error)) error {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	catchUp := true
	for {
		c, _, err := v1alpha1.Load(o.Root.Path(master.ClusterFile))
		if err != nil {
			return err
		}
		if c.Backup.Schedule == "" {
			return fmt.Errorf("%s: backup.schedule is empty: nothing to run", o.Root.Path(master.ClusterFile))
		}
		cal, err := calendar.Parse(c.Backup.Schedule)
		if err != nil {
			return fmt.Errorf("%s: backup.schedule: %w", o.Root.Path(master.ClusterFile), err)
		}
		now := time.Now()
		wait := time.Duration(0)
		if !catchUp || !missedRun(cal, o.Root.Path(c.Backup.Dir), c.Name, now) {
			next, ok := cal.Next(now)
			if !ok {
				return fmt.Errorf("backup.schedule %q names no time in the next five years", c.Backup.Schedule)
			}
			wait = time.Until(next)
			log.Info("next scheduled backup", "at", next.Format(time.RFC3339), "schedule", c.Backup.Schedule)
		} else {
			log.Info("taking the scheduled backup missed while the loop was not running")
		}
		catchUp = false
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		res, err := ScheduledBackup(ctx, o)
		if ctx.Err() != nil {
			return nil
		}
		report(res, err)
	}
}

// missedRun says whether the schedule named a time between the newest
// scheduled backup of the cluster in dir and now. Without one, nothing
// was missed: the schedule starts now.
func missedRun(cal *calendar.Calendar, dir, cluster string, now time.Time) bool {
	es, err := ListBackups(dir)
	if err != nil {
		return false
	}
	for _, e := range es { // newest first
		if e.Header != nil && e.Header.Cluster == cluster && e.Header.Trigger == envelope.TriggerScheduled {
			next, ok := cal.Next(e.Header.Created.In(now.Location()))
			return ok && next.Before(now)
		}
	}
	return false
}
