package support

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

// fakeHost lays out a master under a temporary root with a secret of
// every kind in the files a bundle reads, and returns the root and the
// secrets.
func fakeHost(t *testing.T) (hostfs.Root, []string) {
	t.Helper()
	root := hostfs.Root(t.TempDir())
	write := func(p, data string) {
		t.Helper()
		full := root.Path(p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:1
    certificate-authority-data: Q0E=
users:
- name: admin
  user:
    client-certificate-data: ` + testCertData + `
    client-key-data: ` + testKeyData + `
    token: ` + testBearer + `
contexts:
- name: c
  context: {cluster: c, user: admin}
current-context: c
`
	write(master.NodeStateFile, `{"node":"m1","role":"master","layout":"systemd","kubernetesVersion":"v1.31.0","initialized":"2024-01-01T00:00:00Z"}`)
	write(master.ClusterFile, "apiVersion: anvil.dev/v1alpha1\nkind: Cluster\nname: lab\n")
	write(master.EncryptionConfigFile, "kind: EncryptionConfiguration\nresources:\n- providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: "+testEncSecret+"\n")
	write(hostfs.AnvilConfDir+"/backup-key.txt", "# public key: age1xyz\n"+testAge+"\n")
	write(hostfs.AnvilConfDir+"/stray.key", pemKey("EC PRIVATE KEY"))
	write(hostfs.KubernetesDir+"/admin.conf", kubeconfig)
	write(agent.KubeconfigFile, strings.ReplaceAll(kubeconfig, testBearer, testToken))
	write(hostfs.UnitDir+"/anvil-etcd.service", "[Service]\nExecStart=/usr/local/bin/anvil etcd\n")
	write(hostfs.BinDir+"/v1.31.0/manifest.json", `{"files":[{"name":"kube-apiserver","sha256":"00"}]}`)
	write(hostfs.LogDir+"/kube-apiserver.log", "I0101 bootstrap token "+testToken+" used\n")
	write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1\n")
	write("/proc/self/cgroup", "0::/system.slice/anvil-etcd.service\n")
	write("/proc/filesystems", "nodev\tcgroup2\n")
	write("/proc/self/mountinfo", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n31 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
	write("/etc/os-release", "ID=debian\n")
	secrets := []string{testCertData, testKeyData, testBearer, testToken, "0123456789abcdef", testEncSecret, testAge, testKeyBody}
	return root, secrets
}

// fakeExec answers systemctl and journalctl with output that carries
// secrets too, and records the command lines.
type fakeExec struct{ calls []string }

func (f *fakeExec) exec(_ context.Context, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	switch name {
	case "systemctl":
		return []byte("Id=anvil-etcd.service\nActiveState=active\n"), nil
	case "journalctl":
		return []byte("2024-01-01T00:00:00Z m1 anvil[1]: token " + testToken + "\n" + pemKey("PRIVATE KEY")), nil
	}
	return nil, errors.New("unexpected " + name)
}

func fakeStatus(context.Context, hostfs.Root) (*master.Status, error) {
	return &master.Status{Node: "m1", Role: "master", Healthy: true,
		Etcd: &master.EtcdStatus{Leader: "m1", Members: []master.EtcdMemberStatus{{Name: "m1", ID: "1", Leader: true}}}}, nil
}

// readArchive returns every file of a tar.gz by name.
func readArchive(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Mode != 0o600 {
			t.Errorf("%s: mode %o", hdr.Name, hdr.Mode)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = data
	}
}

// assertNoSecret fails for every secret found in any file or name.
func assertNoSecret(t *testing.T, files map[string][]byte, secrets []string) {
	t.Helper()
	for name, data := range files {
		for _, s := range secrets {
			if strings.Contains(name, s) || bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds the secret %q", name, s)
			}
		}
	}
}

func TestCollect(t *testing.T) {
	root, secrets := fakeHost(t)
	fe := &fakeExec{}
	now := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	res, err := Collect(context.Background(), &buf, Options{Root: root, Dir: "m1", ClusterObjects: true,
		Exec: fe.exec, ReadStatus: fakeStatus, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, buf.Bytes())
	want := []string{"versions.txt", "versions/v1.31.0/manifest.json", "status.json", "etcd.json", "units.txt",
		"supervisor/logs/kube-apiserver.log", "kernel/uname.txt", "kernel/cmdline", "kernel/self-cgroup",
		"kernel/filesystems", "kernel/cgroup-mounts.txt", "files/etc/anvil/cluster.yaml",
		"files/etc/anvil/encryption-config.yaml", "files/etc/kubernetes/admin.conf",
		"files/var/lib/anvil/agent/kubeconfig", "files/etc/systemd/system/anvil-etcd.service", "problems.txt"}
	for _, u := range units() {
		want = append(want, "journal/"+u+".log")
	}
	for _, u := range []string{"anvil-etcd.service", "kube-apiserver.service", "anvil-agent.service", "kubelet.service", "containerd.service"} {
		if !slices.Contains(units(), u) {
			t.Errorf("units() has no %s: %v", u, units())
		}
	}
	for _, w := range want {
		if _, ok := files["m1/"+w]; !ok {
			t.Errorf("no %s in the bundle", w)
		}
	}
	for name := range files {
		if !strings.HasPrefix(name, "m1/") {
			t.Errorf("%s is outside the host's directory", name)
		}
		if !slices.Contains(res.Files, name) {
			t.Errorf("%s is not in Result.Files", name)
		}
	}
	assertNoSecret(t, files, secrets)
	if m := string(files["m1/kernel/cgroup-mounts.txt"]); !strings.Contains(m, "cgroup2") || strings.Contains(m, "ext4") {
		t.Errorf("cgroup mounts: %q", m)
	}
	if !strings.Contains(string(files["m1/etcd.json"]), `"healthy": true`) {
		t.Errorf("etcd.json: %s", files["m1/etcd.json"])
	}
	// The admin kubeconfig points nowhere: the cluster's objects are a
	// problem named in the bundle, not the end of it.
	if p := string(files["m1/problems.txt"]); !strings.Contains(p, "cluster:") {
		t.Errorf("problems.txt does not name the cluster's objects: %q", p)
	}
	since := "--since @" + strconv.FormatInt(now.Add(-DefaultSince).Unix(), 10)
	var journals int
	for _, c := range fe.calls {
		if strings.HasPrefix(c, "journalctl") {
			journals++
			if !strings.Contains(c, since) {
				t.Errorf("%s: want %s", c, since)
			}
		}
	}
	if journals != len(units()) {
		t.Errorf("%d journalctl calls for %d units", journals, len(units()))
	}
}

func TestCollectNotAMember(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	var buf bytes.Buffer
	_, err := Collect(context.Background(), &buf, Options{Root: root, Dir: "w1", Exec: (&fakeExec{}).exec,
		ReadStatus: func(context.Context, hostfs.Root) (*master.Status, error) {
			t.Error("ReadStatus on a machine with no node state")
			return nil, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, buf.Bytes())
	if v := string(files["w1/versions.txt"]); !strings.Contains(v, "no anvil init or join ran") {
		t.Errorf("versions.txt: %q", v)
	}
}

// failingWriter fails after n bytes.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, errors.New("disk full")
	}
	w.n -= len(p)
	return len(p), nil
}

func TestCollectWriteFailure(t *testing.T) {
	root, _ := fakeHost(t)
	_, err := Collect(context.Background(), &failingWriter{n: 100}, Options{Root: root, Dir: "m1", Exec: (&fakeExec{}).exec, ReadStatus: fakeStatus})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want the write's failure", err)
	}
}
