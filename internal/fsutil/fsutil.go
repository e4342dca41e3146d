package fsutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces path with data and gives it mode. Missing
// parent directories are created with dirMode. The file is fsynced before the
// rename and the directory after it, so the new content survives power loss.
func WriteFile(path string, data []byte, mode, dirMode fs.FileMode) error {
	return WriteFrom(path, bytes.NewReader(data), mode, dirMode)
}

// WriteFrom is WriteFile for content that arrives as a stream (a binary, a
// snapshot), so it never has to sit in memory whole.
func WriteFrom(path string, r io.Reader, mode, dirMode fs.FileMode) error {
	return writeFrom(hostDir{}, path, path, r, mode, dirMode)
}

// dirOps are the file operations a write needs, on names relative to a
// directory: *os.Root, which never leaves its directory, or hostDir, the
// whole file system.
type dirOps interface {
	MkdirAll(name string, perm fs.FileMode) error
	OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error)
	Open(name string) (*os.File, error)
	ReadFile(name string) ([]byte, error)
	Stat(name string) (fs.FileInfo, error)
	Chmod(name string, mode fs.FileMode) error
	Rename(oldname, newname string) error
	Remove(name string) error
}

// hostDir is dirOps on absolute paths, through the os package.
type hostDir struct{}

func (hostDir) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }
func (hostDir) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}
func (hostDir) Open(name string) (*os.File, error)        { return os.Open(name) }
func (hostDir) ReadFile(name string) ([]byte, error)      { return os.ReadFile(name) }
func (hostDir) Stat(name string) (fs.FileInfo, error)     { return os.Stat(name) }
func (hostDir) Chmod(name string, mode fs.FileMode) error { return os.Chmod(name, mode) }
func (hostDir) Rename(oldname, newname string) error      { return os.Rename(oldname, newname) }
func (hostDir) Remove(name string) error                  { return os.Remove(name) }

// writeFrom writes name in d atomically; shown is the name errors give.
func writeFrom(d dirOps, name, shown string, r io.Reader, mode, dirMode fs.FileMode) (err error) {
	dir := filepath.Dir(name)
	if err := d.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create directory %s: %w", filepath.Dir(shown), err)
	}
	tmp, tmpName, err := createTemp(d, dir, "."+filepath.Base(name)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", shown, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			d.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", shown, err)
	}
	if err := copyInto(tmp, r); err != nil {
		return fmt.Errorf("write %s: %w", shown, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", shown, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", shown, err)
	}
	if err := d.Rename(tmpName, name); err != nil {
		return fmt.Errorf("write %s: %w", shown, err)
	}
	return syncDir(d, dir, filepath.Dir(shown))
}

// createTemp is os.CreateTemp for any dirOps: a new file (O_EXCL) named
// prefix and a random number, mode 0600 until the caller sets its own.
func createTemp(d dirOps, dir, prefix string) (*os.File, string, error) {
	for range 10000 {
		name := filepath.Join(dir, fmt.Sprintf("%s%d", prefix, rand.Uint32()))
		f, err := d.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, name, err
	}
	return nil, "", fmt.Errorf("create a temporary file in %s: too many tries", dir)
}

// copyBufBytes is the most WriteFrom moves in one write: a stream written
// 32 KiB at a time (io.Copy's buffer) costs a system call for every 32 KiB,
// which on a virtual machine is a good part of a backup's time.
const copyBufBytes = 1 << 20

// copyInto copies r into the file f: in the kernel when r is a file too
// (copy_file_range), else through a large buffer.
func copyInto(f *os.File, r io.Reader) error {
	if _, ok := r.(*os.File); ok {
		_, err := io.Copy(f, r)
		return err
	}
	// The wrapper hides f's ReadFrom, which would copy 32 KiB at a time.
	_, err := io.CopyBuffer(struct{ io.Writer }{f}, r, make([]byte, copyBufBytes))
	return err
}

// Outcome says what EnsureFile did, so callers can report it.
type Outcome int

const (
	Unchanged Outcome = iota
	Created
	Updated
)

func (o Outcome) String() string {
	switch o {
	case Created:
		return "created"
	case Updated:
		return "updated"
	default:
		return "unchanged"
	}
}

// EnsureFile writes data to path only when the content or mode differs, so a
// second run leaves files (and their mtimes) exactly as they were.
func EnsureFile(path string, data []byte, mode, dirMode fs.FileMode) (Outcome, error) {
	return ensureFile(hostDir{}, path, path, data, mode, dirMode)
}

func ensureFile(d dirOps, name, shown string, data []byte, mode, dirMode fs.FileMode) (Outcome, error) {
	old, err := d.ReadFile(name)
	switch {
	case err == nil:
		fi, serr := d.Stat(name)
		if serr != nil {
			return Unchanged, fmt.Errorf("stat %s: %w", shown, serr)
		}
		if bytes.Equal(old, data) {
			if fi.Mode().Perm() == mode.Perm() {
				return Unchanged, nil
			}
			if err := d.Chmod(name, mode); err != nil {
				return Unchanged, fmt.Errorf("chmod %s: %w", shown, err)
			}
			return Updated, nil
		}
		return Updated, writeFrom(d, name, shown, bytes.NewReader(data), mode, dirMode)
	case errors.Is(err, fs.ErrNotExist):
		return Created, writeFrom(d, name, shown, bytes.NewReader(data), mode, dirMode)
	default:
		return Unchanged, fmt.Errorf("read %s: %w", shown, err)
	}
}

// Exists reports whether path exists; any error other than "not exist" is
// returned so that an unreadable directory is never mistaken for an empty one.
func Exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

func syncDir(d dirOps, dir, shown string) error {
	f, err := d.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", shown, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", shown, err)
	}
	return nil
}
