package images

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The per-user cache keeps one directory per finished build, named by the
// build, its version and its input hash (buildPlan.cacheEntry), holding the
// build's files and a manifest.json that lists them with their input hash.
// Several checkouts (and several `make kube` at once) share it: an entry is
// only ever created whole by a rename, a valid entry is never replaced, and
// a reader verifies what it copied out before using it.

// fromCache puts the cached build entry (for inputHash, holding exactly the
// files names) into dir when the entry exists and verifies, and returns its
// manifest.
func fromCache(cacheDir, entry, inputHash, dir string, names []string) (*Manifest, bool) {
	if cacheDir == "" {
		return nil, false
	}
	src := filepath.Join(cacheDir, entry)
	m, err := decodeManifest(filepath.Join(src, ManifestFile))
	if err != nil || m.InputHash != inputHash || !sameNames(m.Files, names) || m.Verify(src) != nil {
		return nil, false
	}
	if err := copyFiles(src, dir, m.Files); err != nil {
		return nil, false
	}
	if m.Verify(dir) != nil {
		return nil, false
	}
	return m, true
}

// toCache stores a finished build whose files are in dir. Hard links keep
// it free when the cache is on the same file system; copies are the
// fallback. An entry that already holds this build is left alone.
func toCache(cacheDir, entry, dir string, m *Manifest) error {
	dst := filepath.Join(cacheDir, entry)
	if validEntry(dst, m) {
		return nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return err
	}
	stage, err := os.MkdirTemp(cacheDir, ".stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := os.Chmod(stage, 0o755); err != nil {
		return err
	}
	if err := copyFiles(dir, stage, m.Files); err != nil {
		return err
	}
	if err := WriteManifest(stage, m); err != nil {
		return err
	}
	if err := os.Rename(stage, dst); err == nil {
		return nil
	}
	// Another build got there first (the rename cannot replace a
	// directory), or a damaged entry is in the way.
	if validEntry(dst, m) {
		return nil
	}
	if err := swapDir(stage, dst); err != nil {
		return fmt.Errorf("cache %s: %w", dst, err)
	}
	return nil
}

// validEntry reports whether the cache entry at dst holds m's build.
func validEntry(dst string, m *Manifest) bool {
	got, err := decodeManifest(filepath.Join(dst, ManifestFile))
	return err == nil && got.InputHash == m.InputHash && sameNames(got.Files, fileNames(m.Files)) && got.Verify(dst) == nil
}

// copyFiles puts files from src into dst, by their relative names.
func copyFiles(src, dst string, files []File) error {
	for _, f := range files {
		s, d := filepath.Join(src, filepath.FromSlash(f.Name)), filepath.Join(dst, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
			return err
		}
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Link(s, d); err == nil {
			continue
		}
		if err := copyFile(s, d, 0o755); err != nil {
			return fmt.Errorf("copy %s to %s: %w", s, d, err)
		}
	}
	return nil
}

func fileNames(files []File) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Name
	}
	return out
}
