package backup_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/backup/envelope/envelopetest"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// TestBackupRestoreE2E is the single-master check on a real control
// plane: objects A → backup → delete A, create B → restore → A is back with
// its UIDs and resourceVersions, below every new one; B is gone; an
// informer started before the restore sees A again within 30 s. On the way,
// every kind of bad backup is refused with its reason and the running
// cluster is left untouched, and the exported snapshot restores with
// etcd's own tools.
func TestBackupRestoreE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cp := mastertest.Start(t, mastertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cs := cp.Client(t)
	root := string(cp.Root)
	dir := t.TempDir()
	const ns = "restore-e2e"

	// A: two ConfigMaps and a Secret (stored encrypted with the cluster's key).
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	type ident struct{ uid, rv string }
	a := map[string]ident{}
	for _, name := range []string{"a1", "a2"} {
		cm, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a[name] = ident{string(cm.UID), cm.ResourceVersion}
	}
	sec, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "a-secret"}, StringData: map[string]string{"pw": "restore-me"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The informer runs from before the backup to after the restore.
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	cmInformer := factory.Core().V1().ConfigMaps().Informer()
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	factory.Start(stop)
	factory.WaitForCacheSync(stop)
	inStore := func(name string) bool {
		_, ok, _ := cmInformer.GetStore().GetByKey(ns + "/" + name)
		return ok
	}

	// Backups: plain (with its loud warning) and encrypted.
	id, other := envelopetest.NewIdentity(t), envelopetest.NewIdentity(t)
	idFile, otherFile := writeIdentity(t, dir, "id.key", id), writeIdentity(t, dir, "other.key", other)
	plain, enc := filepath.Join(dir, "plain.anvilbak"), filepath.Join(dir, "enc.anvilbak")
	if out, err := cp.Run(ctx, "backup", "--root", root, "-o", plain); err == nil || !strings.Contains(out, "refusing to write a backup that is not encrypted") {
		t.Errorf("a backup without recipients and without --allow-unencrypted: %v\n%s", err, out)
	}
	if _, err := os.Stat(plain); err == nil {
		t.Errorf("the refused backup was written")
	}
	start := time.Now()
	out := run(t, ctx, cp, "backup", "--root", root, "-o", plain, "--allow-unencrypted")
	t.Logf("plain backup in %s: %s", time.Since(start).Round(time.Millisecond), lastLine(out))
	if !strings.Contains(out, "NOT encrypted") || !strings.Contains(out, "whoever reads it owns the cluster") {
		t.Errorf("no loud warning for an unencrypted backup:\n%s", out)
	}
	run(t, ctx, cp, "backup", "--root", root, "-o", enc, "--recipient", id.Recipient().String())
	for _, f := range []string{plain, enc} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, fi.Mode(), err)
		}
	}

	// Away from the master's --root, the master's key is given as the
	// operator would, from anvil status or the cluster file's pin.
	signingKey, err := backup.SigningPublicKey(cp.Root)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("inspect", func(t *testing.T) {
		if out, err := cp.Run(ctx, "backup", "inspect", enc); err == nil || !strings.Contains(out, "--signing-key") {
			t.Errorf("inspect with no key to check the signature against: %v\n%s", err, out)
		}
		out := run(t, ctx, cp, "backup", "inspect", enc, "--signing-key", signingKey)
		if !regexp.MustCompile(`verified +no: encrypted`).MatchString(out) || !regexp.MustCompile(`cluster +e2e`).MatchString(out) {
			t.Errorf("inspect without identity:\n%s", out)
		}
		var in backup.Inspection
		if err := json.Unmarshal([]byte(runStdout(t, ctx, cp, "backup", "inspect", enc, "--identity", idFile, "-o", "json", "--signing-key", signingKey)), &in); err != nil {
			t.Fatal(err)
		}
		if !in.Verified || in.Header.Cluster != "e2e" || !in.Header.Encrypted || len(in.Contents.Files) != len(backup.BackupFiles()) ||
			in.Header.Members[0].Name != "m1" || in.Contents.SnapshotSize < 64<<10 {
			t.Errorf("inspect: %+v", in)
		}
	})

	t.Run("export-snapshot restores with etcdutl", func(t *testing.T) {
		db := filepath.Join(dir, "etcd.db")
		run(t, ctx, cp, "backup", "export-snapshot", enc, "--identity", idFile, "-o", db, "--signing-key", signingKey)
		if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%v %v", fi, err)
		}
		st, err := snapshot.NewV3(zap.NewNop()).Status(db)
		if err != nil || st.TotalKey == 0 {
			t.Fatalf("etcdutl snapshot status: %+v %v", st, err)
		}
		data := filepath.Join(dir, "etcdutl-restored")
		err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
			SnapshotPath: db, Name: "stock", OutputDataDir: data,
			PeerURLs: []string{"http://127.0.0.1:2380"}, InitialCluster: "stock=http://127.0.0.1:2380", InitialClusterToken: "stock",
		})
		if err != nil {
			t.Fatalf("etcdutl snapshot restore: %v", err)
		}
		if !boltHasKey(t, filepath.Join(data, "member", "snap", "db"), "/registry/configmaps/"+ns+"/a1") {
			t.Error("the restored database does not hold A")
		}
	})

	// B: A goes, B comes.
	for name := range a {
		if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "b"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the informer to see A go and B come", 30*time.Second, func() bool { return !inStore("a1") && inStore("b") })

	t.Run("bad backups are refused and the cluster is untouched", func(t *testing.T) {
		flipped := filepath.Join(dir, "flipped.anvilbak")
		raw, err := os.ReadFile(plain)
		if err != nil {
			t.Fatal(err)
		}
		c := bytes.Clone(raw)
		c[len(c)/2] ^= 0x10
		writeFile(t, flipped, c)
		truncated := filepath.Join(dir, "truncated.anvilbak")
		writeFile(t, truncated, raw[:len(raw)-4096])
		key := signingKeyOf(t, cp.Root)
		trust := keysOf(t, cp.Root, nil).Trust
		otherCluster := filepath.Join(dir, "other-cluster.anvilbak")
		reencode(t, plain, otherCluster, trust, key, func(h *envelope.BackupHeader) { h.Cluster = "other" })
		future := filepath.Join(dir, "future.anvilbak")
		reencode(t, plain, future, trust, key, func(h *envelope.BackupHeader) { h.KubernetesVersion = "v1.99.0" })
		forged := filepath.Join(dir, "forged.anvilbak")
		reencode(t, plain, forged, trust, envelopetest.SigningKey(66), func(*envelope.BackupHeader) {})
		tampered := filepath.Join(dir, "tampered.anvilbak")
		encRaw, err := os.ReadFile(enc)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, tampered, envelopetest.Resign(envelopetest.RewriteHeader(t, encRaw, func(h *envelope.BackupHeader) { h.Node = "m9" }), key))
		edited := filepath.Join(dir, "edited.anvilbak")
		writeFile(t, edited, envelopetest.RewriteHeader(t, raw, func(h *envelope.BackupHeader) { h.Node = "m9" }))
		notBackup := filepath.Join(dir, "not-a-backup")
		writeFile(t, notBackup, []byte("#!/bin/sh\n"))

		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"flipped bit", []string{flipped}, "backup is corrupt (payload): chunk"},
			{"truncated", []string{truncated}, "backup is truncated"},
			{"no identity", []string{enc}, "backup is encrypted and no identity was given"},
			{"wrong identity", []string{enc, "--identity", otherFile}, "no given identity can decrypt the backup"},
			{"a plain backup given with an identity", []string{plain, "--identity", idFile}, "backup is not encrypted although an identity was given"},
			{"another cluster", []string{otherCluster}, `it is a backup of cluster "other", and this master belongs to cluster "e2e" (--force restores it anyway)`},
			{"a clear header edited, with --force", []string{tampered, "--force", "--identity", idFile}, "the clear header differs from the one inside the payload"},
			{"a version anvil cannot run", []string{future, "--force"}, `it is of Kubernetes v1.99.0, which this anvil cannot run`},
			{"not a backup", []string{notBackup}, "not an anvil backup"},
			{"signed by another key", []string{forged, "--force"}, "backup is not signed by this cluster (signature): it is signed by ed25519:"},
			{"a clear header edited, not signed again", []string{edited, "--force"}, "does not verify: the file was changed after it was signed, or forged"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := clusterFingerprint(t, ctx, cp)
				start := time.Now()
				out, err := cp.Run(ctx, append([]string{"restore", "--root", root}, tc.args...)...)
				if err == nil {
					t.Fatalf("restore succeeded:\n%s", out)
				}
				if tc.want != "" && !strings.Contains(out, tc.want) {
					t.Errorf("restore did not say %q:\n%s", tc.want, out)
				}
				if strings.Contains(out, "stop-control-plane") {
					t.Errorf("restore got as far as stopping the control plane:\n%s", out)
				}
				t.Logf("refused in %s: %s", time.Since(start).Round(time.Millisecond), lastLine(out))
				if after := clusterFingerprint(t, ctx, cp); after != before {
					t.Errorf("the cluster changed:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
	})

	t.Run("a dry run verifies and changes nothing", func(t *testing.T) {
		before := clusterFingerprint(t, ctx, cp)
		out := runStdout(t, ctx, cp, "restore", "--root", root, enc, "--identity", idFile, "--dry-run", "-o", "json")
		var res backup.RestoreResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !res.DryRun || res.Header == nil || res.Header.Cluster != "e2e" || res.SnapshotRevision == 0 || res.Revision <= res.ServedRevision || len(res.Members) != 1 {
			t.Errorf("dry run: %+v", res)
		}
		if after := clusterFingerprint(t, ctx, cp); after != before {
			t.Errorf("a dry run changed the cluster:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("restore", func(t *testing.T) {
		lastRV, _ := strconv.ParseInt(b.ResourceVersion, 10, 64)
		start := time.Now()
		out := runStdout(t, ctx, cp, "restore", "--root", root, enc, "--identity", idFile, "-o", "json")
		took := time.Since(start)
		var res backup.RestoreResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		t.Logf("restored in %s (down %s): snapshot revision %d, served %d, bump %d, now %d",
			took.Round(time.Millisecond), res.Downtime.Round(time.Millisecond), res.SnapshotRevision, res.ServedRevision, res.RevisionBump, res.Revision)
		if res.ServedRevision < lastRV || res.Revision <= res.ServedRevision {
			t.Errorf("revision not bumped above what was served: %+v (B was at %d)", res, lastRV)
		}
		if _, err := os.Stat(filepath.Join(res.Aside, "etcd", "member")); err != nil {
			t.Errorf("the old data is not kept aside: %v", err)
		}

		for name, want := range a {
			cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("A (%s) is not back: %v", name, err)
			}
			if string(cm.UID) != want.uid || cm.ResourceVersion != want.rv {
				t.Errorf("%s is back as uid %s rv %s, want uid %s rv %s", name, cm.UID, cm.ResourceVersion, want.uid, want.rv)
			}
		}
		if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "b", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("B survived the restore: %v", err)
		}
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, "a-secret", metav1.GetOptions{})
		if err != nil || string(s.Data["pw"]) != "restore-me" || s.UID != sec.UID {
			t.Errorf("the Secret did not come back readable: %v", err)
		}
		c, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		newRV, _ := strconv.ParseInt(c.ResourceVersion, 10, 64)
		for name, want := range a {
			if rv, _ := strconv.ParseInt(want.rv, 10, 64); rv >= newRV {
				t.Errorf("%s's resourceVersion %d is not below a new object's %d", name, rv, newRV)
			}
		}
		if newRV <= lastRV {
			t.Errorf("a new object's resourceVersion %d is not above what the old cluster served (%d)", newRV, lastRV)
		}

		// The informer's watch resumes from a revision the restored etcd
		// has compacted away: it must relist and see A again.
		relisted := time.Now()
		waitFor(t, "the informer to see A again and B gone (relist)", 30*time.Second, func() bool {
			return inStore("a1") && inStore("a2") && !inStore("b")
		})
		t.Logf("informer relisted %s after the restore returned", time.Since(relisted).Round(time.Millisecond))

		st := cp.Status(t)
		if !st.Healthy {
			t.Errorf("not healthy after the restore: %+v", st)
		}
	})

	t.Run("list, prune and the scheduled run", func(t *testing.T) {
		run(t, ctx, cp, "backup", "--root", root, "--allow-unencrypted")
		run(t, ctx, cp, "backup", "--root", root, "--allow-unencrypted")
		out := run(t, ctx, cp, "backup", "--root", root, "--scheduled", "--allow-unencrypted")
		if !strings.Contains(out, "written to "+cp.Root.Path("/var/lib/anvil/backups")) {
			t.Errorf("scheduled backup on the leader:\n%s", out)
		}
		var es []backup.BackupEntry
		if err := json.Unmarshal([]byte(runStdout(t, ctx, cp, "backup", "list", "--root", root, "-o", "json")), &es); err != nil {
			t.Fatal(err)
		}
		if len(es) != 3 || es[0].Header == nil || es[0].Header.Trigger != envelope.TriggerScheduled || es[2].Header.Trigger != envelope.TriggerManual {
			t.Fatalf("list: %+v", es)
		}
		out = run(t, ctx, cp, "backup", "prune", "--root", root, "--keep", "1", "--manual")
		if strings.Count(out, "removed ") != 2 || !strings.Contains(out, es[2].Path) || !strings.Contains(out, es[1].Path) {
			t.Errorf("prune --keep 1 --manual:\n%s", out)
		}
		if _, err := os.Stat(es[0].Path); err != nil {
			t.Errorf("prune removed the newest: %v", err)
		}
	})

	// The process layout has no systemd timer: anvil's supervisor runs the
	// schedule, and takes it away again with the schedule.
	t.Run("the process layout's schedule", func(t *testing.T) {
		c := *cp.Cluster
		c.Backup.Schedule, c.Backup.Retain = "*:*:0/3", 2
		// The timer passes no flag: the cluster file allows its backups.
		c.Backup.AllowUnencrypted = true
		b, err := yaml.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, cp.Root.Path(master.ClusterFile), b)
		p, err := master.NewPlan(&c, "m1", cp.Root)
		if err != nil {
			t.Fatal(err)
		}
		p.AnvilBinary = cp.Anvil
		started := time.Now().UTC().Truncate(time.Second)
		res, err := master.EnsureBackupSchedule(ctx, p, v1alpha1.LayoutProcess, cp.Root)
		if err != nil || !res.Enabled {
			t.Fatalf("%+v %v", res, err)
		}
		dir := cp.Root.Path(c.Backup.Dir)
		scheduledSince := func() int {
			es, _ := backup.ListBackups(dir)
			n := 0
			for _, e := range es {
				if e.Header != nil && e.Header.Trigger == envelope.TriggerScheduled && !e.Header.Created.Before(started) {
					n++
				}
			}
			return n
		}
		waitFor(t, "two backups from the supervised schedule", 40*time.Second, func() bool { return scheduledSince() >= 2 })
		c.Backup.Schedule = ""
		p.Cluster = &c
		if _, err := master.EnsureBackupSchedule(ctx, p, v1alpha1.LayoutProcess, cp.Root); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the supervisor to stop the schedule", 30*time.Second, func() bool {
			st, err := supervise.ReadStatus(cp.Root)
			if err != nil {
				return false
			}
			_, running := st.Process(master.BackupJobName)
			return !running
		})
		es, err := backup.ListBackups(dir)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range es {
			if e.Header != nil && e.Header.Trigger == envelope.TriggerScheduled {
				n++
			}
		}
		if n != 2 {
			t.Errorf("%d scheduled backups kept, want backup.retain 2: %+v", n, es)
		}
		if out, _ := os.ReadFile(cp.Root.Path("/var/log/anvil/anvil-backup.log")); !strings.Contains(string(out), "scheduled backup taken") {
			t.Errorf("the loop's log says no backup was taken:\n%s", out)
		}
	})

	// Disaster recovery: the machine is wiped (anvil reset); the backup
	// alone, with its key, brings the cluster back: its CAs and keys are
	// put in place, init builds a master from them, restore puts the data
	// back. Credentials issued before still work.
	t.Run("a wiped machine rebuilt from the backup alone", func(t *testing.T) {
		dr, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dr"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bak := filepath.Join(dir, "dr.anvilbak")
		run(t, ctx, cp, "backup", "--root", root, "-o", bak, "--recipient", id.Recipient().String())
		caHash := cp.CAHash
		run(t, ctx, cp, "reset", "--force", "--root", root)
		if _, err := os.Stat(cp.Root.PKI()); err == nil {
			t.Fatal("reset left the PKI")
		}
		out, err := cp.Run(ctx, "restore", "--root", root, bak, "--identity", idFile)
		if err == nil || !strings.Contains(out, "anvil backup export-files FILE") {
			t.Errorf("restore onto a wiped machine did not say how to rebuild it: %v\n%s", err, out)
		}
		// The wiped machine knows no signing key: the operator gives the
		// cluster's, and a forged backup would be refused here.
		if out, err := cp.Run(ctx, "backup", "export-files", bak, "--root", root, "--identity", idFile); err == nil || !strings.Contains(out, "--signing-key") {
			t.Errorf("export-files with no key to check the signature against: %v\n%s", err, out)
		}
		if out, err := cp.Run(ctx, "backup", "export-files", bak, "--root", root, "--signing-key", signingKey); err == nil || !strings.Contains(out, "no identity was given") {
			t.Errorf("export-files without the key: %v\n%s", err, out)
		}
		out = run(t, ctx, cp, "backup", "export-files", bak, "--root", root, "--identity", idFile, "--signing-key", signingKey)
		if strings.Count(out, "created") != len(backup.BackupFiles()) {
			t.Errorf("export-files:\n%s", out)
		}
		if fi, err := os.Stat(filepath.Join(cp.Root.PKI(), "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("ca.key: %v %v", fi, err)
		}
		// reset took the binaries too; the machine gets them as a new one would.
		kube := mastertest.KubeBinDir(t)
		if out, err := exec.Command(cp.Anvil, "images", "install", "--root", root, "--dir", filepath.Dir(kube), "--version", filepath.Base(kube)).CombinedOutput(); err != nil {
			t.Fatalf("install binaries: %v\n%s", err, out)
		}
		start := time.Now()
		run(t, ctx, cp, cp.InitArgs()...)
		if h, err := pki.CAHashFromFile(filepath.Join(cp.Root.PKI(), "ca.crt")); err != nil || h != caHash {
			t.Fatalf("init made CA %s, the backup's is %s (%v)", h, caHash, err)
		}
		run(t, ctx, cp, "restore", "--root", root, bak, "--identity", idFile)
		t.Logf("init and restore on the wiped machine in %s", time.Since(start).Round(time.Millisecond))
		// The client made before the wipe: its certificate is from the
		// bak's CA.
		got, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "dr", metav1.GetOptions{})
		if err != nil || got.UID != dr.UID {
			t.Fatalf("dr after the rebuild: %v %v", got, err)
		}
		if s, err := cs.CoreV1().Secrets(ns).Get(ctx, "a-secret", metav1.GetOptions{}); err != nil || string(s.Data["pw"]) != "restore-me" {
			t.Errorf("the Secret after the rebuild: %v", err)
		}
	})
}

