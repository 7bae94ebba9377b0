package authtest

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/auth"
)

// probeUser marks the suite's probe events.
const probeUser = "authtest-probe"

// watcher is one running Watch and what it received.
type watcher struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{} // closed when Watch has returned
	err    error         // Watch's result; read after done

	// calls is touched by fn only, without a lock: the race detector
	// reports fn running on more than one goroutine. Read after done.
	calls int
	inFn  atomic.Int32

	mu     sync.Mutex
	events []auth.Event // non-probe events, duplicates (at least once) skipped
	seen   map[string]bool
	probed bool
	notify chan struct{} // 1-slot: something arrived
}

// startWatch runs e.Watch until the test ends or w.cancel is called.
func startWatch(t *testing.T, name string, e auth.Events) *watcher {
	t.Helper()
	// t.Context() ends before the cleanups run: every watcher of the test
	// stops at once, and each cleanup only waits for its own.
	ctx, cancel := context.WithCancel(t.Context())
	w := &watcher{name: name, cancel: cancel, done: make(chan struct{}), seen: make(map[string]bool), notify: make(chan struct{}, 1)}
	go func() {
		defer close(w.done)
		w.err = e.Watch(ctx, w.fn(t))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Errorf("watcher %s: Watch did not return within 10s of its context's end", name)
		}
	})
	return w
}

func (w *watcher) fn(t *testing.T) func(auth.Event) {
	return func(ev auth.Event) {
		if w.inFn.Add(1) != 1 {
			t.Errorf("watcher %s: fn called concurrently", w.name)
		}
		defer w.inFn.Add(-1)
		w.calls++
		w.mu.Lock()
		if ev.User == probeUser {
			w.probed = true
		} else if !w.seen[ev.Family] {
			w.seen[ev.Family] = true
			w.events = append(w.events, ev)
		}
		w.mu.Unlock()
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
}

func (w *watcher) probedYet() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.probed
}

func (w *watcher) received() []auth.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events)
}

// waitFor waits until w has received n events (besides probes).
func (w *watcher) waitFor(t *testing.T, n int, within time.Duration) []auth.Event {
	t.Helper()
	deadline := time.After(within)
	for {
		if got := w.received(); len(got) >= n {
			return got
		}
		select {
		case <-w.notify:
		case <-w.done:
			t.Fatalf("watcher %s: Watch returned early: %v", w.name, w.err)
		case <-deadline:
			t.Fatalf("watcher %s: %d events within %v, want %d", w.name, len(w.received()), within, n)
		}
	}
}

// ready publishes probes on e until every watcher has received one: their
// Watch has started, and every event published from now on reaches them.
func ready(t *testing.T, e auth.Events, ws ...*watcher) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		all := true
		for _, w := range ws {
			all = all && w.probedYet()
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("watchers did not receive probe events within 15s")
		}
		if err := e.Publish(t.Context(), auth.Event{Kind: auth.EventAccess, User: probeUser, At: time.Now()}); err != nil {
			t.Fatalf("Publish probe: %v", err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-t.Context().Done():
		}
	}
}

// event returns a distinct event; its Family is its unique mark.
func event(i int) auth.Event {
	kinds := []auth.EventKind{auth.EventRevokeFamily, auth.EventRevokeUser, auth.EventAccess}
	ev := auth.Event{Kind: kinds[i%3], Family: fmt.Sprintf("ev-%d-%d", i, mrand.Int64()), At: time.Now().Add(time.Duration(i) * time.Microsecond)}
	switch ev.Kind {
	case auth.EventRevokeUser:
		ev.User = fmt.Sprintf("user-%d", i)
	case auth.EventAccess:
		ev.Doc = protocol.NewDocumentID()
	}
	return ev
}

func mustPublish(t *testing.T, e auth.Events, ev auth.Event) {
	t.Helper()
	if err := e.Publish(t.Context(), ev); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func sameEvent(a, b auth.Event) bool {
	return a.Kind == b.Kind && a.User == b.User && a.Family == b.Family && a.Doc == b.Doc && sameTime(a.At, b.At)
}

func checkEvents(t *testing.T, w *watcher, got, want []auth.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("watcher %s received %d events, want %d", w.name, len(got), len(want))
	}
	for i := range want {
		if !sameEvent(got[i], want[i]) {
			t.Fatalf("watcher %s: event %d = %+v, want %+v", w.name, i, got[i], want[i])
		}
	}
}

// deliveryTime bounds how long an event may take to arrive: the contract
// says a second or two.
const deliveryTime = 5 * time.Second

func testEventsFanOut(t *testing.T, a, b auth.Events) {
	ws := []*watcher{startWatch(t, "a1", a), startWatch(t, "a2", a), startWatch(t, "b1", b)}
	ready(t, a, ws...)
	var want []auth.Event
	for i := range 40 {
		ev := event(i)
		if i%2 == 0 {
			mustPublish(t, a, ev)
		} else {
			mustPublish(t, b, ev)
		}
		want = append(want, ev)
	}
	for _, w := range ws {
		checkEvents(t, w, w.waitFor(t, len(want), deliveryTime), want)
	}
}

