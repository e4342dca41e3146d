package podnet

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is a doubling delay, drawn from [d/2, d] so that the agents of a
// whole cluster, all waiting on the same controller-manager, do not retry
// in step. (The agent has the same; it belongs in internal/ once a third
// user appears.)
type backoff struct {
	base, max time.Duration
	cur       time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
