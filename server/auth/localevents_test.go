package auth_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/auth/authtest"
)

func TestLocalEvents(t *testing.T) {
	authtest.RunEventsTests(t, func(t *testing.T) (a, b auth.Events) {
		e := auth.NewLocalEvents() // one node: both "nodes" are the same
		return e, e
	})
}

// startWatch runs e.Watch with fn until the test ends.
func startWatch(t *testing.T, e *auth.LocalEvents, fn func(auth.Event)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Watch(ctx, fn)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// waitStarted publishes probes until got reports one: the Watch is
// registered.
func waitStarted(t *testing.T, e *auth.LocalEvents, got <-chan auth.Event) {
	t.Helper()
	for {
		if err := e.Publish(t.Context(), auth.Event{Kind: auth.EventAccess, User: "probe"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			// Drain the other probes (there is at most one more: a probe is
			// published only after the previous one timed out).
			for {
				select {
				case <-got:
				case <-time.After(50 * time.Millisecond):
					return
				}
			}
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A watcher whose fn is stuck fills its queue; then Publish waits, and
// gives up when its context ends. Nothing is dropped: once fn moves again,
// the watcher gets every event that Publish accepted, in order, and other
// watchers got all of them without waiting for it.
func TestLocalEventsFullQueueBlocksPublishWithContext(t *testing.T) {
	e := auth.NewLocalEvents()
	slowGot := make(chan auth.Event, 1)
	unblock := make(chan struct{})
	var slowEvents []auth.Event
	slowDone := make(chan struct{})
	startWatch(t, e, func(ev auth.Event) {
		if ev.User == "probe" {
			select {
			case slowGot <- ev:
			default:
			}
			return
		}
		<-unblock
		slowEvents = append(slowEvents, ev)
		if ev.Family == "last" {
			close(slowDone)
		}
	})
	waitStarted(t, e, slowGot)

	fastGot := make(chan auth.Event, 4*auth.LocalQueueSize)
	startWatch(t, e, func(ev auth.Event) { fastGot <- ev })
	waitStarted(t, e, fastGot)

	// The slow watcher's fn takes the first event and blocks; its queue
	// then holds LocalQueueSize more.
	n := auth.LocalQueueSize + 1
	for i := range n {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := e.Publish(ctx, auth.Event{Kind: auth.EventRevokeFamily, Family: fmt.Sprint(i)})
		cancel()
		if err != nil {
			t.Fatalf("Publish %d (queue not yet full): %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.Publish(ctx, auth.Event{Kind: auth.EventRevokeFamily, Family: "refused"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish into a full queue: error = %v, want one wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("Publish into a full queue returned after %v, before its context ended", d)
	}
	// The fast watcher was served before and after the refusal.
	for i := range n {
		select {
		case ev := <-fastGot:
			if ev.Family != fmt.Sprint(i) {
				t.Fatalf("fast watcher: event %d is %q", i, ev.Family)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("fast watcher: event %d did not arrive", i)
		}
	}

	// A Publish waiting for room completes once fn moves on.
	published := make(chan error, 1)
	go func() { published <- e.Publish(t.Context(), auth.Event{Kind: auth.EventRevokeFamily, Family: "last"}) }()
	select {
	case err := <-published:
		t.Fatalf("Publish into a full queue returned %v before there was room", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(unblock)
	if err := <-published; err != nil {
		t.Fatalf("Publish after room was made: %v", err)
	}
	select {
	case <-slowDone:
	case <-time.After(5 * time.Second):
		t.Fatal("slow watcher did not receive the last event")
	}
	// slowEvents is written by the watcher's goroutine only; slowDone's
	// close orders that before this read.
	if len(slowEvents) != n+1 {
		t.Fatalf("slow watcher received %d events, want %d", len(slowEvents), n+1)
	}
	for i, ev := range slowEvents[:n] {
		if ev.Family != fmt.Sprint(i) {
			t.Fatalf("slow watcher: event %d is %q", i, ev.Family)
		}
	}
	// The refused event reached the fast watcher if it came first in the
	// fan-out (the caller may publish it again: that watcher then sees it
	// twice); then "last" came.
	next := func() string {
		select {
		case ev := <-fastGot:
			return ev.Family
		case <-time.After(5 * time.Second):
			t.Fatal("fast watcher: the last event did not arrive")
			return ""
		}
	}
	got := next()
	if got == "refused" {
		got = next()
	}
	if got != "last" {
		t.Fatalf("fast watcher: got %q, want \"last\"", got)
	}
}

// A watcher that ended does not hold up Publish, even with events still
// queued for it.
func TestLocalEventsEndedWatcherIsSkipped(t *testing.T) {
	e := auth.NewLocalEvents()
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- e.Watch(ctx, func(ev auth.Event) {
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done() // stuck until the Watch is cancelled
		})
	}()
	for {
		if err := e.Publish(t.Context(), auth.Event{Kind: auth.EventAccess}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-started:
		case <-time.After(20 * time.Millisecond):
			continue
		}
		break
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v, want context.Canceled", err)
	}
	pctx, pcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer pcancel()
	for i := range 2 * auth.LocalQueueSize {
		if err := e.Publish(pctx, auth.Event{Kind: auth.EventAccess}); err != nil {
			t.Fatalf("Publish %d after the only watcher ended: %v", i, err)
		}
	}
}
