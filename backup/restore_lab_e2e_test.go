package backup_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/installer"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/master/mastertest"
)

// TestClusterRestoreLab is the HA check on three lab masters (real
// systemd, real sshd), driven through the anvil command as an operator
// would: objects A → `anvil cluster backup` (from the etcd leader, to this
// machine) → delete A, create B → on the masters, restore refuses to fork
// the cluster and then to restore without quorum, leave refuses to cost
// etcd its quorum (each saying why) → `anvil cluster restore` → three
// healthy members at the same revision and hash, A back with its UIDs and
// resourceVersions below every new one, B gone.
func TestClusterRestoreLab(t *testing.T) {
	labtest.Require(t)
	began := time.Now()
	bin := mastertest.BuildAnvil(t)
	kube := filepath.Dir(mastertest.KubeBinDir(t))
	l := labtest.Start(t, labtest.Options{Masters: 3})
	t.Logf("lab of 3 machines up in %s", time.Since(began).Round(time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	anvil := func(t *testing.T, args ...string) (string, string, error) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	var ms []string
	for _, m := range l.Masters() {
		ms = append(ms, m.Name)
	}

	// Scheduled backups every 10 seconds: a timer on every master, and a
	// backup on the etcd leader only.
	c, _, err := v1alpha1.Load(l.ClusterFile)
	if err != nil {
		t.Fatal(err)
	}
	c.Backup.Schedule = "*:*:0/10"
	cb, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	clusterFile := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(clusterFile, cb, 0o600); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if _, errOut, err := anvil(t, "cluster", "apply", "-f", clusterFile, "--anvil-binary", bin, "--kube-dir", kube, "--kubeconfig", kubeconfig, "--timeout", "5m"); err != nil {
		t.Fatalf("anvil cluster apply: %v\n%s", err, errOut)
	}
	t.Logf("3 masters applied in %s", time.Since(start).Round(time.Second))
	cs := labClient(t, kubeconfig)

	t.Run("the backup timer runs on every master, the leader backs up", func(t *testing.T) {
		for _, m := range ms {
			if st := strings.TrimSpace(l.Run(t, m, "systemctl is-active anvil-backup.timer || true")); st != "active" {
				t.Errorf("%s: anvil-backup.timer is %q", m, st)
			}
		}
		scheduled := func(m string) int {
			out := l.Run(t, m, "/usr/local/bin/anvil backup list -o json")
			var es []backup.BackupEntry
			if err := json.Unmarshal([]byte(out), &es); err != nil {
				t.Fatalf("%s: anvil backup list: %v\n%s", m, err, out)
			}
			n := 0
			for _, e := range es {
				if e.Header != nil && e.Header.Trigger == envelope.TriggerScheduled {
					n++
				}
			}
			return n
		}
		var with []string
		deadline := time.Now().Add(40 * time.Second)
		for len(with) == 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Second)
			for _, m := range ms {
				if scheduled(m) > 0 {
					with = append(with, m)
				}
			}
		}
		if len(with) == 0 {
			t.Fatalf("no master took a scheduled backup within 40s:\n%s", l.Run(t, ms[0], "journalctl -u anvil-backup.service --no-pager | tail -n 20"))
		}
		// Every timer has fired by now: still one master with backups.
		time.Sleep(11 * time.Second)
		with = nil
		for _, m := range ms {
			if scheduled(m) > 0 {
				with = append(with, m)
			}
		}
		if len(with) != 1 {
			t.Errorf("scheduled backups on %v, want them on the etcd leader only", with)
		}
		for _, m := range ms {
			if len(with) == 1 && m != with[0] {
				if out := l.Run(t, m, "journalctl -u anvil-backup.service --no-pager"); !strings.Contains(out, "not the etcd leader") {
					t.Errorf("%s's timer did not say it left the backup to the leader:\n%s", m, out)
				}
			}
		}
	})

	const ns = "restore-lab"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := map[string]*corev1.ConfigMap{}
	for _, name := range []string{"a1", "a2"} {
		cm, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a[name] = cm
	}

	// The backup, from the workstation: taken on the leader, encrypted to
	// the lab's backup key, verified here with it.
	start = time.Now()
	out, errOut, err := anvil(t, "cluster", "backup", "-f", clusterFile, "-o", dir, "--identity", l.BackupKey)
	if err != nil {
		t.Fatalf("anvil cluster backup: %v\n%s", err, errOut)
	}
	t.Logf("cluster backup in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	backups, _ := filepath.Glob(filepath.Join(dir, "*.anvilbak"))
	if len(backups) != 1 || !strings.Contains(out, "every layer verified") {
		t.Fatalf("backups in %s: %v\n%s", dir, backups, out)
	}
	backup := backups[0]
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", backup, fi, err)
	}

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

	t.Run("one master alone is refused, saying why", func(t *testing.T) {
		// A backup on the master itself, to restore there.
		l.Run(t, ms[0], "/usr/local/bin/anvil backup")
		local := "/var/lib/anvil/backups/" + strings.TrimSpace(l.Run(t, ms[0], "ls -1t /var/lib/anvil/backups | head -n 1"))
		refused := func(host, cmd, want string) {
			t.Helper()
			out, err := runOn(t, l, host, cmd)
			if err == nil {
				t.Fatalf("%s: %s went ahead:\n%s", host, cmd, out)
			}
			if !strings.Contains(out, want) {
				t.Errorf("%s: %s did not say %q:\n%s", host, cmd, want, out)
			}
		}
		refused(ms[0], "/usr/local/bin/anvil restore "+local, "one of 3 voting members (3 answering")
		if out, err := runOn(t, l, ms[1], "/usr/local/bin/anvil restore --leave"); err != nil {
			t.Fatalf("%s: leave with the others up: %v\n%s", ms[1], err, out)
		}
		refused(ms[2], "/usr/local/bin/anvil restore --leave", fmt.Sprintf("leaves 1 of the 3 voting members answering (down already: %s), and etcd needs 2", ms[1]))
		if out, err := runOn(t, l, ms[2], "/usr/local/bin/anvil restore --leave --force"); err != nil {
			t.Fatalf("%s: leave --force: %v\n%s", ms[2], err, out)
		}
		refused(ms[0], "/usr/local/bin/anvil restore "+local, "etcd has lost quorum: 1 of its 3 voting members answer")
	})

	// The whole cluster, from the workstation; two masters have left
	// already, which the restore takes in its stride.
	start = time.Now()
	out, errOut, err = anvil(t, "cluster", "restore", "-f", clusterFile, backup, "--identity", l.BackupKey, "--yes", "-o", "json")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("anvil cluster restore: %v\n%s%s", err, out, errOut)
	}
	t.Logf("anvil cluster restore:\n%s", errOut)
	var res installer.RestoreResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("cluster restore in %s: %s restored revision %d to %d (served %d); %d rejoined", took.Round(time.Millisecond), res.First,
		res.Restore.SnapshotRevision, res.Restore.Revision, res.ServedRevision, len(res.Rejoined))
	if c := res.Consistency; c == nil || !c.Consistent || len(c.Members) != 3 {
		t.Errorf("consistency after the restore: %+v", c)
	}

	t.Run("three healthy members at the same revision and hash", func(t *testing.T) {
		cli := labEtcdClient(t, l, ms)
		var rev int64
		status := map[string]*clientv3.StatusResponse{}
		deadline := time.Now().Add(30 * time.Second)
		for {
			ml, err := cli.MemberList(ctx)
			healthy := 0
			if err == nil && len(ml.Members) == 3 {
				for _, m := range ml.Members {
					if m.IsLearner || len(m.ClientURLs) == 0 {
						continue
					}
					sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
					st, err := cli.Status(sctx, m.ClientURLs[0])
					scancel()
					if err == nil {
						status[m.Name] = st
						healthy++
					}
				}
			}
			if healthy == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("etcd has %d healthy voting members (%v): %+v", healthy, err, ml)
			}
			time.Sleep(time.Second)
		}
		for _, st := range status {
			if rev == 0 || st.Header.Revision < rev {
				rev = st.Header.Revision
			}
		}
		ml, err := cli.MemberList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		urls := map[string]string{}
		for _, m := range ml.Members {
			urls[m.Name] = m.ClientURLs[0]
		}
		hashes := map[uint32][]string{}
		for name, st := range status {
			ep := urls[name]
			var hr *clientv3.HashKVResponse
			for i := 0; ; i++ {
				hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
				hr, err = cli.HashKV(hctx, ep, rev)
				hcancel()
				if err == nil || i == 20 {
					break
				}
				time.Sleep(250 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("HashKV of %s at %d: %v", name, rev, err)
			}
			hashes[hr.Hash] = append(hashes[hr.Hash], fmt.Sprintf("%s (at revision %d)", name, st.Header.Revision))
		}
		if len(hashes) != 1 {
			t.Errorf("the members disagree at revision %d: %v", rev, hashes)
		}
		t.Logf("3 members agree at revision %d: %v", rev, hashes)
	})

	t.Run("A is back with its UIDs, B is gone", func(t *testing.T) {
		cs := labClient(t, kubeconfig)
		for name, want := range a {
			var cm *corev1.ConfigMap
			err := retryFor(30*time.Second, func() (err error) {
				cm, err = cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
				return err
			})
			if err != nil {
				t.Fatalf("A (%s) is not back: %v", name, err)
			}
			if cm.UID != want.UID || cm.ResourceVersion != want.ResourceVersion {
				t.Errorf("%s is back as uid %s rv %s, want uid %s rv %s", name, cm.UID, cm.ResourceVersion, want.UID, want.ResourceVersion)
			}
		}
		if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "b", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("B survived the restore: %v", err)
		}
		c, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		newRV, _ := strconv.ParseInt(c.ResourceVersion, 10, 64)
		bRV, _ := strconv.ParseInt(b.ResourceVersion, 10, 64)
		for name, want := range a {
			if rv, _ := strconv.ParseInt(want.ResourceVersion, 10, 64); rv >= newRV {
				t.Errorf("%s's resourceVersion %d is not below a new object's %d", name, rv, newRV)
			}
		}
		if newRV <= bRV {
			t.Errorf("a new object's resourceVersion %d is not above what the old cluster served (B at %d)", newRV, bRV)
		}
		for _, m := range ms {
			if out := strings.TrimSpace(l.Run(t, m, "/usr/local/bin/anvil status -o json | grep -c '\"healthy\": false' || true")); out != "0" {
				t.Errorf("%s is not healthy after the restore:\n%s", m, l.Run(t, m, "/usr/local/bin/anvil status"))
			}
		}
	})
	t.Logf("the whole test took %s", time.Since(began).Round(time.Second))
}

