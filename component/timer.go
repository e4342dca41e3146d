package component

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"anvil.dev/anvil/internal/hostfs"
)

// ScheduledJob is a command systemd runs on a calendar: a Type=oneshot
// service and the timer that starts it. Unlike a Component it is not kept
// running; each run ends, and a failed run shows in `systemctl list-timers`
// and the journal until the next one.
type ScheduledJob struct {
	// Name is the units' base name: NAME.service and NAME.timer.
	Name        string
	Description string
	// Command is the absolute binary and its arguments.
	Command []string
	// OnCalendar is a systemd calendar expression ("hourly",
	// "*-*-* 02:00:00"); systemd checks it when it loads the timer.
	OnCalendar string
	// Persistent runs a run missed while the machine was off once it is
	// back.
	Persistent bool
	// Accuracy is how late systemd may start a run to coalesce wake-ups
	// (AccuracySec); zero is systemd's default, a minute.
	Accuracy time.Duration
	// After are units a run waits for when they start at the same time.
	After []string
	// Timeout bounds one run (TimeoutStartSec); zero is systemd's default
	// (none for oneshot services).
	Timeout time.Duration
	// Background lowers the run's CPU and I/O priority, so it does not
	// take the disk from what it backs up.
	Background bool
	// Writes are the directories a run writes, which must exist: the
	// service is confined as a component's unit is (see Sandbox) and may
	// write nowhere else.
	Writes []string
	// Sandbox loosens that confinement as a component's does; a job keeps
	// no capabilities.
	Sandbox Sandbox
}

// Validate checks what systemd cannot be trusted to reject safely: names,
// an absolute binary, and values that would break out of their line.
func (j ScheduledJob) Validate() error {
	var errs []error
	if !validName(j.Name) {
		errs = append(errs, fmt.Errorf("scheduled job name %q must be lowercase letters, digits and dashes", j.Name))
	}
	if len(j.Command) == 0 || !path.IsAbs(j.Command[0]) {
		errs = append(errs, fmt.Errorf("scheduled job %s: command %q does not start with an absolute binary", j.Name, j.Command))
	}
	if strings.TrimSpace(j.OnCalendar) == "" {
		errs = append(errs, fmt.Errorf("scheduled job %s: no OnCalendar", j.Name))
	}
	for _, s := range append([]string{j.Description, j.OnCalendar}, j.After...) {
		if strings.ContainsAny(s, "\n\r\x00") {
			errs = append(errs, fmt.Errorf("scheduled job %s: %q holds a line break", j.Name, s))
		}
	}
	return errors.Join(errs...)
}

// ServiceName and TimerName are the units' names.
func (j ScheduledJob) ServiceName() string { return j.Name + ".service" }
func (j ScheduledJob) TimerName() string   { return j.Name + ".timer" }

// OneshotUnit renders the service a timer starts.
func OneshotUnit(j ScheduledJob) ([]byte, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	var opts []*unit.UnitOption
	add := func(section, name, value string) {
		opts = append(opts, unit.NewUnitOption(section, name, value))
	}
	add("Unit", "Description", j.Description)
	if len(j.After) > 0 {
		add("Unit", "After", strings.Join(j.After, " "))
	}
	add("Service", "Type", "oneshot")
	words := make([]string, len(j.Command))
	for i, w := range j.Command {
		words[i] = quoteExecWord(w)
	}
	add("Service", "ExecStart", strings.Join(words, " "))
	if j.Timeout > 0 {
		add("Service", "TimeoutStartSec", timespan(j.Timeout))
	}
	if j.Background {
		add("Service", "Nice", "10")
		add("Service", "IOSchedulingClass", "idle")
	}
	sandbox, err := confine(j.Sandbox, j.Writes, nil)
	if err != nil {
		return nil, fmt.Errorf("scheduled job %s: %w", j.Name, err)
	}
	for _, o := range sandbox {
		add("Service", o[0], o[1])
	}
	if j.Sandbox.Unconfined {
		// What the job writes is readable by root alone (the sandbox
		// says so too).
		add("Service", "UMask", "0077")
	}
	return serialize(j.Name, opts)
}

// TimerUnit renders the timer.
func TimerUnit(j ScheduledJob) ([]byte, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	var opts []*unit.UnitOption
	add := func(section, name, value string) {
		opts = append(opts, unit.NewUnitOption(section, name, value))
	}
	add("Unit", "Description", j.Description+" ("+j.OnCalendar+")")
	add("Timer", "OnCalendar", j.OnCalendar)
	if j.Persistent {
		add("Timer", "Persistent", "true")
	}
	if j.Accuracy > 0 {
		add("Timer", "AccuracySec", timespan(j.Accuracy))
	}
	add("Timer", "Unit", j.ServiceName())
	add("Install", "WantedBy", "timers.target")
	return serialize(j.Name, opts)
}

// TimerUnits renders j's service and timer under /etc/systemd/system.
func TimerUnits(j ScheduledJob) ([]OutputFile, error) {
	svc, err := OneshotUnit(j)
	if err != nil {
		return nil, err
	}
	tmr, err := TimerUnit(j)
	if err != nil {
		return nil, err
	}
	return []OutputFile{
		{Path: path.Join(hostfs.UnitDir, j.ServiceName()), Mode: UnitMode, Data: svc},
		{Path: path.Join(hostfs.UnitDir, j.TimerName()), Mode: UnitMode, Data: tmr},
	}, nil
}

func serialize(name string, opts []*unit.UnitOption) ([]byte, error) {
	b, err := io.ReadAll(unit.Serialize(opts))
	if err != nil {
		return nil, fmt.Errorf("scheduled job %s: serialize unit: %w", name, err)
	}
	return b, nil
}
