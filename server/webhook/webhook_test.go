package webhook

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/hub/redistest"
)

const testSecret = "0123456789abcdef-secret"

// receiver is a real HTTP endpoint on loopback that checks every
// delivery's signature and records it.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	fail     func(n int, ev Event) int // status for the nth request (0: 204)
	requests int
	got      []Event // 2xx deliveries, in order
	at       []time.Time
	bad      int // deliveries whose signature did not verify
	ok       map[string]int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, ok: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if err := Verify([]byte(testSecret), req.Header.Get(HeaderTimestamp), req.Header.Get(HeaderSignature), body, time.Now(), 0); err != nil {
		r.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev Event
	if d, err := decodeDelivery(`{"e":` + string(body) + `,"u":"x"}`); err == nil {
		ev = d.Event
	}
	if ev.ID != req.Header.Get(HeaderID) || ev.Type != req.Header.Get(HeaderEvent) {
		r.bad++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if r.fail != nil {
		if code := r.fail(r.requests, ev); code != 0 {
			w.WriteHeader(code)
			return
		}
	}
	r.got = append(r.got, ev)
	r.at = append(r.at, time.Now())
	r.ok[ev.ID]++
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) snapshot() ([]Event, map[string]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := make(map[string]int, len(r.ok))
	for k, v := range r.ok {
		ok[k] = v
	}
	return append([]Event(nil), r.got...), ok, r.bad
}

func (r *receiver) setFail(f func(n int, ev Event) int) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testConfig(url string) Config {
	return Config{Endpoints: []Endpoint{{URL: url, Secret: testSecret}}, MinBackoff: Duration(20 * time.Millisecond),
		MaxBackoff: Duration(100 * time.Millisecond), Timeout: Duration(2 * time.Second), ClaimAfter: Duration(3 * time.Second)}
}

func newDispatcher(t *testing.T, o Options) *Dispatcher {
	t.Helper()
	d, err := New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func TestSignVerify(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	now := time.Now()
	sig := Sign([]byte("s"), now, body)
	tsStr := itoa(now.Unix())
	if err := Verify([]byte("s"), tsStr, sig, body, now, 0); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	if err := Verify([]byte("s"), tsStr, "v1=00,"+sig, body, now, 0); err != nil {
		t.Fatalf("one good signature among several: %v", err)
	}
	for name, err := range map[string]error{
		"other body":    Verify([]byte("s"), tsStr, sig, []byte(`{"id":"y"}`), now, 0),
		"other secret":  Verify([]byte("t"), tsStr, sig, body, now, 0),
		"other time":    Verify([]byte("s"), itoa(now.Unix()+1), sig, body, now, 0),
		"too old":       Verify([]byte("s"), tsStr, sig, body, now.Add(6*time.Minute), 0),
		"from future":   Verify([]byte("s"), tsStr, sig, body, now.Add(-6*time.Minute), 0),
		"no signature":  Verify([]byte("s"), tsStr, "", body, now, 0),
		"bad timestamp": Verify([]byte("s"), "x", sig, body, now, 0),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestDeliverRetriesSameKey: a receiver failing twice gets the event on
// the third attempt, with the same idempotency key, signed; metrics count
// attempts and deliveries.
func TestDeliverRetriesSameKey(t *testing.T) {
	r := newReceiver(t)
	var keys []string
	var mu sync.Mutex
	r.setFail(func(n int, ev Event) int {
		mu.Lock()
		keys = append(keys, ev.ID)
		mu.Unlock()
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	d := newDispatcher(t, Options{Config: testConfig(r.srv.URL)})
	d.Emit(DocumentCreated, "doc1", "oidc:u")
	waitFor(t, "delivered", 10*time.Second, func() bool { got, _, _ := r.snapshot(); return len(got) == 1 })
	got, _, bad := r.snapshot()
	if bad != 0 || got[0].Type != DocumentCreated || got[0].DocumentID != "doc1" || got[0].User != "oidc:u" {
		t.Fatalf("delivered %+v, %d bad", got, bad)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 3 || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Fatalf("the attempts' keys %v: want 3 equal", keys)
	}
	if v := testutil.ToFloat64(d.m.attempts.WithLabelValues("error")); v != 2 {
		t.Fatalf("failed attempts counted: %v", v)
	}
	if v := testutil.ToFloat64(d.m.deliveries.WithLabelValues("delivered")); v != 1 {
		t.Fatalf("deliveries counted: %v", v)
	}
}

// TestGiveUpAfterAttempts: a receiver that always fails gets Attempts
// tries, then the delivery is counted failed.
func TestGiveUpAfterAttempts(t *testing.T) {
	r := newReceiver(t)
	r.setFail(func(int, Event) int { return http.StatusInternalServerError })
	cfg := testConfig(r.srv.URL)
	cfg.Attempts = 3
	d := newDispatcher(t, Options{Config: cfg})
	d.Emit(DocumentDeleted, "doc1", "")
	waitFor(t, "given up", 10*time.Second, func() bool { return testutil.ToFloat64(d.m.deliveries.WithLabelValues("failed")) == 1 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.requests != 3 {
		t.Fatalf("%d attempts, want 3", r.requests)
	}
}

// TestQueueFullDrops: past QueueSize waiting deliveries, new events are
// dropped and counted; the ones queued are delivered.
func TestQueueFullDrops(t *testing.T) {
	r := newReceiver(t)
	release := make(chan struct{})
	r.setFail(func(n int, _ Event) int {
		if n == 1 {
			r.mu.Unlock()
			<-release // the one worker is stuck on the first delivery
			r.mu.Lock()
		}
		return 0
	})
	cfg := testConfig(r.srv.URL)
	cfg.QueueSize = 3
	d := newDispatcher(t, Options{Config: cfg, Workers: 1})
	d.Emit(AccessChanged, "first", "")
	waitFor(t, "the first delivery started", 5*time.Second, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.requests == 1 })
	for range 10 {
		d.Emit(AccessChanged, "more", "")
	}
	if v := testutil.ToFloat64(d.m.dropped); v != 7 {
		t.Fatalf("dropped %v, want 7", v)
	}
	close(release)
	waitFor(t, "the queued ones delivered", 10*time.Second, func() bool { got, _, _ := r.snapshot(); return len(got) == 4 })
}

// TestEndpointEvents: an endpoint gets only the types it asked for.
func TestEndpointEvents(t *testing.T) {
	all, some := newReceiver(t), newReceiver(t)
	cfg := testConfig(all.srv.URL)
	cfg.Endpoints = append(cfg.Endpoints, Endpoint{URL: some.srv.URL, Secret: testSecret, Events: []string{DocumentDeleted}})
	d := newDispatcher(t, Options{Config: cfg})
	d.Emit(DocumentCreated, "a", "")
	d.Emit(DocumentDeleted, "a", "")
	waitFor(t, "delivered", 10*time.Second, func() bool {
		a, _, _ := all.snapshot()
		s, _, _ := some.snapshot()
		return len(a) == 2 && len(s) == 1
	})
	if s, _, _ := some.snapshot(); s[0].Type != DocumentDeleted {
		t.Fatalf("the filtered endpoint got %+v", s)
	}
}

// changedEvents calls changed every 50 ms for dur and returns the
// document.changed deliveries' times.
func changedEvents(t *testing.T, r *receiver, dur time.Duration, changed ...func()) []time.Time {
	t.Helper()
	end := time.Now().Add(dur)
	for i := 0; time.Now().Before(end); i++ {
		changed[i%len(changed)]()
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(ChangedEvery + 500*time.Millisecond) // the last window's event
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.at...)
}

// checkDebounced: while edits continue, at most one event per
// ChangedEvery (with 150 ms of slack for timers) and at least one every
// 10 s.
func checkDebounced(t *testing.T, at []time.Time, dur time.Duration) {
	t.Helper()
	if min, max := int(dur/ChangedEvery)-1, int(dur/ChangedEvery)+2; len(at) < min || len(at) > max {
		t.Fatalf("%d document.changed events in %s of edits, want %d to %d", len(at), dur, min, max)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < ChangedEvery-150*time.Millisecond || gap > 10*time.Second {
			t.Fatalf("events %d and %d %s apart", i-1, i, gap)
		}
	}
}

func TestChangedDebounced(t *testing.T) {
	r := newReceiver(t)
	d := newDispatcher(t, Options{Config: testConfig(r.srv.URL)})
	checkDebounced(t, changedEvents(t, r, 5*time.Second, func() { d.Changed("doc") }), 5*time.Second)
}

// TestRedisOneDeliveryPerCluster: two nodes' dispatchers on one real
// Redis: every event is delivered once, by one of them, whichever node
// emitted it; document.changed from edits on both nodes is debounced for
// the cluster, not per node.
func TestRedisOneDeliveryPerCluster(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	r := newReceiver(t)
	a := newDispatcher(t, Options{Config: testConfig(r.srv.URL), Redis: srv.Client(t), NodeID: "a"})
	b := newDispatcher(t, Options{Config: testConfig(r.srv.URL), Redis: srv.Client(t), NodeID: "b"})
	for i := range 40 {
		[]*Dispatcher{a, b}[i%2].Emit(AccessChanged, "doc", "")
	}
	waitFor(t, "40 deliveries", 15*time.Second, func() bool { got, _, _ := r.snapshot(); return len(got) >= 40 })
	time.Sleep(300 * time.Millisecond) // a duplicate would come now
	got, ok, bad := r.snapshot()
	if len(got) != 40 || len(ok) != 40 || bad != 0 {
		t.Fatalf("%d deliveries of %d distinct events (%d bad), want 40 of 40", len(got), len(ok), bad)
	}
	if n, err := srv.Client(t).XLen(t.Context(), "plait:webhooks").Result(); err != nil || n != 0 {
		t.Fatalf("the stream holds %d deliveries after all were made: %v", n, err)
	}

	r2 := newReceiver(t)
	c := newDispatcher(t, Options{Config: testConfig(r2.srv.URL), Redis: srv.Client(t), NodeID: "c", Prefix: "other"})
	e := newDispatcher(t, Options{Config: testConfig(r2.srv.URL), Redis: srv.Client(t), NodeID: "e", Prefix: "other"})
	checkDebounced(t, changedEvents(t, r2, 5*time.Second, func() { c.Changed("doc") }, func() { e.Changed("doc") }), 5*time.Second)
}

// TestRedisTakeOver: a node that took a delivery stops before it
// succeeded (its dispatcher closed mid-retry, as a killed node would):
// another node takes the delivery over after ClaimAfter and delivers it,
// with the same idempotency key.
func TestRedisTakeOver(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	r := newReceiver(t)
	var failing sync.Mutex
	down := true
	r.setFail(func(int, Event) int {
		failing.Lock()
		defer failing.Unlock()
		if down {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	cfg := testConfig(r.srv.URL)
	cfg.Attempts = 1000
	a, err := New(t.Context(), Options{Config: cfg, Redis: srv.Client(t), NodeID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	a.Emit(DocumentDeleted, "doc", "oidc:u")
	waitFor(t, "a tried", 5*time.Second, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.requests >= 2 })
	a.Close() // a dies with the delivery taken, not acked
	failing.Lock()
	down = false
	failing.Unlock()
	start := time.Now()
	newDispatcher(t, Options{Config: cfg, Redis: srv.Client(t), NodeID: "b"})
	waitFor(t, "b took it over", 15*time.Second, func() bool { got, _, _ := r.snapshot(); return len(got) == 1 })
	got, ok, _ := r.snapshot()
	if got[0].Type != DocumentDeleted || got[0].User != "oidc:u" || len(ok) != 1 {
		t.Fatalf("delivered %+v", got)
	}
	if waited := time.Since(start); waited < time.Duration(cfg.ClaimAfter)-time.Second {
		t.Fatalf("taken over after %s, before ClaimAfter (%s)", waited, time.Duration(cfg.ClaimAfter))
	}
}

// TestCloseQueuesDueChanged: a graceful Close queues the document.changed
// events whose window has not ended, so a cluster's other nodes deliver
// them.
func TestCloseQueuesDueChanged(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	r := newReceiver(t)
	a, err := New(t.Context(), Options{Config: testConfig(r.srv.URL), Redis: srv.Client(t), NodeID: "a", Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	a.Changed("doc")
	waitFor(t, "window claimed", 5*time.Second, func() bool { a.mu.Lock(); defer a.mu.Unlock(); return len(a.pending) == 1 })
	r.setFail(func(int, Event) int { return http.StatusServiceUnavailable }) // a cannot deliver it before it stops
	a.Close()
	r.setFail(nil)
	newDispatcher(t, Options{Config: testConfig(r.srv.URL), Redis: srv.Client(t), NodeID: "b"})
	waitFor(t, "delivered by b", 15*time.Second, func() bool { got, _, _ := r.snapshot(); return len(got) == 1 })
	if got, _, _ := r.snapshot(); got[0].Type != DocumentChanged || got[0].DocumentID != "doc" {
		t.Fatalf("delivered %+v", got)
	}
}