func labClient(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// runOn runs cmd on a lab machine as root and returns its combined output.
func runOn(t *testing.T, l *labtest.Lab, host, cmd string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := sshx.Dial(ctx, l.SSHConfig(t, host, ""))
	if err != nil {
		return "", err
	}
	defer c.Close()
	var out strings.Builder
	err = c.Run(ctx, cmd, nil, &out, &out)
	return out.String(), err
}

// labEtcdClient reaches the masters' etcd with the healthcheck client
// certificate, copied from the first master.
func labEtcdClient(t *testing.T, l *labtest.Lab, masters []string) *clientv3.Client {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "healthcheck-client.crt", "healthcheck-client.key"} {
		b := l.Run(t, masters[0], "cat /etc/kubernetes/pki/etcd/"+f)
		if err := os.WriteFile(filepath.Join(dir, f), []byte(b+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tc, err := (transport.TLSInfo{
		CertFile: filepath.Join(dir, "healthcheck-client.crt"), KeyFile: filepath.Join(dir, "healthcheck-client.key"),
		TrustedCAFile: filepath.Join(dir, "ca.crt"),
	}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	tc.MinVersion = tls.VersionTLS12
	var eps []string
	for _, h := range l.Masters() {
		eps = append(eps, "https://"+h.Address.String()+":2379")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func retryFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}
