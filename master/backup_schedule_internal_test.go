package master

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMissedRun: like systemd's Persistent=true, the loop catches up on a
// run the schedule named while nothing ran it, and only then.
func TestScheduleMissedRun(t *testing.T) {
	cal, err := ParseCalendar("hourly")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 30, 0, 0, time.UTC)
	write := func(dir string, created time.Time, trigger BackupTrigger, cluster string) {
		t.Helper()
		h := BackupHeader{
			Cluster: cluster, KubernetesVersion: "v1.37.2", EtcdVersion: "3.7.3", Revision: 5,
			Members: []BackupMember{{Name: "m1", ID: "0123456789abcdef", PeerURLs: []string{"https://10.0.0.1:2380"}}},
			Node:    "m1", Created: created, AnvilVersion: "v0.1.0", Trigger: trigger, CACertHash: "sha256:" + strings.Repeat("0", 64),
		}
		var b bytes.Buffer
		w, err := NewEnvelopeWriter(&b, h, nil)
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
		{"the last run's backup is there", func(d string) { write(d, now.Add(-30*time.Minute), TriggerScheduled, "lab") }, false},
		{"a run was missed", func(d string) { write(d, now.Add(-90*time.Minute), TriggerScheduled, "lab") }, true},
		{"only a manual backup", func(d string) { write(d, now.Add(-5*time.Hour), TriggerManual, "lab") }, false},
		{"another cluster's", func(d string) { write(d, now.Add(-5*time.Hour), TriggerScheduled, "other") }, false},
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
