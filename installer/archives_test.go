package installer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTar writes a tar of files (name → content, in the order given by
// names) into dir/name.
func writeTar(t testing.TB, dir, name string, names []string, files map[string][]byte) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeDockerArchive writes what `docker save ref` writes, in small.
func writeDockerArchive(t testing.TB, dir, name, ref string) string {
	t.Helper()
	m, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{ref}, "Layers": []string{"layer.tar"}}})
	return writeTar(t, dir, name, []string{"manifest.json", "config.json", "layer.tar"}, map[string][]byte{
		"manifest.json": m, "config.json": []byte(`{"architecture":"amd64","os":"linux"}`), "layer.tar": make([]byte, 1024),
	})
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeOCIArchive writes an OCI image layout in a tar, naming ref; with
// lacking set, the layer's blob is left out.
func writeOCIArchive(t testing.TB, dir, name, ref string, lacking bool) string {
	t.Helper()
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := make([]byte, 512)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + digestOf(config), "size": len(config)},
		"layers": []map[string]any{{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + digestOf(layer), "size": len(layer)}},
	})
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []map[string]any{{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + digestOf(manifest), "size": len(manifest),
			"annotations": map[string]string{"io.containerd.image.name": ref}}},
	})
	files := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`), "index.json": index,
		"blobs/sha256/" + digestOf(manifest): manifest, "blobs/sha256/" + digestOf(config): config,
	}
	names := []string{"oci-layout", "index.json", "blobs/sha256/" + digestOf(manifest), "blobs/sha256/" + digestOf(config)}
	if !lacking {
		files["blobs/sha256/"+digestOf(layer)] = layer
		names = append(names, "blobs/sha256/"+digestOf(layer))
	}
	return writeTar(t, dir, name, names, files)
}

func TestLoadArchives(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	docker := writeDockerArchive(t, dir, "app.tar", "example.com/app:1")
	oci := writeOCIArchive(t, dir, "oci.tar", "example.com/oci:2", false)
	lacking := writeOCIArchive(t, dir, "lacking.tar", "example.com/oci:3", true)
	notImage := writeTar(t, dir, "notes.tar", []string{"README"}, map[string][]byte{"README": []byte("hello")})
	unnamed := writeTar(t, dir, "unnamed.tar", []string{"manifest.json", "config.json", "layer.tar"}, map[string][]byte{
		"manifest.json": []byte(`[{"Config":"config.json","Layers":["layer.tar"]}]`), "config.json": []byte("{}"), "layer.tar": make([]byte, 10)})
	sameName := writeDockerArchive(t, other, "app.tar", "example.com/other:1")
	pause := writeDockerArchive(t, other, "pause.tar", "example.com/pause:1")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	raw, _ := os.ReadFile(docker)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	compressed := filepath.Join(dir, "app.tar.gz")
	if err := os.WriteFile(compressed, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "text.tar")
	if err := os.WriteFile(text, []byte("not a tar at all, just some words in a file that is long enough\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resolve := func(s string) (string, error) { return filepath.Join(dir, s), nil }
	rel := func(p string) string { r, _ := filepath.Rel(dir, p); return r }

	t.Run("fine", func(t *testing.T) {
		got, problems := loadArchives([]string{rel(docker), rel(oci)}, resolve, []string{"pause.tar"})
		if len(problems) != 0 || len(got) != 2 {
			t.Fatalf("%v %+v", problems, got)
		}
		if got[0].name != "app.tar" || got[0].refs[0] != "example.com/app:1" || got[1].refs[0] != "example.com/oci:2" || !isSHA256(got[0].sha256) || got[0].size == 0 {
			t.Errorf("%+v", got)
		}
	})
	for _, tc := range []struct {
		name  string
		specs []string
		want  []string // in the one problem
	}{
		{"not an image", []string{rel(notImage)}, []string{"images[0]", "notes.tar", "not an image archive"}},
		{"not a tar", []string{rel(text)}, []string{"images[0]", "text.tar", "not a tar file"}},
		{"compressed", []string{rel(compressed)}, []string{"images[0]", "app.tar.gz", "gzip-compressed"}},
		{"blobs lacking", []string{rel(lacking)}, []string{"images[0]", "lacking.tar", "which it lacks"}},
		{"no names", []string{rel(unnamed)}, []string{"images[0]", "unnamed.tar", "no names"}},
		{"missing", []string{"gone.tar"}, []string{"images[0]", "gone.tar", "no such file"}},
		{"listed twice", []string{rel(docker), rel(docker)}, []string{"images[1]", "listed twice", "images[0]"}},
		{"same name", []string{rel(docker), sameName}, []string{"images[0]", "images[1]", "same name app.tar", "/var/lib/anvil/images/app.tar"}},
		{"the build's name", []string{pause}, []string{"images[0]", "pause.tar", "the build's own images/pause.tar"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, problems := loadArchives(tc.specs, resolve, []string{"pause.tar"})
			if len(problems) != 1 {
				t.Fatalf("problems %q", problems)
			}
			for _, w := range tc.want {
				if !strings.Contains(problems[0], w) {
					t.Errorf("%q lacks %q", problems[0], w)
				}
			}
		})
	}
}

// Paths in images: are relative to the cluster file, and a bad archive is
// a problem of every host's in validate, naming the field and the file.
func TestArchivesInValidate(t *testing.T) {
	b := fakeBuild(t)
	dir := t.TempDir()
	writeTar(t, dir, "notes.tar", []string{"README"}, map[string][]byte{"README": []byte("hello")})
	b.addArchives([]string{"notes.tar"}, filepath.Join(dir, "cluster.yaml"))
	c, hs := fleet(t, 2)
	v := validateFacts(c, b, hs, false)
	for _, h := range hs {
		got := problems(v[h])
		if !strings.Contains(got, "image archive images[0] notes.tar ("+filepath.Join(dir, "notes.tar")+"): not an image archive") {
			t.Errorf("%s: %q", h.Name, got)
		}
	}
}
