package installer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"anvil.dev/anvil/images"
)

// localFile writes size random bytes (compressible: half zeros) and
// describes it as the bundle does.
func localFile(t testing.TB, dir, name string, size int) bundleFile {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b[:size/2])
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bundleFile{File: images.File{Name: name, SHA256: sha256Hex(b), Size: int64(size)}, path: p}
}

func noMeter(_ string, _ int64, r io.Reader) io.Reader { return r }

// roundTrip writes the stream for u and has Receive land it.
func roundTrip(t *testing.T, comp *compressor, manifest []byte, u upload, dir, linkDir string) ([]Received, error) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		_, err := writeStream(context.Background(), pw, comp, manifest, u, noMeter)
		pw.CloseWithError(err)
	}()
	var out bytes.Buffer
	err := Receive(context.Background(), pr, &out, ReceiveOptions{Dir: dir, LinkDirs: []string{linkDir}})
	pr.Close()
	var got []Received
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l == "" {
			continue
		}
		var r Received
		if err := jsonUnmarshal(l, &r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	return got, err
}

func TestStreamRoundTrip(t *testing.T) {
	src, cache, host := t.TempDir(), t.TempDir(), t.TempDir()
	dir, linkDir := filepath.Join(host, "opt/anvil/bin/v1"), filepath.Join(host, "usr/local/bin")
	a := localFile(t, src, "kube-apiserver", 3<<20)
	b := localFile(t, src, "kubectl", 1<<20)
	comp, err := newCompressor(cache)
	if err != nil {
		t.Fatal(err)
	}
	manifest := []byte(`{"kubernetesVersion":"v1"}` + "\n")
	got, err := roundTrip(t, comp, manifest, upload{files: []bundleFile{a, b}, manifest: true, links: []hostLink{{name: "kubectl", dir: linkDir}}}, dir, linkDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].Name != "kube-apiserver" || got[0].SHA256 != a.SHA256 || got[2].Name != images.ManifestFile || !got[3].Changed {
		t.Errorf("received %+v", got)
	}
	for _, f := range []bundleFile{a, b} {
		if err := f.Verify(filepath.Join(dir, f.Name)); err != nil {
			t.Error(err)
		}
		fi, _ := os.Stat(filepath.Join(dir, f.Name))
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v", f.Name, fi.Mode())
		}
	}
	if m, _ := os.ReadFile(filepath.Join(dir, images.ManifestFile)); !bytes.Equal(m, manifest) {
		t.Errorf("manifest %q", m)
	}
	if target, err := os.Readlink(filepath.Join(linkDir, "kubectl")); err != nil || target != filepath.Join(dir, "kubectl") {
		t.Errorf("link: %q, %v", target, err)
	}
	// Compressed once, cached for the next host and the next run.
	if entries, _ := os.ReadDir(cache); len(entries) != 2 {
		t.Errorf("cache has %d entries", len(entries))
	}
	// Nothing is left beside the files.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	// The same link again is no change.
	got, err = roundTrip(t, comp, nil, upload{links: []hostLink{{name: "kubectl", dir: linkDir}}}, dir, linkDir)
	if err != nil || len(got) != 1 || got[0].Changed {
		t.Errorf("second link: %+v, %v", got, err)
	}
}

// fileRecord is a file record of the upload stream and its frame.
func fileRecord(t *testing.T, rec record, data []byte) string {
	t.Helper()
	z, err := zstdBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	rec.Op, rec.Size, rec.SHA256, rec.ZSize = "file", int64(len(data)), sha256Hex(data), int64(len(z))
	j, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return string(j) + "\n" + string(z)
}

