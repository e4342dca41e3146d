package backoff

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	prevMax := time.Duration(0)
	for i := range 8 {
		d := b.Next()
		ceil := min(100*time.Millisecond<<i, time.Second)
		if d < ceil/2 || d > ceil {
			t.Errorf("step %d: %s outside [%s, %s]", i, d, ceil/2, ceil)
		}
		prevMax = ceil
	}
	if prevMax != time.Second {
		t.Errorf("never reached the cap")
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %s", d)
	}
	for range 100 {
		if d := Spread(10*time.Second, 0.04); d < 10*time.Second || d > 10400*time.Millisecond {
			t.Fatalf("spread %s", d)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("sleep outlived its context")
	}
}
