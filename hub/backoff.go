package hub

import (
	mrand "math/rand/v2"
	"time"
)

// backoff is the delay before the next attempt of something that keeps
// failing: it doubles from min to max with each failure, and reset starts
// it over. With jitter the delay drawn is uniform in its upper half, so
// that the documents one outage hit do not all come back at one instant.
type backoff struct {
	min, max time.Duration
	jitter   bool
	cur      time.Duration // 0: not failing
}

// next records a failure and returns the delay before the next attempt.
func (b *backoff) next() time.Duration {
	b.cur = min(max(2*b.cur, b.min), b.max)
	if !b.jitter {
		return b.cur
	}
	return b.cur/2 + time.Duration(mrand.Int64N(int64(b.cur/2)+1))
}

// reset records a success.
func (b *backoff) reset() { b.cur = 0 }

// failing reports whether the last attempt failed.
func (b *backoff) failing() bool { return b.cur > 0 }
