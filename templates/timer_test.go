package templates_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"anvil.dev/anvil/templates"
)

func backupJob() templates.ScheduledJob {
	return templates.ScheduledJob{
		Name:        "anvil-backup",
		Description: "anvil scheduled etcd backup",
		Command:     []string{"/usr/local/bin/anvil", "backup", "--scheduled", "--log-format", "json"},
		OnCalendar:  "*-*-* 02:00:00",
		Persistent:  true,
		After:       []string{"anvil-etcd.service"},
		Timeout:     time.Hour,
		Background:  true,
	}
}

// TestTimerGolden compares the rendered service and timer with
// testdata/systemd (run with -update after an intended change).
func TestTimerGolden(t *testing.T) {
	files, err := templates.TimerUnits(backupJob())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Path != "/etc/systemd/system/anvil-backup.service" || files[1].Path != "/etc/systemd/system/anvil-backup.timer" {
		t.Fatalf("files: %+v", files)
	}
	for _, f := range files {
		if f.Mode != templates.UnitMode {
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
	for name, edit := range map[string]func(*templates.ScheduledJob){
		"relative binary":       func(j *templates.ScheduledJob) { j.Command[0] = "anvil" },
		"no calendar":           func(j *templates.ScheduledJob) { j.OnCalendar = " " },
		"calendar with newline": func(j *templates.ScheduledJob) { j.OnCalendar = "daily\nExecStart=/bin/sh" },
		"bad name":              func(j *templates.ScheduledJob) { j.Name = "Anvil Backup" },
	} {
		t.Run(name, func(t *testing.T) {
			j := backupJob()
			edit(&j)
			if _, err := templates.TimerUnits(j); err == nil {
				t.Error("rendered")
			}
		})
	}
}
