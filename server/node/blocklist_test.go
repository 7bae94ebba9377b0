package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

// TestBlockAtThresholdWithinWindow: the Threshold-th offense within the
// window blocks the source for Duration, logged and counted; fewer do not.
func TestBlockAtThresholdWithinWindow(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	ip := mustAddr(t, "192.0.2.7")
	f.a.record(auditEvent{Event: "login_failed", RequestID: "r1", Remote: "192.0.2.7:1000", Offense: true})
	f.clock.advance(20 * time.Second)
	f.a.record(auditEvent{Event: "malformed", ConnID: 9, Remote: "192.0.2.7:1001", Offense: true})
	if d := f.b.blockedFor(ip); d != 0 {
		t.Fatalf("blocked for %v after 2 offenses of 3", d)
	}
	if n := len(f.events(t, "blocked")); n != 0 {
		t.Fatalf("%d blocked events after 2 offenses", n)
	}
	f.clock.advance(35 * time.Second) // 55 s after the first
	f.a.record(auditEvent{Event: "invalid_sync", RequestID: "r3", ConnID: 10, Remote: "192.0.2.7:1002", Offense: true})
	if d := f.b.blockedFor(ip); d != 10*time.Minute {
		t.Fatalf("blocked for %v after 3 offenses in 55 s, want 10m", d)
	}
	if d := f.b.blockedFor(mustAddr(t, "192.0.2.8")); d != 0 {
		t.Errorf("another address blocked for %v", d)
	}
	bl := f.events(t, "blocked")
	if len(bl) != 1 {
		t.Fatalf("%d blocked events, want 1:\n%s", len(bl), f.out.String())
	}
	if bl[0]["source"] != "192.0.2.7" || bl[0]["duration"] != "10m0s" || bl[0]["request_id"] != "r3" || bl[0]["conn"] != 10.0 {
		t.Errorf("blocked event %v", bl[0])
	}
	if got := f.metric(t, "plait_blocked_sources_total"); got != 1 {
		t.Errorf("plait_blocked_sources_total = %v, want 1", got)
	}
	if got := f.metric(t, "plait_blocked_sources"); got != 1 {
		t.Errorf("plait_blocked_sources = %v, want 1", got)
	}
	if got := f.metric(t, "plait_audit_events_total", "event", "blocked"); got != 1 {
		t.Errorf("plait_audit_events_total{event=blocked} = %v, want 1", got)
	}

	// More offenses while blocked neither extend the block nor block again.
	f.clock.advance(time.Minute)
	for range 5 {
		f.offend("192.0.2.7:1003")
	}
	if d := f.b.blockedFor(ip); d != 9*time.Minute {
		t.Errorf("blocked for %v, want the 9m left", d)
	}
	if got := f.metric(t, "plait_blocked_sources_total"); got != 1 {
		t.Errorf("plait_blocked_sources_total = %v after offenses while blocked, want 1", got)
	}
}

// TestBlockNotWhenSpreadBeyondWindow: offenses further apart than the
// window never add up to a block.
func TestBlockNotWhenSpreadBeyondWindow(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	for range 20 { // any 3 of these span 70 s
		f.offend("192.0.2.9:1")
		f.clock.advance(35 * time.Second)
	}
	if d := f.b.blockedFor(mustAddr(t, "192.0.2.9")); d != 0 {
		t.Fatalf("blocked for %v by offenses 35 s apart", d)
	}

	// Two at once, the third just after the window.
	f.clock.advance(time.Hour)
	f.offend("192.0.2.10:1")
	f.offend("192.0.2.10:1")
	f.clock.advance(61 * time.Second)
	f.offend("192.0.2.10:1")
	if d := f.b.blockedFor(mustAddr(t, "192.0.2.10")); d != 0 {
		t.Fatalf("blocked for %v by a third offense 61 s after two", d)
	}
	if got := f.metric(t, "plait_blocked_sources_total"); got != 0 {
		t.Errorf("plait_blocked_sources_total = %v, want 0", got)
	}
}

// TestBlockExpires: a block ends after Duration, and the source's
// offenses count afresh.
func TestBlockExpires(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	ip := mustAddr(t, "198.51.100.1")
	for range 3 {
		f.offend("198.51.100.1")
	}
	f.clock.advance(10*time.Minute - time.Second)
	if d := f.b.blockedFor(ip); d != time.Second {
		t.Fatalf("blocked for %v, want 1s", d)
	}
	f.clock.advance(time.Second)
	if d := f.b.blockedFor(ip); d != 0 {
		t.Fatalf("still blocked for %v after Duration", d)
	}
	f.clock.advance(time.Minute)
	if d := f.b.blockedFor(ip); d != 0 {
		t.Fatalf("blockedFor %v a minute after the block ended, want 0", d)
	}
	if got := f.metric(t, "plait_blocked_sources"); got != 0 {
		t.Errorf("plait_blocked_sources = %v after the block ended", got)
	}
	f.offend("198.51.100.1")
	f.offend("198.51.100.1")
	if d := f.b.blockedFor(ip); d != 0 {
		t.Fatalf("blocked again for %v by 2 offenses after the block", d)
	}
	f.offend("198.51.100.1")
	if d := f.b.blockedFor(ip); d != 10*time.Minute {
		t.Fatalf("blocked for %v by 3 new offenses, want 10m", d)
	}
}

