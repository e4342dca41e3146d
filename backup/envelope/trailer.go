package envelope

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
)

// SnapshotTrailer verifies, as the snapshot streams by, the sha256 that etcd
// appends to every snapshot it sends: the last 32 bytes are the sha256 of
// all bytes before them, and the database before it is whole pages.
type SnapshotTrailer struct{ t *tailHash }

// NewSnapshotTrailer starts checking a snapshot.
func NewSnapshotTrailer() *SnapshotTrailer { return &SnapshotTrailer{newTailHash(sha256.Size)} }

func (s *SnapshotTrailer) Write(p []byte) (int, error) { return s.t.Write(p) }

func (s *SnapshotTrailer) Check() error {
	if s.t.total%512 != sha256.Size {
		return fmt.Errorf("the snapshot is %d bytes, not a database with etcd's sha256 after it", s.t.total)
	}
	if !bytes.Equal(s.t.h.Sum(nil), s.t.tail) {
		return errors.New("the snapshot does not match the sha256 etcd appended to it")
	}
	return nil
}
