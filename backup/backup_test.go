package backup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/backup/envelope/envelopetest"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
)

// startTestEtcd runs an etcd member in the test process, on loopback
// ports the kernel picks, with its data in dir (a fresh one when empty).
func startTestEtcd(t testing.TB, dir string) *clientv3.Client {
	t.Helper()
	cfg := embed.NewConfig()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg.Dir = dir
	cfg.Name = "test"
	cfg.LogLevel = "error"
	local := func() url.URL { return url.URL{Scheme: "http", Host: "127.0.0.1:0"} }
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{local()}, []url.URL{local()}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{local()}, []url.URL{{Scheme: "http", Host: "127.0.0.1:2380"}}
	cfg.InitialCluster = "test=http://127.0.0.1:2380"
	cfg.InitialClusterToken = "test"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("test etcd not ready")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// masterRoot lays out under a scratch root what init leaves on a master
// and a backup reads: the PKI, the encryption config, the cluster file and
// the node state.
func masterRoot(t testing.TB, c *v1alpha1.Cluster) hostfs.Root {
	t.Helper()
	root := hostfs.Root(t.TempDir())
	cfg, err := pki.ConfigFromCluster(c, "lab-m1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Ensure(root.PKI(), cfg, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p, err := master.NewPlan(c, "lab-m1", root)
	if err != nil {
		t.Fatal(err)
	}
	files, err := master.ConfigFiles(p, func(hp string) ([]byte, error) { return os.ReadFile(root.Path(hp)) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := component.WriteTree(root, files); err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path(master.ClusterFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := master.WriteNodeState(root, master.NodeState{Node: "lab-m1", Role: v1alpha1.RoleMaster, Layout: v1alpha1.LayoutSystemd, KubernetesVersion: "v1.37.2"}); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestBackupOfARealMember backs up an etcd member (plain and encrypted),
// reads the backup back, exports its snapshot, and restores that with
// etcd's own etcdutl into a member that serves the same keys.
func TestBackupOfARealMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := startTestEtcd(t, "")
	big := strings.Repeat("x", 1<<20)
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/test/%02d", i), fmt.Sprintf("value-%d-%s", i, big[:i*1000])); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/registry/big", big); err != nil {
		t.Fatal(err)
	}
	last, err := cli.Put(ctx, "/registry/last", "last")
	if err != nil {
		t.Fatal(err)
	}
	c := mastertest.Cluster()
	root := masterRoot(t, c)
	id := envelopetest.NewIdentity(t)

	for _, tc := range []struct {
		name       string
		recipients []string
	}{{"plain", nil}, {"encrypted", []string{id.Recipient().String()}}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf, said bytes.Buffer
			rep := progress.New(&said, progress.Options{})
			res, err := backup.Backup(ctx, backup.BackupOptions{
				Root: root, Client: cli, Recipients: tc.recipients, AllowUnencrypted: tc.recipients == nil, Task: rep.Task("lab-m1"),
			}, &buf)
			rep.Close()
			if err != nil {
				t.Fatal(err)
			}
			warned := strings.Contains(said.String(), "NOT encrypted")
			if warned != (len(tc.recipients) == 0) {
				t.Errorf("warning about an unencrypted backup: %v, encrypted %v", warned, len(tc.recipients) > 0)
			}
			h := res.Header
			if h.Cluster != "lab" || h.Node != "lab-m1" || h.KubernetesVersion != "v1.37.2" || h.Revision < last.Header.Revision ||
				len(h.Members) != 1 || h.Members[0].Name != "test" || h.EtcdVersion == "" || h.Trigger != envelope.TriggerManual {
				t.Errorf("header: %+v", h)
			}
			if res.Bytes != int64(buf.Len()) || res.SnapshotBytes < 1<<20 {
				t.Errorf("sizes: %+v, wrote %d", res, buf.Len())
			}
			files := map[string][]byte{}
			db := filepath.Join(t.TempDir(), "snapshot.db")
			out, err := os.Create(db)
			if err != nil {
				t.Fatal(err)
			}
			var ids []age.Identity
			if tc.recipients != nil {
				ids = append(ids, id)
			}
			if h.SigningKey != keysOf(t, root, id).Trust.String() {
				t.Errorf("signed by %q, want this master's key", h.SigningKey)
			}
			cont, err := envelope.ReadEnvelope(bytes.NewReader(buf.Bytes()), envelope.ReadOptions{
				Identities: ids, Snapshot: out, Trust: keysOf(t, root, id).Trust,
				File: func(p string, _ fs.FileMode, d []byte) error { files["/"+p] = d; return nil },
			})
			out.Close()
			if err != nil {
				t.Fatal(err)
			}
			if cont.SnapshotSHA256 != res.SnapshotSHA256 {
				t.Errorf("sha256 %s, backup said %s", cont.SnapshotSHA256, res.SnapshotSHA256)
			}
			for _, f := range backup.BackupFiles() {
				want, err := os.ReadFile(root.Path(f))
				if err != nil || !bytes.Equal(files[f], want) {
					t.Errorf("%s in the backup differs from the master's (%v)", f, err)
				}
			}
			checkStockRestore(t, ctx, db, map[string]string{"/registry/big": big, "/registry/last": "last"})
		})
	}

	t.Run("no recipients is refused unless allowed", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "plain.anvilbak")
		_, err := backup.BackupToFile(ctx, backup.BackupOptions{Root: root, Client: cli}, p)
		if !errors.Is(err, backup.ErrUnencrypted) {
			t.Fatalf("a backup without recipients or --allow-unencrypted: %v, want ErrUnencrypted", err)
		}
		if des, _ := os.ReadDir(dir); len(des) != 0 {
			t.Errorf("the refused backup left %v", des)
		}
		var buf bytes.Buffer
		if _, err := backup.Backup(ctx, backup.BackupOptions{Root: root, Client: cli}, &buf); !errors.Is(err, backup.ErrUnencrypted) || buf.Len() != 0 {
			t.Errorf("to a stream: %v, %d bytes written", err, buf.Len())
		}
		// The cluster file's backup.allowUnencrypted is what the timer,
		// which passes no flag, goes by.
		allowed := *c
		allowed.Backup.AllowUnencrypted = true
		aroot := masterRoot(t, &allowed)
		if _, err := backup.BackupToFile(ctx, backup.BackupOptions{Root: aroot, Client: cli}, p); err != nil {
			t.Errorf("with backup.allowUnencrypted: %v", err)
		}
	})

	t.Run("to a file, 0600, atomically", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "sub", "b.anvilbak")
		res, err := backup.BackupToFile(ctx, backup.BackupOptions{Root: root, Client: cli, AllowUnencrypted: true}, p)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != res.Bytes {
			t.Fatalf("%v %v", fi, err)
		}
		// A backup that fails half way leaves nothing under its name.
		cctx, ccancel := context.WithCancel(ctx)
		ccancel()
		if _, err := backup.BackupToFile(cctx, backup.BackupOptions{Root: root, Client: cli, AllowUnencrypted: true}, filepath.Join(dir, "sub", "failed.anvilbak")); err == nil {
			t.Fatal("a cancelled backup succeeded")
		}
		des, _ := os.ReadDir(filepath.Join(dir, "sub"))
		if len(des) != 1 {
			t.Errorf("left behind: %v", des)
		}
		exported := filepath.Join(dir, "exported.db")
		f, _ := os.Open(p)
		defer f.Close()
		if _, err := backup.ExportSnapshot(f, backup.Keys{Trust: keysOf(t, root, nil).Trust}, exported); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(exported); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%v %v", fi, err)
		}
		checkStockRestore(t, ctx, exported, map[string]string{"/registry/last": "last"})
	})
}

