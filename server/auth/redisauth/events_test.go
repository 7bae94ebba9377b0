package redisauth

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/auth/authtest"
)

func TestEvents(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	authtest.RunEventsTests(t, func(t *testing.T) (a, b auth.Events) {
		p := newPrefix()
		// Two nodes: a client each.
		return NewEvents(srv.Client(t), p, nil), NewEvents(srv.Client(t), p, nil)
	})
}

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// collector runs a Watch and keeps the events it delivers.
type collector struct {
	name   string
	mu     sync.Mutex
	events []auth.Event
	notify chan struct{}
}

func watch(t *testing.T, name string, e *Events) *collector {
	t.Helper()
	c := &collector{name: name, notify: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Watch(t.Context(), func(ev auth.Event) {
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
			select {
			case c.notify <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { <-done })
	return c
}

// families returns the Family of every event received, in order, each
// once (delivery is at least once) and probes left out.
func (c *collector) families() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	seen := make(map[string]bool)
	for _, ev := range c.events {
		if ev.User != "probe" && !seen[ev.Family] {
			seen[ev.Family] = true
			out = append(out, ev.Family)
		}
	}
	return out
}

func (c *collector) probed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range c.events {
		if ev.User == "probe" {
			return true
		}
	}
	return false
}

// await waits until c has received want, exactly, in order.
func (c *collector) await(t *testing.T, within time.Duration, want ...string) {
	t.Helper()
	deadline := time.After(within)
	for {
		got := c.families()
		if strings.Join(got, ",") == strings.Join(want, ",") {
			return
		}
		if len(got) >= len(want) {
			t.Fatalf("watcher %s received %q, want %q", c.name, got, want)
		}
		select {
		case <-c.notify:
		case <-deadline:
			t.Fatalf("watcher %s received %q within %v, want %q", c.name, got, within, want)
		}
	}
}

// ready publishes probes until every collector has one.
func ready(t *testing.T, e *Events, cs ...*collector) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		all := true
		for _, c := range cs {
			all = all && c.probed()
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("watchers not ready within 10s")
		}
		if err := e.Publish(t.Context(), auth.Event{Kind: auth.EventAccess, User: "probe", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// publish publishes an event marked fam, retrying for a few seconds while
// Redis comes back.
func publish(t *testing.T, e *Events, fam string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := e.Publish(ctx, auth.Event{Kind: auth.EventRevokeFamily, Family: fam, At: time.Now()})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish %s: %v", fam, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// noRetries returns a client of srv that never retries a failed command,
// so that Watch's own retries are what the test sees.
func noRetries(t *testing.T, srv *redistest.Server) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Events survive a Redis restart with the append-only file: a Watch reads
// on from the last event it delivered. A Redis that comes back empty starts
// a new stream whose ids follow the old ones, and Watch reads that too.
func TestEventsSurviveRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Persist: true})
	p := newPrefix()
	var logs logBuffer
	a := NewEvents(noRetries(t, srv), p, logs.logger())
	b := NewEvents(noRetries(t, srv), p, logs.logger())
	wa, wb := watch(t, "a", a), watch(t, "b", b)
	ready(t, a, wa, wb)
	publish(t, a, "before")

	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	err := a.Publish(ctx, auth.Event{Kind: auth.EventRevokeFamily, Family: "lost"})
	cancel()
	if err == nil {
		t.Fatal("Publish with Redis down: no error")
	}
	if !strings.Contains(err.Error(), "failed to publish") {
		t.Errorf("Publish with Redis down: error %q does not say what failed", err)
	}
	time.Sleep(300 * time.Millisecond) // the watchers hit the outage

	srv.Restart(false)
	publish(t, b, "after")
	for _, w := range []*collector{wa, wb} {
		w.await(t, 5*time.Second, "before", "after")
	}
	if !strings.Contains(logs.String(), "failed to read auth events") {
		t.Errorf("the watchers logged no read error during the outage:\n%s", logs.String())
	}

	srv.Restart(true)
	publish(t, a, "empty")
	for _, w := range []*collector{wa, wb} {
		w.await(t, 5*time.Second, "before", "after", "empty")
	}
}

// A Watch whose connection is killed reconnects and reads on from where it
// was: nothing published meanwhile is lost.
func TestEventsAfterClientKill(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	p := newPrefix()
	var logs logBuffer
	a, b := NewEvents(noRetries(t, srv), p, logs.logger()), NewEvents(noRetries(t, srv), p, logs.logger())
	wa, wb := watch(t, "a", a), watch(t, "b", b)
	ready(t, a, wa, wb)
	admin := srv.Client(t)
	var want []string
	for i := range 3 {
		fam := fmt.Sprintf("e%d", i)
		publish(t, a, fam)
		want = append(want, fam)
		// SKIPME yes (the default): every client but admin.
		if err := admin.ClientKillByFilter(t.Context(), "TYPE", "normal").Err(); err != nil {
			t.Fatal(err)
		}
		publish(t, b, fam+"-killed")
		want = append(want, fam+"-killed")
	}
	for _, w := range []*collector{wa, wb} {
		w.await(t, 5*time.Second, want...)
	}
	if got := strings.Count(logs.String(), "failed to read auth events"); got < 2 {
		t.Errorf("%d read errors logged, want at least one per watcher:\n%s", got, logs.String())
	}
}

// The stream is trimmed to about StreamMaxLen entries.
func TestEventsStreamTrimmed(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := srv.Client(t)
	e := NewEvents(c, newPrefix(), nil)
	const n = StreamMaxLen + 1000
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				if err := e.Publish(t.Context(), auth.Event{Kind: auth.EventAccess, Family: fmt.Sprint(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	l, err := c.XLen(t.Context(), e.key).Result()
	if err != nil {
		t.Fatal(err)
	}
	// "~" trims whole macro nodes (100 entries by default).
	if l < StreamMaxLen || l > StreamMaxLen+200 {
		t.Fatalf("stream holds %d entries after %d events, want about %d", l, n, StreamMaxLen)
	}
}

// An entry that is not an event is logged and skipped; the events around
// it arrive.
func TestEventsMalformedEntrySkipped(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := srv.Client(t)
	var logs logBuffer
	e := NewEvents(c, newPrefix(), logs.logger())
	w := watch(t, "w", e)
	ready(t, e, w)
	publish(t, e, "one")
	for _, v := range [][]any{{"ev", "{not json"}, {"other", "x"}} {
		if err := c.XAdd(t.Context(), &redis.XAddArgs{Stream: e.key, Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, e, "two")
	w.await(t, 5*time.Second, "one", "two")
	if got := strings.Count(logs.String(), "skipping a malformed auth event"); got != 2 {
		t.Errorf("%d malformed entries logged, want 2:\n%s", got, logs.String())
	}
}