// Files land in a subdirectory of the version directory or in another
// directory the receiver was given; links go in the link directory the
// record names, after the file's base name.
func TestReceiveSubdirectoriesAndDirectories(t *testing.T) {
	host := t.TempDir()
	dir, images, bin, cni := filepath.Join(host, "opt/anvil/bin/v1"), filepath.Join(host, "var/lib/anvil/images"), filepath.Join(host, "usr/local/bin"), filepath.Join(host, "opt/cni/bin")
	stream := fileRecord(t, record{Name: "cni/bridge", Mode: 0o755}, []byte("bridge")) +
		fileRecord(t, record{Name: "app.tar", Dir: images, Mode: 0o644}, []byte("app")) +
		`{"op":"link","name":"cni/bridge","dir":"` + cni + `"}` + "\n" +
		`{"op":"end"}` + "\n"
	var out bytes.Buffer
	if err := Receive(context.Background(), strings.NewReader(stream), &out, ReceiveOptions{Dir: dir, FileDirs: []string{images}, LinkDirs: []string{bin, cni}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cni", "bridge")); err != nil || string(b) != "bridge" {
		t.Errorf("cni/bridge: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(images, "app.tar")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("app.tar: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(cni, "bridge")); err != nil || target != filepath.Join(dir, "cni", "bridge") {
		t.Errorf("link: %q, %v", target, err)
	}
	if _, err := os.Lstat(filepath.Join(bin, "bridge")); err == nil {
		t.Error("the link was made in the first link directory too")
	}
	if !strings.Contains(out.String(), `"dir":"`+images+`"`) {
		t.Errorf("received: %s", out.String())
	}
}

func TestCorruptUploadReplacesNothing(t *testing.T) {
	src, cache, host := t.TempDir(), t.TempDir(), t.TempDir()
	dir := filepath.Join(host, "bin", "v1")
	f := localFile(t, src, "kube-scheduler", 1<<20)
	comp, _ := newCompressor(cache)
	p, _, err := comp.compressed(context.Background(), f, codecZstd)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, f.Name), []byte("the old binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Flip one byte in the middle of the compressed data.
	z, _ := os.ReadFile(p)
	z[len(z)/2] ^= 0xff
	if err := os.WriteFile(p, z, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = roundTrip(t, comp, nil, upload{files: []bundleFile{f}}, dir, filepath.Join(host, "links"))
	if err == nil {
		t.Fatal("a corrupted upload was accepted")
	}
	if old, _ := os.ReadFile(filepath.Join(dir, f.Name)); string(old) != "the old binary" {
		t.Errorf("the old binary was replaced by a bad upload")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestReceiveChecksSize(t *testing.T) {
	// A frame that decodes to other bytes than its header says.
	z, _ := zstdBytes([]byte("hello"))
	rec := `{"op":"file","name":"x","size":5,"sha256":"` + strings.Repeat("0", 64) + `","zsize":` + itoa(len(z)) + "}\n"
	in := io.MultiReader(strings.NewReader(rec), bytes.NewReader(z), strings.NewReader(`{"op":"end"}`+"\n"))
	err := Receive(context.Background(), in, io.Discard, ReceiveOptions{Dir: t.TempDir(), LinkDirs: []string{t.TempDir()}})
	var mismatch *ChecksumMismatchError
	if !errors.As(err, &mismatch) || mismatch.Got != sha256Hex([]byte("hello")) {
		t.Fatalf("err = %v", err)
	}
}

func TestReceiveRefuses(t *testing.T) {
	for name, stream := range map[string]string{
		"path in a name":           `{"op":"file","name":"../x","size":1,"sha256":"` + strings.Repeat("0", 64) + `","zsize":1}` + "\n",
		"two subdirectories":       `{"op":"file","name":"cni/a/x","size":1,"sha256":"` + strings.Repeat("0", 64) + `","zsize":1}` + "\n",
		"a directory not given":    `{"op":"file","dir":"/etc","name":"x","size":1,"sha256":"` + strings.Repeat("0", 64) + `","zsize":1}` + "\n",
		"a subdirectory elsewhere": `{"op":"file","dir":"/images","name":"a/x","size":1,"sha256":"` + strings.Repeat("0", 64) + `","zsize":1}` + "\n",
		"hidden name":              `{"op":"link","name":".x"}` + "\n",
		"a link dir not given":     `{"op":"link","dir":"/etc","name":"x"}` + "\n",
		"no end":                   `{"op":"link","name":"x"}`,
		"unknown op":               `{"op":"exec","name":"x"}` + "\n",
		"huge header":              strings.Repeat("x", 8000) + "\n",
		"not json at all":          "hello\n",
	} {
		t.Run(name, func(t *testing.T) {
			if err := Receive(context.Background(), strings.NewReader(stream), io.Discard, ReceiveOptions{Dir: t.TempDir(), FileDirs: []string{"/images"}, LinkDirs: []string{t.TempDir()}}); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestLinksOnlyReplaceAnvils(t *testing.T) {
	host := t.TempDir()
	dir := filepath.Join(host, "opt/anvil/bin/v2")
	linkDir := filepath.Join(host, "usr/local/bin")
	for _, d := range []string{dir, linkDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"kubectl", "anvil", "kube-scheduler"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// kubectl: someone's own binary; anvil: a link into an older anvil
	// version (replaced); kube-scheduler: a link elsewhere (refused).
	if err := os.WriteFile(filepath.Join(linkDir, "kubectl"), []byte("mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(host, "opt/anvil/bin/v1/anvil"), filepath.Join(linkDir, "anvil")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/bin/true", filepath.Join(linkDir, "kube-scheduler")); err != nil {
		t.Fatal(err)
	}
	if _, err := ensureLink(dir, linkDir, "kubectl"); err == nil || !strings.Contains(err.Error(), "not a link anvil made") {
		t.Errorf("kubectl: %v", err)
	}
	if res, err := ensureLink(dir, linkDir, "anvil"); err != nil || !res.Changed {
		t.Errorf("anvil: %+v, %v", res, err)
	}
	if _, err := ensureLink(dir, linkDir, "kube-scheduler"); err == nil || !strings.Contains(err.Error(), "not anvil's") {
		t.Errorf("kube-scheduler: %v", err)
	}
}

func TestCompressorRefusesABinaryThatLeftItsManifest(t *testing.T) {
	src := t.TempDir()
	f := localFile(t, src, "kubectl", 4096)
	f.SHA256 = strings.Repeat("a", 64)
	comp, _ := newCompressor(t.TempDir())
	_, _, err := comp.compressed(context.Background(), f, codecZstd)
	var ce *images.ChecksumError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *images.ChecksumError", err)
	}
	if entries, _ := os.ReadDir(comp.dir); len(entries) != 0 {
		t.Errorf("cache keeps %v", entries)
	}
}

func TestHashFiles(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	var want strings.Builder
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		f := localFile(t, dir, n, 100000)
		paths = append(paths, f.path)
		want.WriteString(f.SHA256 + "  " + f.path + "\n")
	}
	var out bytes.Buffer
	if err := HashFiles(context.Background(), &out, paths, "", false); err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(out.String(), "\n")
	if !strings.HasPrefix(out.String(), hashVersionPrefix) || body != want.String() {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want.String())
	}
	if err := HashFiles(context.Background(), io.Discard, []string{filepath.Join(dir, "missing")}, "", false); err == nil {
		t.Error("a missing file hashed")
	}
}

// The hash cache spares reading a file again only while nothing could
// have changed it: a byte written with size and mtime put back (touch -r)
// changes its ctime, and it is hashed again.
func TestHashCacheDecidesByContent(t *testing.T) {
	dir := t.TempDir()
	f := localFile(t, dir, "kube-scheduler", 100000)
	cache := filepath.Join(dir, "cache", "sha256.json")
	hash := func(update bool) string {
		t.Helper()
		var out bytes.Buffer
		if err := HashFiles(context.Background(), &out, []string{f.path}, cache, update); err != nil {
			t.Fatal(err)
		}
		_, body, _ := strings.Cut(out.String(), "\n")
		sum, _, _ := strings.Cut(body, "  ")
		return sum
	}
	if got := hash(false); got != f.SHA256 {
		t.Fatalf("sha256 %s, want %s", got, f.SHA256)
	}
	if _, err := os.Stat(cache); err == nil {
		t.Fatal("a cache written without --update-cache")
	}
	if got := hash(true); got != f.SHA256 {
		t.Fatalf("sha256 %s, want %s", got, f.SHA256)
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache %v, %v", fi, err)
	}
	// A lie in the cache for the same stat is believed: that is what the
	// cache is for; the stat is what guards it.
	c := loadHashCache(cache)
	c.put(f.path, strings.Repeat("0", 64))
	if err := c.save(); err != nil {
		t.Fatal(err)
	}
	if got := hash(true); got != strings.Repeat("0", 64) {
		t.Fatalf("the cache was not used: %s", got)
	}
	// One byte changed, size and mtime put back: hashed again.
	fi, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := os.OpenFile(f.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("X"), 4096); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := os.Chtimes(f.path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	if got := hash(true); got != sha256Hex(b) {
		t.Errorf("after a changed byte: %s, want %s", got, sha256Hex(b))
	}
}

// What Receive lands is in the cache it is given, so the next facts do
// not read it again.
func TestReceiveRecordsInTheCache(t *testing.T) {
	src, comp, host := t.TempDir(), t.TempDir(), t.TempDir()
	c, err := newCompressor(comp)
	if err != nil {
		t.Fatal(err)
	}
	f := localFile(t, src, "kubectl", 50000)
	var stream bytes.Buffer
	if _, err := writeStream(context.Background(), &stream, c, nil, upload{files: []bundleFile{f}}, noMeter); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(host, "sha256.json")
	dir := filepath.Join(host, "v1")
	if err := Receive(context.Background(), &stream, io.Discard, ReceiveOptions{Dir: dir, LinkDirs: []string{filepath.Join(host, "bin")}, Cache: cache}); err != nil {
		t.Fatal(err)
	}
	if sum, ok := loadHashCache(cache).get(filepath.Join(dir, "kubectl")); !ok || sum != f.SHA256 {
		t.Errorf("cache has %q, %v; want %s", sum, ok, f.SHA256)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func itoa(n int) string { return strconv.Itoa(n) }
