package master

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

func TestRestoreRevisionBump(t *testing.T) {
	for _, tc := range []struct {
		name                string
		snap, served, floor int64
		want                uint64
	}{
		{"above what the member served", 1000, 5000, 0, 4000 + revisionMargin},
		{"a cluster restore's floor wins", 1000, 5000, 9000, 8000 + revisionMargin},
		{"a backup newer than the data", 5000, 1000, 0, revisionMargin},
		{"nothing known", 1000, 0, 0, unknownRevisionBump},
		{"only the floor known", 1000, 0, 3000, 2000 + revisionMargin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := revisionBump(tc.snap, tc.served, tc.floor)
			if got != tc.want {
				t.Errorf("revisionBump(%d, %d, %d) = %d, want %d", tc.snap, tc.served, tc.floor, got, tc.want)
			}
			if tc.snap+int64(got) <= max(tc.served, tc.floor) {
				t.Errorf("restored revision %d not above %d", tc.snap+int64(got), max(tc.served, tc.floor))
			}
		})
	}
}

// TestTrailerCheck feeds a snapshot in every split, as the stream does.
func TestRestoreTrailerCheck(t *testing.T) {
	db := bytes.Repeat([]byte{7}, 4096)
	sum := sha256.Sum256(db)
	good := append(bytes.Clone(db), sum[:]...)
	for _, step := range []int{1, 5, 31, 32, 33, 1000, len(good)} {
		tc := newTrailerCheck()
		for i := 0; i < len(good); i += step {
			tc.Write(good[i:min(i+step, len(good))])
		}
		if err := tc.check(); err != nil {
			t.Errorf("step %d: %v", step, err)
		}
	}
	bad := bytes.Clone(good)
	bad[10] ^= 1
	tc := newTrailerCheck()
	tc.Write(bad)
	if tc.check() == nil {
		t.Error("a changed database passed")
	}
	tc = newTrailerCheck()
	tc.Write(db)
	if tc.check() == nil {
		t.Error("a database without etcd's trailer passed")
	}
}
