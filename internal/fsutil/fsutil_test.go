package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "key.pem")
	steps := []struct {
		data []byte
		mode os.FileMode
		want Outcome
	}{
		{[]byte("one"), 0o600, Created},
		{[]byte("one"), 0o600, Unchanged},
		{[]byte("one"), 0o644, Updated},
		{[]byte("two"), 0o644, Updated},
	}
	for i, s := range steps {
		got, err := EnsureFile(p, s.data, s.mode, 0o700)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got != s.want {
			t.Fatalf("step %d: outcome %v, want %v", i, got, s.want)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != s.mode {
			t.Fatalf("step %d: mode %v, want %v", i, fi.Mode().Perm(), s.mode)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "a"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("parent dir mode: %v %v", fi.Mode(), err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "a", "b", ".*tmp*"))
	if len(left) != 0 {
		t.Fatalf("temp files left behind: %v", left)
	}
}

func TestWriteFileFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	// The target is a directory, so the final rename fails.
	target := filepath.Join(dir, "x")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(target, []byte("data"), 0o600, 0o700); err == nil {
		t.Fatal("expected an error writing over a non-empty directory")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}
