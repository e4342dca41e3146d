package installer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/support"
)

// hostBundle is what `anvil support-bundle -o -` sends, with a secret an
// older anvil might have let through.
func hostBundle(t *testing.T, dir string) string {
	t.Helper()
	var buf bytes.Buffer
	b := support.NewBundle(&buf, time.Now())
	for name, data := range map[string]string{"status.json": "{}", "files/etc/kubernetes/admin.conf": "    client-key-data: S3VwZXJTZWNyZXRLZXlEYXRh\n", "cluster/nodes.yaml": "kind: NodeList\n"} {
		if err := b.AddFile(dir+"/"+name, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestSupportBundleGathersHostsAndNamesTheOthers(t *testing.T) {
	r, _ := newTestRun(t, "m1", "m2", "w1")
	m1, cfg1 := newFakeHost(t, fakeRule{contains: "support-bundle", stdout: hostBundle(t, "m1-hostname")})
	m2, cfg2 := newFakeHost(t, fakeRule{contains: "support-bundle", stdout: hostBundle(t, "m2")})
	_, cfgW := newFakeHost(t, fakeRule{contains: "support-bundle", status: 127})
	r.hosts[0].client = dialFake(t, cfg1)
	r.hosts[1].client = dialFake(t, cfg2)
	r.hosts[2].client = dialFake(t, cfgW)
	r.support = &supportState{since: 2 * time.Hour, dir: t.TempDir(), files: map[*host]string{}}
	_ = r.do(context.Background(), "support-bundle", []flowPhase{looking("collect", planCollect)})

	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	res := &SupportBundleResult{Unreachable: map[string]string{}}
	if err := writeBundle(out, r, res); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", out, fi.Mode(), err)
	}
	files := untar(t, out)
	for _, want := range []string{"m1/status.json", "m2/status.json", "cluster/nodes.yaml", "unreachable.txt"} {
		if _, ok := files[want]; !ok {
			t.Errorf("no %s in %v", want, keys(files))
		}
	}
	if u := files["unreachable.txt"]; !strings.HasPrefix(u, "w1 (worker, 10.0.0.3): collect: anvil support-bundle exited with status 127") {
		t.Errorf("unreachable.txt: %q", u)
	}
	if _, ok := res.Unreachable["w1"]; !ok || len(res.Hosts) != 2 {
		t.Errorf("result: %+v", res)
	}
	for name, data := range files {
		if strings.Contains(data, "S3VwZXJTZWNyZXRLZXlEYXRh") {
			t.Errorf("%s holds a client key", name)
		}
	}
	// Only the first master is asked for the cluster's objects.
	c1, c2 := m1.recorded()[0].cmd, m2.recorded()[0].cmd
	if !strings.Contains(c1, "--cluster-objects") || strings.Contains(c2, "--cluster-objects") || !strings.Contains(c1, "'--since' '2h0m0s'") && !strings.Contains(c1, "--since 2h0m0s") {
		t.Errorf("commands:\n%s\n%s", c1, c2)
	}
}

func TestSupportBundleFailureLeavesNoFile(t *testing.T) {
	r, _ := newTestRun(t, "m1")
	dir := t.TempDir()
	bad := filepath.Join(dir, "m1.tar.gz")
	if err := os.WriteFile(bad, []byte("not a gzip stream"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.support = &supportState{dir: dir, files: map[*host]string{r.hosts[0]: bad}}
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := writeBundle(out, r, &SupportBundleResult{Unreachable: map[string]string{}}); err == nil {
		t.Fatal("no error from a host's broken archive")
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func untar(t *testing.T, p string) map[string]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[hdr.Name] = string(b)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
