package fsutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
func WriteFrom(path string, r io.Reader, mode, dirMode fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := copyInto(tmp, r); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
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
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		fi, serr := os.Stat(path)
		if serr != nil {
			return Unchanged, fmt.Errorf("stat %s: %w", path, serr)
		}
		if bytes.Equal(old, data) {
			if fi.Mode().Perm() == mode.Perm() {
				return Unchanged, nil
			}
			if err := os.Chmod(path, mode); err != nil {
				return Unchanged, fmt.Errorf("chmod %s: %w", path, err)
			}
			return Updated, nil
		}
		return Updated, WriteFile(path, data, mode, dirMode)
	case errors.Is(err, fs.ErrNotExist):
		return Created, WriteFile(path, data, mode, dirMode)
	default:
		return Unchanged, fmt.Errorf("read %s: %w", path, err)
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

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
