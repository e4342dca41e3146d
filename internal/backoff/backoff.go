package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is a doubling delay with jitter, so a thousand agents that lost
// the apiserver at the same moment do not come back at the same moment.
// Each delay is drawn uniformly from [d/2, d] where d doubles from Base to
// Max; Reset starts over after a success. The zero value of Cur is the
// start.
type Backoff struct {
	Base, Max time.Duration
	cur       time.Duration
}

// New is a backoff from base to max.
func New(base, max time.Duration) *Backoff { return &Backoff{Base: base, Max: max} }

// Next is the next delay to wait.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Base
	} else if b.cur < b.Max {
		b.cur = min(2*b.cur, b.Max)
	}
	return Jitter(b.cur)
}

// Reset starts over from Base.
func (b *Backoff) Reset() { b.cur = 0 }

// Jitter is a uniform draw from [d/2, d].
func Jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Spread is d stretched by up to frac (the kubelet renews its Lease every
// interval × [1, 1.04)), so periodic work of many agents does not align.
func Spread(d time.Duration, frac float64) time.Duration {
	return d + time.Duration(rand.Float64()*frac*float64(d))
}

// Sleep waits d or until ctx ends; it reports whether ctx is still alive.
func Sleep(ctx context.Context, d time.Duration) bool {
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