func run(t *testing.T, ctx context.Context, cp *mastertest.ControlPlane, args ...string) string {
	t.Helper()
	out, err := cp.Run(ctx, args...)
	if err != nil {
		t.Fatalf("anvil %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runStdout runs anvil in the control plane's namespace and returns its
// stdout; stderr is shown when it fails.
func runStdout(t *testing.T, ctx context.Context, cp *mastertest.ControlPlane, args ...string) string {
	t.Helper()
	cmd := cp.NS.Command(ctx, cp.Anvil, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("anvil %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	t.Logf("anvil %s:\n%s", strings.Join(args, " "), stderr.Bytes())
	return string(out)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeIdentity(t *testing.T, dir, name string, id *age.X25519Identity) string {
	t.Helper()
	p := filepath.Join(dir, name)
	writeFile(t, p, []byte("# test key\n"+id.String()+"\n"))
	return p
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reencode writes src's content again as dst with an edited header: a
// complete, valid backup that says something else.
// It is signed with key: the cluster's, as only its masters could, or
// another, as a forger would.
func reencode(t *testing.T, src, dst string, trust envelope.Trust, key ed25519.PrivateKey, edit func(*envelope.BackupHeader)) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	type file struct {
		path string
		mode fs.FileMode
		data []byte
	}
	var files []file
	var snap bytes.Buffer
	c, err := envelope.ReadEnvelope(in, envelope.ReadOptions{
		Trust:    trust,
		Snapshot: &snap,
		File:     func(p string, m fs.FileMode, d []byte) error { files = append(files, file{p, m, d}); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := c.Header
	edit(&h)
	var out bytes.Buffer
	w, err := envelope.NewEnvelopeWriter(&out, h, h.Recipients, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := w.AddFile(f.path, f.mode, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, out.Bytes())
}

// clusterFingerprint is what a refused restore must not change: each
// component's PID and restarts, the etcd member's data, the objects of
// the test, and nothing of a restore's left on disk.
func clusterFingerprint(t *testing.T, ctx context.Context, cp *mastertest.ControlPlane) string {
	t.Helper()
	var b strings.Builder
	st := cp.Status(t)
	for _, c := range st.Components {
		fmt.Fprintf(&b, "%s pid %d restarts %d healthy %v; ", c.Name, c.PID, c.Restarts, c.Healthy)
	}
	if _, err := os.Stat(filepath.Join(cp.Root.EtcdData(), "member", "wal")); err != nil {
		fmt.Fprintf(&b, "wal: %v; ", err)
	}
	des, _ := os.ReadDir(cp.Root.State())
	for _, de := range des {
		b.WriteString(de.Name() + " ")
	}
	cms, err := cp.Client(t).CoreV1().ConfigMaps("restore-e2e").List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(&b, "list: %v", err)
	} else {
		for _, cm := range cms.Items {
			if !strings.HasPrefix(cm.Name, "kube-") { // kube-root-ca.crt comes when it comes
				b.WriteString(cm.Name + "@" + cm.ResourceVersion + " ")
			}
		}
	}
	return b.String()
}

// boltHasKey reports whether an etcd database holds a revision of key.
func boltHasKey(t *testing.T, file, key string) bool {
	t.Helper()
	db, err := bolt.Open(file, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	found := false
	err = db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("key"))
		if bk == nil {
			return errors.New("no key bucket")
		}
		return bk.ForEach(func(_, v []byte) error {
			found = found || bytes.Contains(v, []byte(key))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