// TestBlockThresholdZeroNeverBlocks: with Threshold 0 offenses are logged
// but nothing is tracked or blocked.
func TestBlockThresholdZeroNeverBlocks(t *testing.T) {
	f := newAuditFixture(t, blockOptions{})
	for range 1000 {
		f.offend("192.0.2.1:80")
	}
	if d := f.b.blockedFor(mustAddr(t, "192.0.2.1")); d != 0 {
		t.Fatalf("blocked for %v with Threshold 0", d)
	}
	if o, b := f.b.tracked(); o != 0 || b != 0 {
		t.Errorf("tracking %d offending and %d blocked sources with Threshold 0", o, b)
	}
	if n := len(f.events(t, "malformed")); n != 1000 {
		t.Errorf("%d events logged, want 1000", n)
	}
}

// TestBlockIgnoresNonOffenses: events that are not offenses never block,
// however many.
func TestBlockIgnoresNonOffenses(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	for range 100 {
		f.a.record(auditEvent{Event: "denied", Remote: "192.0.2.2:80", Code: 403})
	}
	if d := f.b.blockedFor(mustAddr(t, "192.0.2.2")); d != 0 {
		t.Fatalf("blocked for %v by events that are no offense", d)
	}
}

// TestBlockUnparsableRemoteNotCounted: an event without an address is
// logged, never counted.
func TestBlockUnparsableRemoteNotCounted(t *testing.T) {
	f := newAuditFixture(t, blockOptions{Threshold: 1, Window: time.Minute, Duration: time.Minute})
	for _, r := range []string{"", "pipe", "unix:@", "example.com:80"} {
		f.offend(r)
	}
	if n := len(f.events(t, "malformed")); n != 4 {
		t.Errorf("%d events logged, want 4", n)
	}
	if o, b := f.b.tracked(); o != 0 || b != 0 || len(f.events(t, "blocked")) != 0 {
		t.Errorf("tracking %d offending and %d blocked sources without addresses", o, b)
	}
}

// TestBlockIPv6CountsPer64: the addresses of one IPv6 /64 are one source;
// IPv4 as "ip:port", bare "ip" and IPv4-mapped IPv6 are one too.
func TestBlockIPv6CountsPer64(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	f.offend("[2001:db8:1:2::1]:443")
	f.offend("2001:db8:1:2:ffff::2")
	f.offend("[2001:db8:1:3::1]:443") // another /64
	if d := f.b.blockedFor(mustAddr(t, "2001:db8:1:2::99")); d != 0 {
		t.Fatalf("blocked for %v after 2 offenses in the /64", d)
	}
	f.offend("[2001:db8:1:2:abcd::3]:80")
	for _, s := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"} {
		if d := f.b.blockedFor(mustAddr(t, s)); d != 10*time.Minute {
			t.Errorf("%s blocked for %v, want 10m", s, d)
		}
	}
	if d := f.b.blockedFor(mustAddr(t, "2001:db8:1:3::1")); d != 0 {
		t.Errorf("the other /64 blocked for %v", d)
	}
	if bl := f.events(t, "blocked"); len(bl) != 1 || bl[0]["source"] != "2001:db8:1:2::" {
		t.Errorf("blocked events %v", bl)
	}

	f.offend("192.0.2.3:1")
	f.offend("192.0.2.3")
	f.offend("[::ffff:192.0.2.3]:2")
	if d := f.b.blockedFor(mustAddr(t, "::ffff:192.0.2.3")); d != 10*time.Minute {
		t.Errorf("IPv4-mapped blocked for %v, want 10m", d)
	}
	if d := f.b.blockedFor(mustAddr(t, "192.0.2.3")); d != 10*time.Minute {
		t.Errorf("192.0.2.3 blocked for %v, want 10m", d)
	}
}

