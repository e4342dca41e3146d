package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestRootRefusesSymlinksOut plays whoever laid out a --root tree: each
// case plants a symlink leading out of the root, and a write or read
// through it must fail and leave the outside as it was.
func TestRootRefusesSymlinksOut(t *testing.T) {
	for _, tc := range []struct {
		name string
		// plant lays out the root; outside is the directory it must not
		// reach.
		plant func(t *testing.T, root, outside string)
		// onlyFile: the link is the file itself, so its directory is
		// the root's own and new files in it are fine.
		onlyFile bool
	}{
		{"absolute link for a parent", func(t *testing.T, root, outside string) {
			symlink(t, outside, filepath.Join(root, "etc"))
		}, false},
		{"relative link climbing out", func(t *testing.T, root, outside string) {
			rel, err := filepath.Rel(root, outside)
			if err != nil {
				t.Fatal(err)
			}
			symlink(t, rel, filepath.Join(root, "etc"))
		}, false},
		{"link deeper down", func(t *testing.T, root, outside string) {
			mkdir(t, filepath.Join(root, "etc"))
			symlink(t, outside, filepath.Join(root, "etc", "anvil"))
		}, false},
		{"link inside pointing at a link out", func(t *testing.T, root, outside string) {
			symlink(t, outside, filepath.Join(root, "out"))
			symlink(t, "out", filepath.Join(root, "etc"))
		}, false},
		{"link for the file itself", func(t *testing.T, root, outside string) {
			mkdir(t, filepath.Join(root, "etc", "anvil"))
			symlink(t, filepath.Join(outside, "anvil", "cluster.yaml"), filepath.Join(root, "etc", "anvil", "cluster.yaml"))
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
			mkdir(t, root)
			mkdir(t, filepath.Join(outside, "anvil"))
			victim := filepath.Join(outside, "anvil", "cluster.yaml")
			if err := os.WriteFile(victim, []byte("the machine's own\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			tc.plant(t, root, outside)

			r, err := OpenRoot(root)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if _, err := r.EnsureFile("/etc/anvil/cluster.yaml", []byte("anvil's\n"), 0o600, 0o700); err == nil {
				t.Error("EnsureFile followed a symlink out of the root")
			}
			if !tc.onlyFile {
				if _, err := r.EnsureFile("/etc/anvil/new.yaml", []byte("anvil's\n"), 0o600, 0o700); err == nil {
					t.Error("EnsureFile of a new file followed a symlink out of the root")
				}
				if _, err := r.EnsureDir("/etc/anvil/processes", 0o700, 0o700); err == nil {
					t.Error("EnsureDir followed a symlink out of the root")
				}
			}
			if b, err := r.ReadFile("/etc/anvil/cluster.yaml"); err == nil {
				t.Errorf("ReadFile read %q from outside the root", b)
			}
			if b, err := os.ReadFile(victim); err != nil || string(b) != "the machine's own\n" {
				t.Errorf("outside file now %q (%v)", b, err)
			}
			if fi, err := os.Stat(victim); err != nil || fi.Mode().Perm() != 0o644 {
				t.Errorf("outside file's mode changed: %v %v", fi.Mode(), err)
			}
			ents, err := os.ReadDir(filepath.Join(outside, "anvil"))
			if err != nil || len(ents) != 1 {
				t.Errorf("outside directory now holds %v (%v)", ents, err)
			}
		})
	}
}

// TestRootFollowsLinksInside: a tree whose links stay inside it (a
// distribution's /etc/alternatives style) is written through them.
func TestRootFollowsLinksInside(t *testing.T) {
	root := t.TempDir()
	mkdir(t, filepath.Join(root, "real-etc"))
	symlink(t, "real-etc", filepath.Join(root, "etc"))
	r, err := OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, want := range []Outcome{Created, Unchanged} {
		got, err := r.EnsureFile("/etc/anvil/cluster.yaml", []byte("x\n"), 0o600, 0o700)
		if err != nil || got != want {
			t.Fatalf("run %d: %v %v, want %v", i, got, err, want)
		}
	}
	if got, err := r.EnsureFile("/etc/anvil/cluster.yaml", []byte("x\n"), 0o640, 0o700); err != nil || got != Updated {
		t.Fatalf("chmod: %v %v", got, err)
	}
	fi, err := os.Stat(filepath.Join(root, "real-etc", "anvil", "cluster.yaml"))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("written file: %v %v", fi, err)
	}
	if got, err := r.EnsureDir("/etc/anvil/processes", 0o750, 0o700); err != nil || got != Created {
		t.Fatalf("EnsureDir: %v %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "real-etc", "anvil", "processes")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("directory: %v %v", fi, err)
	}
	if _, err := r.Stat("/etc/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a missing file: %v", err)
	}
	if r.Path("/etc/x") != filepath.Join(root, "etc/x") {
		t.Errorf("Path: %s", r.Path("/etc/x"))
	}
	left, _ := filepath.Glob(filepath.Join(root, "real-etc", "anvil", ".*tmp*"))
	if len(left) != 0 {
		t.Fatalf("temp files left behind: %v", left)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}
