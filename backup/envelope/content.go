package envelope

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
)

// The body's records, parsed in order: header copy, files, snapshot, seal.

type contentReader struct {
	r  *bufio.Reader
	o  ReadOptions
	hb []byte
}

func (c *contentReader) full(part string, b []byte) error {
	if _, err := io.ReadFull(c.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: %w", part, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("%s: %w", part, err)
	}
	return nil
}

func (c *contentReader) u16(part string) (uint16, error) {
	var b [2]byte
	err := c.full(part, b[:])
	return binary.BigEndian.Uint16(b[:]), err
}

func (c *contentReader) u32(part string) (uint32, error) {
	var b [4]byte
	err := c.full(part, b[:])
	return binary.BigEndian.Uint32(b[:]), err
}

func (c *contentReader) tag(part string) (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("%s: %w", part, io.ErrUnexpectedEOF)
		}
		return 0, fmt.Errorf("%s: %w", part, err)
	}
	return b, nil
}

// read parses the body's records in their order and checks that nothing
// follows the seal.
func (c *contentReader) read() (*EnvelopeContents, error) {
	if err := c.headerCopy(); err != nil {
		return nil, err
	}
	files, err := c.files()
	if err != nil {
		return nil, err
	}
	size, sum, err := c.snapshot()
	if err != nil {
		return nil, err
	}
	if err := c.seal(size, sum, len(files)); err != nil {
		return nil, err
	}
	// Nothing after the seal, and every layer below must end cleanly.
	if b, err := c.r.ReadByte(); err == nil {
		return nil, NewError(ErrCorruptBackup, "end", "data after the seal (0x%02x…)", b)
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	return &EnvelopeContents{Files: files, SnapshotSize: size, SnapshotSHA256: hex.EncodeToString(sum)}, nil
}

// headerCopy checks the header record against the clear header: under age
// it catches a clear header edited alone (not a backup written anew).
func (c *contentReader) headerCopy() error {
	t, err := c.tag("header copy")
	if err != nil {
		return err
	}
	if t != recHeader {
		return NewError(ErrCorruptBackup, "header copy", "record %q where the header copy belongs", t)
	}
	n, err := c.u32("header copy")
	if err != nil {
		return err
	}
	if int(n) != len(c.hb) {
		return NewError(ErrCorruptBackup, "header copy", "it is %d bytes, the clear header %d: the clear header was changed", n, len(c.hb))
	}
	hc := make([]byte, n)
	if err := c.full("header copy", hc); err != nil {
		return err
	}
	if !bytes.Equal(hc, c.hb) {
		return NewError(ErrCorruptBackup, "header copy", "the clear header differs from the one inside the payload: it was changed")
	}
	return nil
}

// files reads the file records up to and including the snapshot's tag,
// handing each file to the caller's callback.
func (c *contentReader) files() ([]BackupFile, error) {
	files := []BackupFile{}
	var last string
	for {
		t, err := c.tag("file")
		if err != nil {
			return nil, err
		}
		if t == recSnapshot {
			return files, nil
		}
		if t != recFile {
			return nil, NewError(ErrCorruptBackup, "file", "record %q where a file or the snapshot belongs", t)
		}
		if len(files) >= MaxBackupFiles {
			return nil, NewError(ErrCorruptBackup, "file", "more than %d files", MaxBackupFiles)
		}
		f, data, err := c.file(last)
		if err != nil {
			return nil, err
		}
		last = f.Path
		files = append(files, f)
		if c.o.File != nil {
			if err := c.o.File(f.Path, f.Mode, data); err != nil {
				return nil, &sinkError{err}
			}
		}
	}
}

func (c *contentReader) file(last string) (BackupFile, []byte, error) {
	pl, err := c.u16("file")
	if err != nil {
		return BackupFile{}, nil, err
	}
	if pl == 0 || pl > maxPathLen {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "path length %d is outside 1..%d", pl, maxPathLen)
	}
	pb := make([]byte, pl)
	if err := c.full("file", pb); err != nil {
		return BackupFile{}, nil, err
	}
	p := string(pb)
	if !validBackupPath(p) {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "%q is not a relative clean path", p)
	}
	if p <= last {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "%s comes after %s: paths must increase", p, last)
	}
	mode, err := c.u32("file " + p)
	if err != nil {
		return BackupFile{}, nil, err
	}
	if mode != 0o600 && mode != 0o644 {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "%s has mode %#o; only 0600 and 0644", p, mode)
	}
	size, err := c.u32("file " + p)
	if err != nil {
		return BackupFile{}, nil, err
	}
	if size > MaxBackupFile {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "%s is %d bytes, more than %d", p, size, MaxBackupFile)
	}
	data := make([]byte, size)
	if err := c.full("file "+p, data); err != nil {
		return BackupFile{}, nil, err
	}
	sum := sha256.Sum256(data)
	return BackupFile{Path: p, Mode: fs.FileMode(mode), Size: int(size), SHA256: hex.EncodeToString(sum[:])}, data, nil
}

func (c *contentReader) snapshot() (int64, []byte, error) {
	h := sha256.New()
	var sink io.Writer = hashOnly{h}
	if c.o.Snapshot != nil {
		sink = io.MultiWriter(h, sinkWriter{c.o.Snapshot})
	}
	var size int64
	for {
		n, err := c.u32("snapshot")
		if err != nil {
			return size, nil, err
		}
		if n == 0 {
			break
		}
		if n > MaxSnapshotChunk {
			return size, nil, NewError(ErrCorruptBackup, "snapshot", "a chunk of %d bytes at offset %d, more than %d", n, size, MaxSnapshotChunk)
		}
		m, err := io.CopyN(sink, c.r, int64(n))
		size += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				return size, nil, fmt.Errorf("snapshot at offset %d: %w", size, errSnapshotIncomplete)
			}
			return size, nil, err
		}
	}
	return size, h.Sum(nil), nil
}

// seal checks the seal record against the snapshot's size and sha256 and
// the number of files that were read.
func (c *contentReader) seal(size int64, sum []byte, files int) error {
	t, err := c.tag("seal")
	if err != nil {
		return err
	}
	if t != recSeal {
		return NewError(ErrCorruptBackup, "seal", "record %q where the seal belongs", t)
	}
	var seal [8 + sha256.Size + 4]byte
	if err := c.full("seal", seal[:]); err != nil {
		return err
	}
	if want := binary.BigEndian.Uint64(seal[:8]); want != uint64(size) {
		return NewError(ErrCorruptBackup, "seal", "the snapshot is %d bytes, the seal says %d", size, want)
	}
	if !bytes.Equal(seal[8:8+sha256.Size], sum) {
		return NewError(ErrCorruptBackup, "seal", "the snapshot's sha256 is %x, the seal says %x", sum, seal[8:8+sha256.Size])
	}
	if want := binary.BigEndian.Uint32(seal[8+sha256.Size:]); want != uint32(files) {
		return NewError(ErrCorruptBackup, "seal", "%d files, the seal says %d", files, want)
	}
	return nil
}

type hashOnly struct{ h hash.Hash }

func (w hashOnly) Write(p []byte) (int, error) { return w.h.Write(p) }
