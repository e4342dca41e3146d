package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"anvil.dev/anvil/internal/fsutil"
)

// ManifestFile is the name of the manifest beside the binaries it describes.
const ManifestFile = "manifest.json"

// Manifest records what a build produced: written by the build next to the
// binaries, carried in bundles and installed with them, and checked before
// any binary is installed, uploaded or started.
type Manifest struct {
	KubernetesVersion string `json:"kubernetesVersion"`
	EtcdVersion       string `json:"etcdVersion"`
	GoVersion         string `json:"goVersion,omitempty"`
	// InputHash covers everything that determines the binaries (the build
	// module's files, the Go version, the flags); an equal hash means a
	// rebuild would produce the same bytes, so it is skipped.
	InputHash string `json:"inputHash,omitempty"`
	Files     []File `json:"files"`
}

// File is one binary (or image archive) and its checksum.
type File struct {
	// Name is the path relative to the manifest's directory.
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// File returns the entry called name.
func (m *Manifest) File(name string) (File, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// ReadManifest reads the manifest in dir.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", path, err)
	}
	if m.KubernetesVersion == "" || len(m.Files) == 0 {
		return nil, fmt.Errorf("read manifest %s: no version or no files", path)
	}
	return &m, nil
}

// WriteManifest writes m into dir atomically.
func WriteManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, ManifestFile), append(b, '\n'), 0o644, 0o755)
}

// ChecksumError says a file is not the one the manifest describes.
type ChecksumError struct {
	Path      string
	Want, Got string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%s: sha256 %s does not match the manifest's %s; rebuild it with `make kube` or re-import the bundle", e.Path, e.Got, e.Want)
}

// MissingError says a file the manifest lists is not there.
type MissingError struct{ Path string }

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s is missing; build it with `make kube` (anvil images build) or import a bundle with `anvil images import`", e.Path)
}

// Verify checks every file the manifest lists against its checksum, hashing
// them in parallel (a control plane's binaries are a few hundred MB, and
// this runs before every init and upload).
func (m *Manifest) Verify(dir string) error {
	errs := make([]error, len(m.Files))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, f := range m.Files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f.Verify(filepath.Join(dir, f.Name))
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Verify checks that the file at path has f's checksum.
func (f File) Verify(path string) error {
	sum, _, err := HashFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &MissingError{Path: path}
	}
	if err != nil {
		return err
	}
	if sum != f.SHA256 {
		return &ChecksumError{Path: path, Want: f.SHA256, Got: sum}
	}
	return nil
}

// HashFile returns the hex sha256 and the size of the file at path.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
