package etcd

import "testing"

// TestUnanswered: anvil upgrade --force goes on with members down only
// while more than half answer.
func TestUnanswered(t *testing.T) {
	one, two := []string{"m3 does not answer"}, []string{"m2 does not answer", "m3 does not answer"}
	for _, tc := range []struct {
		total    int
		down     []string
		tolerate bool
		problems int
	}{
		{3, nil, false, 0},
		{3, one, false, 1},
		{3, one, true, 0},
		{3, two, true, 2},
		{2, one, true, 1},
		{5, two, true, 0},
	} {
		if got := unanswered(tc.total, tc.down, tc.tolerate); len(got) != tc.problems {
			t.Errorf("unanswered(%d, %v, %v) = %v, want %d problems", tc.total, tc.down, tc.tolerate, got, tc.problems)
		}
	}
}
