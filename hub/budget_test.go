package hub

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestByteBudgetFIFO: waiters get their bytes in the order they came,
// a small taker does not overtake a large one that waits, one item larger
// than the budget still gets in alone, and a waiter that gives up leaves
// nothing behind.
func TestByteBudgetFIFO(t *testing.T) {
	b := newByteBudget(100)
	if !b.tryAcquire(80) {
		t.Fatal("80 of 100 refused")
	}
	order := make(chan int, 3)
	start := func(id, n int) {
		go func() {
			if err := b.acquire(context.Background(), n); err != nil {
				t.Errorf("waiter %d: %v", id, err)
			}
			order <- id
		}()
		deadline := time.Now().Add(2 * time.Second)
		for {
			b.mu.Lock()
			queued := len(b.waiters)
			b.mu.Unlock()
			if queued >= id || time.Now().After(deadline) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	start(1, 50) // does not fit beside 80
	start(2, 10) // would fit, but 1 came first: it must not overtake
	if b.tryAcquire(10) {
		t.Fatal("tryAcquire overtook the waiters")
	}
	select {
	case id := <-order:
		t.Fatalf("waiter %d got in while 80 of 100 were held", id)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(40) // 40 held: 1 (50) and then 2 (10) fit
	for range 2 {
		select {
		case <-order:
		case <-time.After(2 * time.Second):
			t.Fatal("a waiter still waits with room for both")
		}
	}
	b.release(40) // the 40 left of the first 80
	if got := b.inUse(); got != 60 {
		t.Fatalf("in use %d, want 60", got)
	}

	// A waiter that gives up is gone from the queue and holds nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := b.acquire(ctx, 90); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire past the budget: %v, want a deadline", err)
	}
	b.mu.Lock()
	queued := len(b.waiters)
	b.mu.Unlock()
	if queued != 0 || b.inUse() != 60 {
		t.Fatalf("after giving up: %d waiters, %d in use; want 0 and 60", queued, b.inUse())
	}
	b.release(60)
	// One item larger than the whole budget gets in alone.
	if err := b.acquire(context.Background(), 500); err != nil {
		t.Fatal(err)
	}
	if b.tryAcquire(1) {
		t.Fatal("a second holder got in beside one larger than the budget")
	}
	b.release(500)
	if b.inUse() != 0 {
		t.Fatalf("in use %d after releasing everything", b.inUse())
	}
}
