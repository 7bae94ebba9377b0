package hub

import (
	"context"
	"sync"
)

// byteBudget bounds bytes held at once (messages received and not yet
// handled). acquire waits while the budget is spent; it always lets one
// holder in, so a single item larger than the budget cannot wait forever.
// Safe for concurrent use.
type byteBudget struct {
	mu   sync.Mutex
	used int64
	max  int64
	wake chan struct{} // closed and replaced on every release
}

func newByteBudget(max int) *byteBudget {
	return &byteBudget{max: int64(max), wake: make(chan struct{})}
}

// acquire takes n bytes, waiting until they fit or ctx is done.
func (b *byteBudget) acquire(ctx context.Context, n int) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+int64(n) <= b.max {
			b.used += int64(n)
			b.mu.Unlock()
			return nil
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release returns n bytes taken by acquire.
func (b *byteBudget) release(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= int64(n)
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

// inUse returns the bytes held.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
