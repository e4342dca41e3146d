package backup

import (
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
