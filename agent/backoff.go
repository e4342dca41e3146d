package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is a doubling delay with jitter, so a thousand agents that lost
// the apiserver at the same moment do not come back at the same moment.
// Each delay is drawn uniformly from [d/2, d] where d doubles from base to
// max; reset starts over after a success.
type backoff struct {
	base, max time.Duration
	cur       time.Duration
}

func newBackoff(base, max time.Duration) *backoff { return &backoff{base: base, max: max} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else if b.cur < b.max {
		b.cur = min(2*b.cur, b.max)
	}
	return jitter(b.cur)
}

func (b *backoff) reset() { b.cur = 0 }

// jitter is a uniform draw from [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// spread is d stretched by up to frac (the kubelet renews its Lease every
// interval × [1, 1.04)), so periodic work of many agents does not align.
func spread(d time.Duration, frac float64) time.Duration {
	return d + time.Duration(rand.Float64()*frac*float64(d))
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func randFloat() float64 { return rand.Float64() }