func testEventsConcurrentPublishers(t *testing.T, a, b auth.Events) {
	ws := []*watcher{startWatch(t, "a", a), startWatch(t, "b", b)}
	ready(t, b, ws...)
	const publishers, each = 4, 300
	var wg sync.WaitGroup
	sent := make([][]auth.Event, publishers)
	for p := range publishers {
		e := a
		if p%2 == 1 {
			e = b
		}
		wg.Go(func() {
			for i := range each {
				ev := event(p*each + i)
				if err := e.Publish(t.Context(), ev); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				sent[p] = append(sent[p], ev)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	first := ws[0].waitFor(t, publishers*each, 2*deliveryTime)
	// Every watcher sees the one publication order.
	for _, w := range ws[1:] {
		checkEvents(t, w, w.waitFor(t, publishers*each, 2*deliveryTime), first)
	}
	// Which keeps each publisher's own order.
	pos := make(map[string]int, len(first))
	for i, ev := range first {
		pos[ev.Family] = i
	}
	for p, evs := range sent {
		last := -1
		for _, ev := range evs {
			i, ok := pos[ev.Family]
			if !ok {
				t.Fatalf("event %+v of publisher %d never arrived", ev, p)
			}
			if i <= last {
				t.Fatalf("publisher %d's events arrived out of order", p)
			}
			last = i
		}
	}
}

func testEventsBeforeWatch(t *testing.T, a, b auth.Events) {
	mustPublish(t, a, event(0))
	mustPublish(t, b, event(1))
	ws := []*watcher{startWatch(t, "a", a), startWatch(t, "b", b)}
	ready(t, a, ws...)
	after := event(2)
	mustPublish(t, a, after)
	for _, w := range ws {
		checkEvents(t, w, w.waitFor(t, 1, deliveryTime), []auth.Event{after})
	}
}

func testEventsPublishCancelled(t *testing.T, a, b auth.Events) {
	ws := []*watcher{startWatch(t, "a", a), startWatch(t, "b", b)}
	ready(t, a, ws...)
	checkCancelled(t, "Publish", a.Publish(cancelled(t), event(0)))
	next := event(1)
	mustPublish(t, a, next)
	for _, w := range ws {
		checkEvents(t, w, w.waitFor(t, 1, deliveryTime), []auth.Event{next})
	}
}

func testEventsWatchReturns(t *testing.T, a, b auth.Events) {
	// A done context: Watch returns at once, or nearly.
	start := time.Now()
	err := a.Watch(cancelled(t), func(auth.Event) { t.Error("fn called by a Watch whose context was done") })
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Watch with a done context returned %v, want nil or context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Watch with a done context took %v to return", d)
	}

	w, keep := startWatch(t, "stopped", b), startWatch(t, "kept", b)
	ready(t, a, w, keep)
	first := event(0)
	mustPublish(t, a, first)
	w.waitFor(t, 1, deliveryTime)
	start = time.Now()
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return within 5s of its context's end")
	}
	t.Logf("Watch returned %v after its context's end", time.Since(start).Round(time.Millisecond))
	if w.err != nil && !errors.Is(w.err, context.Canceled) {
		t.Errorf("Watch returned %v, want nil or context.Canceled", w.err)
	}
	calls := w.calls // read after done: Watch has returned
	second := event(1)
	mustPublish(t, a, second)
	checkEvents(t, keep, keep.waitFor(t, 2, deliveryTime), []auth.Event{first, second})
	if got := w.received(); len(got) != 1 || calls != w.calls {
		t.Fatalf("a returned Watch still received events: %v", got)
	}

	// A new Watch on the same node works after that.
	again := startWatch(t, "again", b)
	ready(t, a, again)
	third := event(2)
	mustPublish(t, b, third)
	checkEvents(t, again, again.waitFor(t, 1, deliveryTime), []auth.Event{third})
}

// RunEventsTests runs the auth.Events conformance suite. newEvents is
// called once per subtest and returns two nodes of one cluster: a and b
// share a backend that no other subtest uses (for a single-node
// implementation, a and b may be the same value). It releases them with
// t.Cleanup.
//
// A Watch has started once it receives events; the suite cannot see that
// moment from outside, so it publishes probe events (User "authtest-probe")
// until every watcher under test has received one, and only then publishes
// the events it checks. Watchers skip probes.
func RunEventsTests(t *testing.T, newEvents func(t *testing.T) (a, b auth.Events)) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, a, b auth.Events)
	}{
		{"DeliveredToEveryWatcherInOrder", testEventsFanOut},
		{"ConcurrentPublishersOneOrder", testEventsConcurrentPublishers},
		{"NotDeliveredBeforeWatchStarted", testEventsBeforeWatch},
		{"PublishCancelledHasNoEffect", testEventsPublishCancelled},
		{"WatchReturnsWhenContextDone", testEventsWatchReturns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newEvents(t)
			if a == nil || b == nil {
				t.Fatal("newEvents returned nil")
			}
			tc.fn(t, a, b)
		})
	}
}
