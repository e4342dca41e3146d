package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Root is a directory that files are read and written beneath: a host's
// --root. A root other than / is a tree that someone else may have laid
// out (a machine image, a chroot, a test's directory), and a symlink in
// it that leads out of it (etc -> /etc) would carry anvil's writes onto
// the machine running anvil, or a diff of its files into anvil's output.
// So beneath any root but /, names are resolved with os.Root: a symlink is
// followed only while it stays inside the root, and an absolute symlink or
// one that climbs out is an error, with nothing written. Beneath / nothing
// can lead out, and paths are used as they are (a unit masked by a link
// to /dev/null stays writable).
type Root struct {
	dir string
	// r is nil for the root /.
	r *os.Root
}

// OpenRoot opens dir ("" and "/" are the machine's root). Close it when
// done.
func OpenRoot(dir string) (*Root, error) {
	if dir == "" || filepath.Clean(dir) == "/" {
		return &Root{dir: "/"}, nil
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", dir, err)
	}
	return &Root{dir: dir, r: r}, nil
}

// Close releases the root's directory.
func (r *Root) Close() error {
	if r.r == nil {
		return nil
	}
	return r.r.Close()
}

// Path is the host path p (absolute, as on the machine) under the root,
// as errors and callers show it.
func (r *Root) Path(p string) string {
	if r.r == nil {
		return filepath.Clean(p)
	}
	return filepath.Join(r.dir, p)
}

// ops is what names are resolved by, and name as it resolves: relative
// to the root's directory, or the absolute path beneath /.
func (r *Root) ops(p string) (dirOps, string) {
	if r.r == nil {
		return hostDir{}, filepath.Clean(p)
	}
	rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	return r.r, rel
}

// EnsureFile is EnsureFile for the host path p beneath the root.
func (r *Root) EnsureFile(p string, data []byte, mode, dirMode fs.FileMode) (Outcome, error) {
	d, name := r.ops(p)
	return ensureFile(d, name, r.Path(p), data, mode, dirMode)
}

// EnsureDir creates the host path p beneath the root, and missing parents
// with dirMode, unless it is a directory already; a new p gets exactly
// mode. An existing directory is left as it is: it may be a system
// directory anvil does not own.
func (r *Root) EnsureDir(p string, mode, dirMode fs.FileMode) (Outcome, error) {
	d, name := r.ops(p)
	shown := r.Path(p)
	fi, err := d.Stat(name)
	switch {
	case err == nil && fi.IsDir():
		return Unchanged, nil
	case err == nil:
		return Unchanged, fmt.Errorf("%s exists and is not a directory", shown)
	case !errors.Is(err, fs.ErrNotExist):
		return Unchanged, fmt.Errorf("stat %s: %w", shown, err)
	}
	if err := d.MkdirAll(name, dirMode); err != nil {
		return Unchanged, fmt.Errorf("create directory %s: %w", shown, err)
	}
	// MkdirAll's mode is filtered by the umask; set it exactly.
	if err := d.Chmod(name, mode); err != nil {
		return Unchanged, fmt.Errorf("chmod %s: %w", shown, err)
	}
	return Created, nil
}

// ReadFile reads the host path p beneath the root.
func (r *Root) ReadFile(p string) ([]byte, error) {
	d, name := r.ops(p)
	b, err := d.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.Path(p), err)
	}
	return b, nil
}

// Stat is os.Stat of the host path p beneath the root; a missing file's
// error is fs.ErrNotExist.
func (r *Root) Stat(p string) (fs.FileInfo, error) {
	d, name := r.ops(p)
	fi, err := d.Stat(name)
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", r.Path(p), err)
	}
	return fi, nil
}