// checkStockRestore restores db with etcdutl, starts a member on the
// result and reads keys from it.
func checkStockRestore(t *testing.T, ctx context.Context, db string, want map[string]string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored")
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: db, Name: "test", OutputDataDir: dir,
		PeerURLs: []string{"http://127.0.0.1:2380"}, InitialCluster: "test=http://127.0.0.1:2380", InitialClusterToken: "test",
	})
	if err != nil {
		t.Fatalf("etcdutl snapshot restore: %v", err)
	}
	cli := startTestEtcd(t, dir)
	for k, v := range want {
		resp, err := cli.Get(ctx, k)
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != v {
			t.Errorf("restored %s: %v %v", k, resp, err)
		}
	}
}

// TestScheduledBackupPrunes runs the timer's command three times with
// backup.retain 2: the member leads, so each run backs up, and only the
// two newest scheduled backups stay; a manual backup, another cluster's
// and a stranger's file are left alone.
func TestScheduledBackupPrunes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := startTestEtcd(t, "")
	c := mastertest.Cluster()
	c.Backup = v1alpha1.Backup{Schedule: "hourly", Retain: 2, Dir: "/var/lib/anvil/backups"}
	root := masterRoot(t, c)
	dir := root.Path(c.Backup.Dir)
	manual, err := backup.BackupToDir(ctx, backup.BackupOptions{Root: root, Client: cli, AllowUnencrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	var scheduled []string
	for range 3 {
		res, err := backup.ScheduledBackup(ctx, backup.BackupOptions{Root: root, Client: cli, AllowUnencrypted: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Skipped != "" || res.Backup == nil || res.Backup.Header.Trigger != envelope.TriggerScheduled {
			t.Fatalf("%+v", res)
		}
		scheduled = append(scheduled, res.Backup.Path)
		time.Sleep(10 * time.Millisecond)
	}
	stranger := filepath.Join(dir, "notes.anvilbak")
	writeFile(t, stranger, []byte("not a backup"))
	es, err := backup.ListBackups(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, filepath.Base(e.Path))
	}
	if len(es) != 4 {
		t.Fatalf("list: %v", names)
	}
	for _, p := range []string{manual.Path, scheduled[1], scheduled[2], stranger} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was pruned: %v", p, err)
		}
	}
	if _, err := os.Stat(scheduled[0]); err == nil {
		t.Errorf("the oldest scheduled backup %s was kept", scheduled[0])
	}
	if es[0].Path != scheduled[2] || es[len(es)-1].Header != nil {
		t.Errorf("not newest first, unreadable last: %v", names)
	}
	// --manual counts the hand-made one too.
	removed, err := backup.PruneBackups(dir, backup.PruneOptions{Cluster: "lab", Keep: 1, Manual: true, DryRun: true})
	if err != nil || len(removed) != 2 || removed[0].Path != manual.Path {
		t.Errorf("dry run: %+v %v", removed, err)
	}
	if removed, err := backup.PruneBackups(dir, backup.PruneOptions{Cluster: "other", Keep: 0, Manual: true}); err != nil || len(removed) != 0 {
		t.Errorf("pruned another cluster's: %+v %v", removed, err)
	}
}

