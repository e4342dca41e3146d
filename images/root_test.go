package images

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// layerEntries lists a layer's entries as "name type [link]".
func layerEntries(t *testing.T, rc io.ReadCloser) []string {
	t.Helper()
	defer rc.Close()
	var out []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		e := h.Name + " " + string(h.Typeflag)
		if h.Linkname != "" {
			e += " " + h.Linkname
		}
		out = append(out, e)
	}
}

func TestTreeLayer(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"dev/pts", "usr/bin", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "dev", "console"), nil, 0o600)
	os.WriteFile(filepath.Join(root, "usr", "bin", "dig"), []byte("dig"), 0o755)
	os.Link(filepath.Join(root, "usr", "bin", "dig"), filepath.Join(root, "usr", "bin", "host"))
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	rc, err := treeLayer(root)
	if err != nil {
		t.Fatal(err)
	}
	got := layerEntries(t, rc)
	want := []string{"bin 2 usr/bin", "dev/ 5", "etc/ 5", "etc/passwd 0", "usr/ 5", "usr/bin/ 5", "usr/bin/dig 0", "usr/bin/host 1 usr/bin/dig"}
	if !slices.Equal(got, want) {
		t.Errorf("layer holds\n%q\nwant\n%q", got, want)
	}
}

// fakeBusybox makes root a root with users and groups, and returns a
// stand-in busybox beside it (the image's busybox is not the root's) that
// lists its applets as busybox does.
func fakeBusybox(t *testing.T, root string) string {
	t.Helper()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\n"), 0o644)
	bin := filepath.Join(t.TempDir(), "busybox")
	os.WriteFile(bin, []byte("#!/bin/sh\nprintf 'bin/sh\\nusr/bin/wget\\nsbin/ip\\nbin/busybox\\n'\n"), 0o755)
	return bin
}

func TestBusyboxLayer(t *testing.T) {
	root := t.TempDir()
	bin := fakeBusybox(t, root)
	rc, err := busyboxLayer(bin, root)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(layerEntries(t, rc), "\n")
	for _, want := range []string{"bin/busybox 0", "etc/passwd 0", "etc/group 0", "tmp/ 5", "usr/bin/ 5", "bin/sh 2 /bin/busybox", "usr/bin/wget 2 /bin/busybox", "sbin/ip 2 /bin/busybox"} {
		if !strings.Contains(got, want+"\n") && !strings.HasSuffix(got, want) {
			t.Errorf("layer lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "bin/busybox 2") {
		t.Error("busybox links to itself")
	}
}

func TestImageArchiveOnRoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr", "bin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr", "bin", "curl"), []byte("curl"), 0o755)
	bin := filepath.Join(t.TempDir(), "agnhost")
	os.WriteFile(bin, []byte("\x7fELF not really"), 0o755)
	spec := imageSpec{Ref: "registry.k8s.io/e2e-test-images/agnhost:2.66.1", AlsoRefs: []string{"registry.k8s.io/e2e-test-images/agnhost:2.55"}, Cmd: []string{"pause"}}
	out := filepath.Join(t.TempDir(), "agnhost.tar")
	if err := writeImageArchive(imageFiles{bin: bin, root: root}, spec, out); err != nil {
		t.Fatal(err)
	}
	cfg, err := ReadImageArchive(out)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(cfg.Tags)
	if !slices.Equal(cfg.Tags, []string{spec.AlsoRefs[0], spec.Ref}) || !slices.Equal(cfg.Entrypoint, []string{"/agnhost"}) ||
		!slices.Equal(cfg.Cmd, []string{"pause"}) || !slices.Contains(cfg.Files, "/usr/bin/curl") || !slices.Contains(cfg.Files, "/agnhost") {
		t.Errorf("read back %+v", cfg)
	}
	// An image of its root alone has no entrypoint but its command.
	spec = imageSpec{Ref: "registry.k8s.io/e2e-test-images/nginx:1.27.0-2", Cmd: []string{"nginx", "-g", "daemon off;"}}
	if err := writeImageArchive(imageFiles{root: root}, spec, out); err != nil {
		t.Fatal(err)
	}
	if cfg, err = ReadImageArchive(out); err != nil {
		t.Fatal(err)
	}
	if cfg.Entrypoint != nil || !slices.Equal(cfg.Cmd, spec.Cmd) || !slices.Equal(cfg.Files, []string{"/usr", "/usr/bin", "/usr/bin/curl"}) {
		t.Errorf("read back %+v", cfg)
	}
	// An image of busybox alone keeps the root's users, not its files.
	bb := fakeBusybox(t, root)
	spec = imageSpec{Ref: "registry.k8s.io/e2e-test-images/busybox:1.37.0-1", Busybox: &busyboxSpec{}, Cmd: []string{"sh"}}
	if err := writeImageArchive(imageFiles{root: root, busybox: bb}, spec, out); err != nil {
		t.Fatal(err)
	}
	if cfg, err = ReadImageArchive(out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"/bin/busybox", "/bin/sh", "/etc/passwd", "/tmp"} {
		if !slices.Contains(cfg.Files, f) {
			t.Errorf("the busybox image lacks %s: %v", f, cfg.Files)
		}
	}
	if slices.Contains(cfg.Files, "/usr/bin/curl") {
		t.Errorf("the busybox image holds the root's files: %v", cfg.Files)
	}
	// Its spec and its files must agree.
	if err := writeImageArchive(imageFiles{root: root}, spec, out); err == nil {
		t.Error("a busybox image without its busybox was written")
	}
}
