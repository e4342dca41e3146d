package master

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/calendar"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/layout"
)

// BackupJobName names the backup timer and its service
// (anvil-backup.timer, anvil-backup.service).
const BackupJobName = "anvil-backup"

// backupJob is the scheduled backup of p's master: every master runs the
// same timer, and `anvil backup --scheduled` takes the backup only on the
// etcd leader, so the cluster is backed up once per run.
func backupJob(p Plan) component.ScheduledJob {
	return component.ScheduledJob{
		Name:        BackupJobName,
		Description: "anvil scheduled etcd backup of cluster " + p.Cluster.Name,
		Command:     []string{p.AnvilBinary, "backup", "--scheduled", "--log-format", "json"},
		OnCalendar:  p.Cluster.Backup.Schedule,
		// A master that was down at the time takes the run when it is back
		// (and skips it unless it leads).
		Persistent: true,
		After:      []string{"anvil-etcd.service"},
		Timeout:    time.Hour,
		Background: true,
		// It writes and prunes backup.dir and nothing else (etcd's
		// snapshot comes over the network).
		Writes: []string{p.Cluster.Backup.Dir},
	}
}

// backupLoop is the process layout's backup timer, where no systemd runs
// one: anvil's supervisor runs `anvil backup --scheduled --loop`, which
// keeps backup.schedule itself (RunBackupSchedule) on every master, and
// restarts it should it die.
func backupLoop(p Plan) component.Spec {
	return component.Spec{
		Name:        BackupJobName,
		Description: "anvil scheduled etcd backup of cluster " + p.Cluster.Name + " (" + p.Cluster.Backup.Schedule + ")",
		Binary:      p.AnvilBinary,
		Subcommand:  []string{"backup"},
		Args: []component.Arg{
			{Name: "scheduled", Value: "true"},
			{Name: "loop", Value: "true"},
			{Name: "root", Value: string(p.Root)},
			{Name: "log-format", Value: "json"},
		},
		Restart: component.RestartPolicy{Delay: 10 * time.Second, MaxDelay: 5 * time.Minute},
	}
}

// BackupScheduleUnits renders what runs backup.schedule on p's master in
// layout: the systemd timer, its service and the directory backup.dir, or
// in the process layout the supervised backup loop's spec; nothing without
// backup.schedule or on a worker. The static-pod layout uses the timer:
// its kubelet runs under systemd.
func BackupScheduleUnits(p Plan, l v1alpha1.Layout) ([]component.OutputFile, error) {
	p, err := p.Complete()
	if err != nil {
		return nil, err
	}
	if p.Cluster.Backup.Schedule == "" || !p.Node.IsMaster() {
		return nil, nil
	}
	if l == v1alpha1.LayoutProcess {
		if _, err := calendar.Parse(p.Cluster.Backup.Schedule); err != nil {
			return nil, fmt.Errorf("backup.schedule: %w", err)
		}
		return component.Processes([]component.Spec{backupLoop(p)}, ProcessOptions(p))
	}
	files, err := component.TimerUnits(backupJob(p))
	if err != nil {
		return nil, err
	}
	// The confined service may write only backup.dir, which systemd needs
	// to exist when it starts a run (an existing one is left as it is).
	return append(files, component.OutputFile{Path: p.Cluster.Backup.Dir, Mode: fs.ModeDir | 0o700}), nil
}

// ScheduleResult says what EnsureBackupSchedule did.
type ScheduleResult struct {
	// Enabled is true when the timer (or the process layout's loop) runs;
	// Note explains a schedule that is written but not started.
	Enabled bool
	Note    string
}

// EnsureBackupSchedule makes this master's backup schedule match the
// cluster file: with backup.schedule the timer (or, in the process layout,
// the supervised loop) is written and started, without it one that an
// earlier cluster file made is stopped and removed. It runs at the end of
// init and join; systemd must be PID 1 under the systemd and static-pod
// layouts.
func EnsureBackupSchedule(ctx context.Context, p Plan, l v1alpha1.Layout, root hostfs.Root) (ScheduleResult, error) {
	p, err := p.Complete()
	if err != nil {
		return ScheduleResult{}, err
	}
	files, err := BackupScheduleUnits(p, l)
	if err != nil {
		return ScheduleResult{}, err
	}
	if len(files) > 0 && l != v1alpha1.LayoutProcess {
		if err := checkCalendar(ctx, p.Cluster.Backup.Schedule); err != nil {
			return ScheduleResult{}, err
		}
	}
	return ensureSchedule(ctx, p, l, root, scheduled{what: "backup", name: BackupJobName, files: files,
		loopNote: fmt.Sprintf("anvil's supervisor runs the backup schedule %q (anvil backup --scheduled --loop)", p.Cluster.Backup.Schedule)})
}