// TestBlockMiddleware: a blocked source gets 429 with Retry-After and a
// JSON error on everything but the health checks and /metrics; other
// sources pass.
func TestBlockMiddleware(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(f.b.middleware)
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/api/docs", "/ws"} {
		app.Get(p, func(c *fiber.Ctx) error { return c.SendString("ok") })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	base := "http://" + ln.Addr().String()
	client := func(src string) *http.Client {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 5 * time.Second}
	}
	get := func(c *http.Client, path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	bad, good := client("127.0.0.1"), client("127.0.0.2")
	if resp, _ := get(bad, "/api/docs"); resp.StatusCode != 200 {
		t.Fatalf("before any offense: %d", resp.StatusCode)
	}
	for range 3 {
		f.offend("127.0.0.1:5000")
	}
	f.clock.advance(90*time.Second + 500*time.Millisecond) // 509.5 s left
	for _, p := range []string{"/api/docs", "/ws"} {
		resp, body := get(bad, p)
		if resp.StatusCode != fiber.StatusTooManyRequests {
			t.Fatalf("%s from a blocked source: %d %s", p, resp.StatusCode, body)
		}
		if ra := resp.Header.Get("Retry-After"); ra != "510" {
			t.Errorf("Retry-After %q, want 510", ra)
		}
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
			t.Errorf("body %q: want JSON {\"error\": ...} (%v)", body, err)
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if resp, body := get(bad, p); resp.StatusCode != 200 {
			t.Errorf("%s from a blocked source: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, _ := get(good, "/api/docs"); resp.StatusCode != 200 {
		t.Errorf("another source: %d", resp.StatusCode)
	}
	if got := f.metric(t, "plait_blocked_requests_total"); got != 2 {
		t.Errorf("plait_blocked_requests_total = %v, want 2", got)
	}
	f.clock.advance(510 * time.Second)
	if resp, _ := get(bad, "/api/docs"); resp.StatusCode != 200 {
		t.Errorf("after the block: %d", resp.StatusCode)
	}
}

// TestBlockConcurrentRecord: record from 8 goroutines at once (run with
// -race) writes whole lines and blocks a shared source once.
func TestBlockConcurrentRecord(t *testing.T) {
	f := newAuditFixture(t, blockOptions{Threshold: 1000, Window: time.Hour, Duration: time.Hour})
	const workers, each = 8, 300
	shared := mustAddr(t, "192.0.2.200")
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				f.offend("192.0.2.200:1") // shared: 2400 offenses
				f.a.record(auditEvent{Event: "login", User: fmt.Sprintf("u%d-%d", w, i), Remote: fmt.Sprintf("10.0.%d.%d:1", w, i%250)})
				f.offend(fmt.Sprintf("10.1.%d.%d:1", w, i%250)) // at most 2 each
				_ = f.b.blockedFor(shared)
				if i%50 == 0 {
					f.b.sweep(f.clock.now())
				}
			}
		})
	}
	wg.Wait()
	lines := f.lines(t)
	if want := workers*each*3 + 1; len(lines) != want {
		t.Errorf("%d lines, want %d", len(lines), want)
	}
	if got := f.metric(t, "plait_blocked_sources_total"); got != 1 {
		t.Errorf("plait_blocked_sources_total = %v, want 1", got)
	}
	if d := f.b.blockedFor(shared); d != time.Hour {
		t.Errorf("shared source blocked for %v, want 1h", d)
	}
}

// TestBlockSweepForgets: the sweep forgets offense windows once their
// offenses are out of the window and blocks once they end; memory stays
// bounded when more sources offend than it tracks.
func TestBlockSweepForgets(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	f.offend("192.0.2.1:1") // offending, not blocked
	for range 3 {
		f.offend("192.0.2.2:1") // blocked
	}
	f.b.sweep(f.clock.now())
	if o, b := f.b.tracked(); o != 1 || b != 1 {
		t.Fatalf("after a sweep at once: %d offending, %d blocked; want 1, 1", o, b)
	}
	f.clock.advance(time.Minute)
	f.b.sweep(f.clock.now())
	if o, b := f.b.tracked(); o != 0 || b != 1 {
		t.Fatalf("after the window: %d offending, %d blocked; want 0, 1", o, b)
	}
	f.clock.advance(9 * time.Minute)
	f.b.sweep(f.clock.now())
	if o, b := f.b.tracked(); o != 0 || b != 0 {
		t.Fatalf("after the block: %d offending, %d blocked; want 0, 0", o, b)
	}

	// sweepEvery sweeps on its own, and stops with its context.
	f.offend("192.0.2.3:1")
	f.clock.advance(time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { f.b.sweepEvery(ctx, time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for o, _ := f.b.tracked(); o != 0; o, _ = f.b.tracked() {
		if time.Now().After(deadline) {
			t.Fatal("sweepEvery did not forget an expired window")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("sweepEvery did not return when its context was done")
	}
}

// TestBlockBoundedMemory: beyond max sources the blocklist forgets offense
// windows, and of the blocks the one that ends first.
func TestBlockBoundedMemory(t *testing.T) {
	f := newAuditFixture(t, blockOptions{Threshold: 2, Window: time.Minute, Duration: time.Hour})
	f.b.max = 4
	for i := range 100 {
		f.offend(fmt.Sprintf("192.0.2.%d:1", i))
		if o, _ := f.b.tracked(); o > 4 {
			t.Fatalf("tracking %d offending sources, max 4", o)
		}
	}
	for i := range 6 { // block 6 sources, a minute apart
		f.clock.advance(time.Minute)
		ip := fmt.Sprintf("198.51.100.%d:1", i)
		f.offend(ip)
		f.offend(ip)
		if _, b := f.b.tracked(); b > 4 {
			t.Fatalf("tracking %d blocked sources, max 4", b)
		}
	}
	for i := range 6 {
		blocked := f.b.blockedFor(mustAddr(t, fmt.Sprintf("198.51.100.%d", i))) > 0
		if want := i >= 2; blocked != want {
			t.Errorf("198.51.100.%d blocked %v, want %v (the earliest-ending blocks go first)", i, blocked, want)
		}
	}
}
