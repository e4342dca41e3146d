package envelope

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
)

// SnapshotTrailer verifies, as the snapshot streams by, the sha256 that etcd
// appends to every snapshot it sends: the last 32 bytes are the sha256 of
// all bytes before them, and the database before it is whole pages.
type SnapshotTrailer struct {
	h    hash.Hash
	tail []byte
	n    int64
}

// NewSnapshotTrailer starts checking a snapshot.
func NewSnapshotTrailer() *SnapshotTrailer { return &SnapshotTrailer{h: sha256.New()} }

func (t *SnapshotTrailer) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	if len(p) >= sha256.Size {
		t.h.Write(t.tail)
		t.h.Write(p[:len(p)-sha256.Size])
		t.tail = append(t.tail[:0], p[len(p)-sha256.Size:]...)
		return len(p), nil
	}
	buf := append(t.tail, p...)
	if len(buf) > sha256.Size {
		t.h.Write(buf[:len(buf)-sha256.Size])
		buf = buf[len(buf)-sha256.Size:]
	}
	t.tail = append(make([]byte, 0, sha256.Size), buf...)
	return len(p), nil
}

func (t *SnapshotTrailer) Check() error {
	if t.n%512 != sha256.Size {
		return fmt.Errorf("the snapshot is %d bytes, not a database with etcd's sha256 after it", t.n)
	}
	if !bytes.Equal(t.h.Sum(nil), t.tail) {
		return errors.New("the snapshot does not match the sha256 etcd appended to it")
	}
	return nil
}
