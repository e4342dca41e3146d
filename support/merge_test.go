package support

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"strings"
	"testing"
	"time"
)

// hostArchive is a tar.gz as an older anvil on a host might send it:
// unredacted, with the cluster's objects.
func hostArchive(t *testing.T, dir string, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Name: dir + "/" + name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(data))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestBundle(t *testing.T) {
	root, secrets := fakeHost(t)
	var m1 bytes.Buffer
	if _, err := Collect(context.Background(), &m1, Options{Root: root, Dir: "whatever-the-host-calls-itself", Exec: (&fakeExec{}).exec, ReadStatus: fakeStatus}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	b := NewBundle(&out, time.Now())
	if err := b.AddHost("m1", &m1); err != nil {
		t.Fatal(err)
	}
	m2 := hostArchive(t, "m2", map[string]string{"status.json": `{"token": "` + testBearer + `"}`, "cluster/nodes.yaml": "kind: NodeList\n"})
	if err := b.AddHost("m2", bytes.NewReader(m2)); err != nil {
		t.Fatal(err)
	}
	m3 := hostArchive(t, "m3", map[string]string{"cluster/nodes.yaml": "kind: NodeList # m3\n"})
	if err := b.AddHost("m3", bytes.NewReader(m3)); err != nil {
		t.Fatal(err)
	}
	if err := b.AddFile(UnreachableFile, []byte("w2: connect: dial tcp 10.0.0.5:22: no route to host\n")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, out.Bytes())
	for _, want := range []string{"m1/status.json", "m1/files/etc/kubernetes/admin.conf", "m2/status.json", "cluster/nodes.yaml", UnreachableFile} {
		if _, ok := files[want]; !ok {
			t.Errorf("no %s", want)
		}
	}
	if n := string(files["cluster/nodes.yaml"]); strings.Contains(n, "m3") {
		t.Errorf("cluster/ is from m3, not the first host that had it: %q", n)
	}
	for name := range files {
		if strings.HasPrefix(name, "whatever") || strings.HasPrefix(name, "m3/cluster") || strings.HasPrefix(name, "m2/cluster") {
			t.Errorf("unexpected %s", name)
		}
	}
	assertNoSecret(t, files, secrets)
}

func TestBundleRefusesEscapes(t *testing.T) {
	for _, name := range []string{"../../etc/passwd", "/etc/passwd", "toplevel"} {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gz)
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: 1, Typeflag: tar.TypeReg})
		tw.Write([]byte("x"))
		tw.Close()
		gz.Close()
		if err := NewBundle(&bytes.Buffer{}, time.Now()).AddHost("m1", &buf); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
