package main

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/node"
)

// writeTar writes a tar holding the named (empty) files.
func writeTar(t *testing.T, path string, names ...string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestImagesImportArchives: `anvil images import` hands image archives to
// the node stack's ctr in containerd's k8s.io namespace; one file that is
// not an image makes it import none, and the error names the file.
func TestImagesImportArchives(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	bin := root.Bin(images.DefaultVersion)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(string(root), "ctr-calls")
	// ctr as far as this test needs it: it records what it was asked.
	script := "#!/bin/sh\necho \"$@\" >> " + calls + "\n"
	if err := os.WriteFile(filepath.Join(bin, images.Ctr), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good, oci, bad := filepath.Join(dir, "web.tar"), filepath.Join(dir, "oci.tar"), filepath.Join(dir, "notes.tar")
	writeTar(t, good, "manifest.json", "layer.tar")
	writeTar(t, oci, "oci-layout", "index.json", "blobs/sha256/x")
	writeTar(t, bad, "README")

	_, errOut, code := runAnvil(t, "", "images", "import", "--root", string(root), good, bad)
	if code == 0 || !strings.Contains(errOut, bad) || !strings.Contains(errOut, "nothing was imported") {
		t.Fatalf("import with a file that is not an image: exit %d\n%s", code, errOut)
	}
	if _, err := os.Stat(calls); err == nil {
		t.Fatal("ctr ran although one file was not an image")
	}

	out, errOut, code := runAnvil(t, "", "images", "import", "--root", string(root), good, oci)
	if code != 0 {
		t.Fatalf("import: exit %d\n%s", code, errOut)
	}
	b, _ := os.ReadFile(calls)
	for _, f := range []string{good, oci} {
		want := "--address " + root.Path(node.ContainerdSocket) + " -n " + node.ImageNamespace + " images import " + f
		if !strings.Contains(string(b), want) {
			t.Errorf("ctr was not asked %q:\n%s", want, b)
		}
		if !strings.Contains(out, "imported "+f) {
			t.Errorf("output does not say %s was imported:\n%s", f, out)
		}
	}
	// Once per content: a second run leaves them.
	out, _, code = runAnvil(t, "", "images", "import", "--root", string(root), good)
	if b2, _ := os.ReadFile(calls); code != 0 || len(b2) != len(b) || !strings.Contains(out, "imported before") {
		t.Errorf("a second import: exit %d, ctr asked again: %v\n%s", code, len(b2) != len(b), out)
	}
}
