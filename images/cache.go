package images

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// cacheEntry is the directory of one cached build: the version and the
// input hash name it, so a different input can never be mistaken for it.
func cacheEntry(cacheDir, version, inputHash string) string {
	return filepath.Join(cacheDir, version+"-"+short(inputHash))
}

// fromCache installs the cached build for (version, inputHash) into dir when
// one exists and still verifies.
func fromCache(cacheDir, version, inputHash, dir string) (*Manifest, bool) {
	if cacheDir == "" {
		return nil, false
	}
	src := cacheEntry(cacheDir, version, inputHash)
	m, err := ReadManifest(src)
	if err != nil || m.InputHash != inputHash || m.Verify(src) != nil {
		return nil, false
	}
	if err := copyTree(src, dir, m); err != nil {
		return nil, false
	}
	if m.Verify(dir) != nil {
		return nil, false
	}
	return m, true
}

// toCache stores a finished build. Hard links keep it free when the cache is
// on the same file system; copies are the fallback.
func toCache(cacheDir, dir string, m *Manifest) error {
	dst := cacheEntry(cacheDir, m.KubernetesVersion, m.InputHash)
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
	if err := copyTree(dir, stage, m); err != nil {
		return err
	}
	return swapDir(stage, dst)
}

// copyTree puts m's files and manifest from src into dst.
func copyTree(src, dst string, m *Manifest) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dst, ManifestFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, f := range m.Files {
		s, d := filepath.Join(src, f.Name), filepath.Join(dst, f.Name)
		os.Remove(d)
		if err := os.Link(s, d); err == nil {
			continue
		}
		if err := copyFile(s, d, 0o755); err != nil {
			return err
		}
	}
	return WriteManifest(dst, m)
}
