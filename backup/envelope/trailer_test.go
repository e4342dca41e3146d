package envelope

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// TestSnapshotTrailer feeds a snapshot in every split, as the stream does.
func TestSnapshotTrailer(t *testing.T) {
	db := bytes.Repeat([]byte{7}, 4096)
	sum := sha256.Sum256(db)
	good := append(bytes.Clone(db), sum[:]...)
	for _, step := range []int{1, 5, 31, 32, 33, 1000, len(good)} {
		tc := NewSnapshotTrailer()
		for i := 0; i < len(good); i += step {
			tc.Write(good[i:min(i+step, len(good))])
		}
		if err := tc.Check(); err != nil {
			t.Errorf("step %d: %v", step, err)
		}
	}
	bad := bytes.Clone(good)
	bad[10] ^= 1
	tc := NewSnapshotTrailer()
	tc.Write(bad)
	if tc.Check() == nil {
		t.Error("a changed database passed")
	}
	tc = NewSnapshotTrailer()
	tc.Write(db)
	if tc.Check() == nil {
		t.Error("a database without etcd's trailer passed")
	}
}
