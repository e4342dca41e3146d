package component_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"anvil.dev/anvil/component"
)

func backupJob() component.ScheduledJob {
	return component.ScheduledJob{
		Name:        "anvil-backup",
		Description: "anvil scheduled etcd backup",
		Command:     []string{"/usr/local/bin/anvil", "backup", "--scheduled", "--log-format", "json"},
		OnCalendar:  "*-*-* 02:00:00",
		Persistent:  true,
		After:       []string{"anvil-etcd.service"},
		Timeout:     time.Hour,
		Background:  true,
		Writes:      []string{"/var/lib/anvil/backups"},
	}
}

// TestTimerGolden compares the rendered service and timer with
// testdata/systemd (run with -update after an intended change).
func TestTimerGolden(t *testing.T) {
	files, err := component.TimerUnits(backupJob())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Path != "/etc/systemd/system/anvil-backup.service" || files[1].Path != "/etc/systemd/system/anvil-backup.timer" {
		t.Fatalf("files: %+v", files)
	}
	for _, f := range files {
		if f.Mode != component.UnitMode {
			t.Errorf("%s mode %v", f.Path, f.Mode)
		}
		checkGolden(t, filepath.Join("testdata", "systemd", filepath.Base(f.Path)), f.Data)
		// go-systemd's parser reads it back.
		if _, err := unit.DeserializeOptions(strings.NewReader(string(f.Data))); err != nil {
			t.Errorf("%s does not parse: %v", f.Path, err)
		}
	}
	if got := execStartWords(t, files[0].Data); strings.Join(got, " ") != strings.Join(backupJob().Command, " ") {
		t.Errorf("ExecStart reads back as %q", got)
	}
}

func TestTimerRefuses(t *testing.T) {
	for name, edit := range map[string]func(*component.ScheduledJob){
		"relative binary":       func(j *component.ScheduledJob) { j.Command[0] = "anvil" },
		"no calendar":           func(j *component.ScheduledJob) { j.OnCalendar = " " },
		"calendar with newline": func(j *component.ScheduledJob) { j.OnCalendar = "daily\nExecStart=/bin/sh" },
		"bad name":              func(j *component.ScheduledJob) { j.Name = "Anvil Backup" },
		"relative writable dir": func(j *component.ScheduledJob) { j.Writes = []string{"backups"} },
	} {
		t.Run(name, func(t *testing.T) {
			j := backupJob()
			edit(&j)
			if _, err := component.TimerUnits(j); err == nil {
				t.Error("rendered")
			}
		})
	}
}

// TestUnconfinedJob: without the sandbox, what a run writes is still
// readable by root alone.
func TestUnconfinedJob(t *testing.T) {
	j := backupJob()
	j.Sandbox.Unconfined = true
	u, err := component.OneshotUnit(j)
	if err != nil {
		t.Fatal(err)
	}
	if got := sandboxLines(t, u); !slices.Equal(got, []string{"UMask=0077"}) {
		t.Errorf("unconfined job: %q\n%s", got, u)
	}
}