// scheduled is a job a master runs on a schedule, as ensureSchedule
// keeps it: the systemd timer of that name, or the process layout's
// supervised loop.
type scheduled struct {
	what string // for messages: "backup"
	name string
	// files are its timer units (or the loop's spec), as rendered; none
	// when the cluster file asks for no such job.
	files    []component.OutputFile
	loopNote string
}

// ensureSchedule writes and starts s's timer (or, in the process layout,
// its loop), or stops and removes one an earlier cluster file made.
func ensureSchedule(ctx context.Context, p Plan, l v1alpha1.Layout, root hostfs.Root, s scheduled) (ScheduleResult, error) {
	if l == v1alpha1.LayoutProcess {
		return ensureLoop(ctx, p, root, s)
	}
	timer := []component.Spec{{Name: s.name, Unit: s.name + ".timer"}}
	o := layout.Options{Layout: v1alpha1.LayoutSystemd, Root: root}
	if len(s.files) == 0 {
		// No schedule: take away a timer an earlier cluster file made.
		var existing []string
		for _, n := range []string{s.name + ".timer", s.name + ".service"} {
			if ok, _ := fsutil.Exists(filepath.Join(root.Units(), n)); ok {
				existing = append(existing, filepath.Join(root.Units(), n))
			}
		}
		if len(existing) == 0 {
			return ScheduleResult{}, nil
		}
		if isRealRoot(root) {
			if err := layout.Stop(ctx, o, timer, false); err != nil {
				return ScheduleResult{}, err
			}
		}
		for _, f := range existing {
			if err := os.Remove(f); err != nil {
				return ScheduleResult{}, err
			}
		}
		if isRealRoot(root) {
			return ScheduleResult{}, layout.Reload(ctx)
		}
		return ScheduleResult{}, nil
	}
	if _, err := component.WriteTree(root, s.files); err != nil {
		return ScheduleResult{}, err
	}
	if !isRealRoot(root) {
		return ScheduleResult{Note: s.what + " timer written under " + string(root) + "; not started (not the real root)"}, nil
	}
	if err := layout.Start(ctx, o, timer); err != nil {
		return ScheduleResult{}, fmt.Errorf("start the %s timer: %w", s.what, err)
	}
	return ScheduleResult{Enabled: true}, nil
}

// ensureLoop is ensureSchedule in the process layout: writing the loop's
// spec, or removing it, and having the supervisor reload.
func ensureLoop(ctx context.Context, p Plan, root hostfs.Root, s scheduled) (ScheduleResult, error) {
	o := layout.Options{Layout: v1alpha1.LayoutProcess, Root: root, Anvil: p.AnvilBinary}
	loop := []component.Spec{{Name: s.name}}
	if len(s.files) == 0 {
		if ok, _ := fsutil.Exists(root.Join(component.ProcessSpecDir, s.name+".json")); !ok {
			return ScheduleResult{}, nil
		}
		return ScheduleResult{}, layout.Stop(ctx, o, loop, false)
	}
	if _, err := component.WriteTree(root, s.files); err != nil {
		return ScheduleResult{}, err
	}
	if err := layout.Start(ctx, o, loop); err != nil {
		return ScheduleResult{}, fmt.Errorf("start the %s loop: %w", s.what, err)
	}
	return ScheduleResult{Enabled: true, Note: s.loopNote}, nil
}

func isRealRoot(r hostfs.Root) bool { return r == "" || r == "/" }

// ErrBadSchedule marks a backup.schedule systemd does not accept.
var ErrBadSchedule = errors.New("backup.schedule is not a systemd calendar expression")

// checkCalendar asks systemd-analyze, where it is installed, whether
// expr is a calendar expression, so a typo fails here with systemd's own
// words instead of as a timer that never fires.
func checkCalendar(ctx context.Context, expr string) error {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, bin, "calendar", "--", expr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %q: %s", ErrBadSchedule, expr, strings.TrimSpace(string(out)))
	}
	return nil
}
