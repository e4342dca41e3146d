package master_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

func TestBackupScheduleUnits(t *testing.T) {
	ctx := context.Background()
	c := testCluster()
	c.Backup = v1alpha1.Backup{Schedule: "*-*-* 02:00:00", Retain: 7, Dir: "/var/lib/anvil/backups"}
	p := testPlan(t, c, "lab-m1", "")
	files, err := master.BackupScheduleUnits(p, v1alpha1.LayoutSystemd)
	if err != nil || len(files) != 3 {
		t.Fatalf("%v %v", files, err)
	}
	if !bytes.Contains(files[0].Data, []byte("ExecStart=/usr/local/bin/anvil backup --scheduled")) || !bytes.Contains(files[1].Data, []byte("OnCalendar=*-*-* 02:00:00")) {
		t.Errorf("units:\n%s\n%s", files[0].Data, files[1].Data)
	}
	// The confined service may write backup.dir alone, which must exist.
	if !bytes.Contains(files[0].Data, []byte("\nReadWritePaths=/var/lib/anvil/backups\n")) || files[2].Path != "/var/lib/anvil/backups" || !files[2].Mode.IsDir() {
		t.Errorf("service:\n%s\nthird file %+v", files[0].Data, files[2])
	}
	// The process layout has no systemd: anvil's supervisor runs the loop.
	files, err = master.BackupScheduleUnits(p, v1alpha1.LayoutProcess)
	if err != nil || len(files) != 1 || files[0].Path != "/etc/anvil/processes/anvil-backup.json" || files[0].Mode.Perm() != 0o600 {
		t.Fatalf("process layout: %v %v", files, err)
	}
	var spec component.Process
	if err := json.Unmarshal(files[0].Data, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Path != "/usr/local/bin/anvil" || strings.Join(spec.Args, " ") != "backup --scheduled=true --loop=true --root= --log-format=json" || spec.Restart.Delay == 0 {
		t.Errorf("process layout spec: %+v", spec)
	}
	bad := *c
	bad.Backup.Schedule = "*-*~01 02:00"
	if _, err := master.BackupScheduleUnits(testPlan(t, &bad, "lab-m1", ""), v1alpha1.LayoutProcess); err == nil || !strings.Contains(err.Error(), "backup.schedule") {
		t.Errorf("a schedule the process layout cannot keep: %v", err)
	}
	if files, _ := master.BackupScheduleUnits(testPlan(t, c, "lab-w1", ""), v1alpha1.LayoutSystemd); len(files) != 0 {
		t.Errorf("worker: %v", files)
	}
	root := hostfs.Root(t.TempDir())
	if res, err := master.EnsureBackupSchedule(ctx, p, v1alpha1.LayoutSystemd, root); err != nil || res.Enabled {
		t.Fatalf("%+v %v", res, err)
	}
	timer := filepath.Join(root.Units(), "anvil-backup.timer")
	if _, err := os.Stat(timer); err != nil {
		t.Fatal(err)
	}
	c.Backup.Schedule = ""
	if _, err := master.EnsureBackupSchedule(ctx, testPlan(t, c, "lab-m1", ""), v1alpha1.LayoutSystemd, root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(timer); err == nil {
		t.Error("the timer stayed without a schedule")
	}
	c.Backup.Schedule = "every full moon"
	if _, err := master.EnsureBackupSchedule(ctx, testPlan(t, c, "lab-m1", ""), v1alpha1.LayoutSystemd, root); err == nil {
		t.Error("a schedule systemd cannot read was accepted")
	}
}