// TestBackupScheduleUnits: with backup.schedule every master gets the
// timer and its service (not in the process layout); without, an earlier
// timer is removed.
// TestRunBackupSchedule runs the process layout's loop on a schedule of
// every two seconds with backup.retain 2: it takes a backup at each time,
// on the leader, and keeps the two newest.
func TestRunBackupSchedule(t *testing.T) {
	cli := startTestEtcd(t, "")
	c := mastertest.Cluster()
	c.Backup = v1alpha1.Backup{Schedule: "*:*:0/2", Retain: 2, Dir: "/var/lib/anvil/backups"}
	root := masterRoot(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	var taken []string
	var failures []error
	err := backup.RunBackupSchedule(ctx, backup.BackupOptions{Root: root, Client: cli, AllowUnencrypted: true}, func(res *backup.ScheduledResult, err error) {
		switch {
		case err != nil:
			failures = append(failures, err)
		case res.Backup != nil:
			taken = append(taken, res.Backup.Path)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(failures) > 0 || len(taken) < 2 {
		t.Fatalf("took %d backups (%v), failures %v", len(taken), taken, failures)
	}
	es, err := backup.ListBackups(root.Path(c.Backup.Dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Path != taken[len(taken)-1] {
		t.Errorf("kept %+v, want the 2 newest of %v", es, taken)
	}
	// Without a schedule the loop has nothing to do and says so.
	c.Backup.Schedule = ""
	b, _ := yaml.Marshal(c)
	writeFile(t, root.Path(master.ClusterFile), b)
	if err := backup.RunBackupSchedule(context.Background(), backup.BackupOptions{Root: root, Client: cli, AllowUnencrypted: true}, nil); err == nil || !strings.Contains(err.Error(), "backup.schedule is empty") {
		t.Errorf("loop without a schedule: %v", err)
	}
}
