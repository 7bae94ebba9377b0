package auth

import (
	"context"
	"fmt"
	"sync"
)

// LocalQueueSize is how many events one Watch of a LocalEvents may have
// waiting for its fn before Publish blocks.
const LocalQueueSize = 1024

var _ Events = (*LocalEvents)(nil)

// LocalEvents is Events for a single node, in memory: Publish hands the
// event to every Watch running in this process and nothing else; nothing
// survives the process. Create it with NewLocalEvents; the zero value is
// not usable.
//
// Each Watch has a queue of LocalQueueSize events that its own goroutine
// drains into fn. Publish never drops an event: if a watcher's queue is
// full (its fn is slow), Publish waits for room until its ctx is done, and
// then returns an error wrapping ctx.Err(). The watchers served before that
// one have the event, the others do not: as with any failed Publish, the
// caller may publish it again, and the first ones then see it twice (the
// contract's at-least-once). A slow watcher therefore slows down every
// publisher, for as long as their contexts allow, which is what a single
// node wants: revocations are rare and must not be lost.
//
// Publications are serialized (one fans out at a time), so every watcher
// sees every event in the same order, the order of the Publish calls.
// All methods are safe for concurrent use.
type LocalEvents struct {
	// turn is a one-slot semaphore: the Publish holding it fans out. A
	// channel rather than a mutex, so that waiting for the turn gives up
	// when the publisher's ctx is done.
	turn chan struct{}

	mu       sync.Mutex
	watchers map[*localWatcher]struct{}
}

// localWatcher is one running Watch.
type localWatcher struct {
	queue chan Event
	done  chan struct{} // closed when its Watch returns: Publish skips it
}

// NewLocalEvents returns an empty LocalEvents.
func NewLocalEvents() *LocalEvents {
	return &LocalEvents{turn: make(chan struct{}, 1), watchers: make(map[*localWatcher]struct{})}
}

// Publish queues ev for every Watch running now, in turn, waiting with ctx
// for room in a full queue (see the type's doc). It returns when every
// watcher has the event queued; a Watch started after Publish began does
// not get it.
func (e *LocalEvents) Publish(ctx context.Context, ev Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("failed to publish %s event: %w", ev.Kind, err)
	}
	select {
	case e.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("failed to publish %s event: %w", ev.Kind, ctx.Err())
	}
	defer func() { <-e.turn }()

	e.mu.Lock()
	ws := make([]*localWatcher, 0, len(e.watchers))
	for w := range e.watchers {
		ws = append(ws, w)
	}
	e.mu.Unlock()

	for _, w := range ws {
		select {
		case w.queue <- ev:
			continue
		default:
		}
		select {
		case w.queue <- ev:
		case <-w.done:
		case <-ctx.Done():
			return fmt.Errorf("failed to publish %s event: a watcher's queue is full: %w", ev.Kind, ctx.Err())
		}
	}
	return nil
}

// Watch calls fn, on the calling goroutine, for every event published
// after it started, in publication order, until ctx is done; then it
// returns ctx.Err(). Events still queued then are dropped.
func (e *LocalEvents) Watch(ctx context.Context, fn func(Event)) error {
	w := &localWatcher{queue: make(chan Event, LocalQueueSize), done: make(chan struct{})}
	e.mu.Lock()
	e.watchers[w] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.watchers, w)
		e.mu.Unlock()
		close(w.done)
	}()
	for {
		// A done ctx wins over queued events: Watch returns promptly.
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-w.queue:
			fn(ev)
		}
	}
}
