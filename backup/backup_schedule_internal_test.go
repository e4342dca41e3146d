package backup

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/backup/envelope/envelopetest"
	"anvil.dev/anvil/internal/calendar"
)

// TestMissedRun: like systemd's Persistent=true, the loop catches up on a
// run the schedule named while nothing ran it, and only then.
func TestScheduleMissedRun(t *testing.T) {
	cal, err := calendar.Parse("hourly")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 30, 0, 0, time.UTC)
	write := func(dir string, created time.Time, trigger envelope.BackupTrigger, cluster string) {
		t.Helper()
		h := envelope.BackupHeader{
			Cluster: cluster, KubernetesVersion: "v1.37.2", EtcdVersion: "3.7.3", Revision: 5,
			Members: []envelope.BackupMember{{Name: "m1", ID: "0123456789abcdef", PeerURLs: []string{"https://10.0.0.1:2380"}}},
			Node:    "m1", Created: created, AnvilVersion: "v0.1.0", Trigger: trigger, CACertHash: "sha256:" + strings.Repeat("0", 64),
		}
		var b bytes.Buffer
		w, err := envelope.NewEnvelopeWriter(&b, h, nil, envelopetest.SigningKey(1))
		if err != nil {
			t.Fatal(err)
		}
		w.WriteSnapshot(bytes.NewReader(nil))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, BackupName(cluster, "m1", created)), b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		setup func(dir string)
		want  bool
	}{
		{"no backups yet", func(string) {}, false},
		{"the last run's backup is there", func(d string) { write(d, now.Add(-30*time.Minute), envelope.TriggerScheduled, "lab") }, false},
		{"a run was missed", func(d string) { write(d, now.Add(-90*time.Minute), envelope.TriggerScheduled, "lab") }, true},
		{"only a manual backup", func(d string) { write(d, now.Add(-5*time.Hour), envelope.TriggerManual, "lab") }, false},
		{"another cluster's", func(d string) { write(d, now.Add(-5*time.Hour), envelope.TriggerScheduled, "other") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			if got := missedRun(cal, dir, "lab", now); got != tc.want {
				t.Errorf("missedRun = %v, want %v", got, tc.want)
			}
		})
	}
}
