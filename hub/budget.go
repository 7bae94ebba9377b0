package hub

import (
	"context"
	"sync"
)

// byteBudget bounds bytes held at once (messages received and not yet
// handled, documents being compacted). Waiters are served first come,
// first served, so a stream of small takers cannot starve a large one.
// It always lets one holder in, so a single item larger than the budget
// cannot wait forever. Safe for concurrent use.
type byteBudget struct {
	mu      sync.Mutex
	used    int64
	max     int64
	waiters []*budgetWaiter // FIFO
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed once the bytes are granted
}

func newByteBudget(max int) *byteBudget {
	return &byteBudget{max: int64(max)}
}

// fits reports whether n more bytes fit; b.mu is held.
func (b *byteBudget) fits(n int64) bool {
	return b.used == 0 || b.used+n <= b.max
}

// tryAcquire takes n bytes if they fit now and nobody waits before it.
func (b *byteBudget) tryAcquire(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiters) == 0 && b.fits(int64(n)) {
		b.used += int64(n)
		return true
	}
	return false
}

// acquire takes n bytes, waiting its turn until they fit or ctx is done.
func (b *byteBudget) acquire(ctx context.Context, n int) error {
	if b.tryAcquire(n) {
		return nil
	}
	b.mu.Lock()
	if len(b.waiters) == 0 && b.fits(int64(n)) { // released meanwhile
		b.used += int64(n)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: int64(n), ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready: // granted just now: give it back
			b.used -= w.n
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
		}
		b.grantLocked() // the head may fit now that w is gone
		b.mu.Unlock()
		return ctx.Err()
	}
}

// release returns n bytes taken by acquire or tryAcquire.
func (b *byteBudget) release(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= int64(n)
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked hands bytes to the waiters at the head of the queue, in
// order, while they fit; b.mu is held.
func (b *byteBudget) grantLocked() {
	for len(b.waiters) > 0 && b.fits(b.waiters[0].n) {
		w := b.waiters[0]
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
}

// inUse returns the bytes held.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
