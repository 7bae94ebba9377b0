package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scrape reads one sample of n's /metrics from the loopback source src,
// on a connection of its own (no keep-alive: it holds no pending slot
// afterwards).
func scrape(t *testing.T, n *testNode, src, sample string) float64 {
	t.Helper()
	hc := fromSource(src)
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	hc.Timeout = 10 * time.Second
	resp, err := hc.Get(n.HTTP + "/metrics")
	if err != nil {
		t.Fatalf("/metrics from %s: %v", src, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics from %s: %d", src, resp.StatusCode)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(string(body))
	if m == nil {
		t.Fatalf("no %s in /metrics", sample)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitScrape scrapes sample from src until it equals want (10 s at most).
func waitScrape(t *testing.T, n *testNode, src, sample string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := scrape(t, n, src, sample)
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", sample, v, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// trickler opens a raw TCP connection to n from src and sends the first
// part of a request (head): a client sending its headers slowly.
func trickler(t *testing.T, n *testNode, src, head string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", strings.TrimPrefix(n.HTTP, "http://"))
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, head) // a refused connection may be closed already
	return c
}

const partialHead = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "

// closedWithin reports whether the server closes c within d: a read ends
// in EOF or a reset rather than the deadline. A refusal's response, if
// any, is read past.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	for range 64 {
		if _, err := c.Read(buf); err != nil {
			var ne net.Error
			return !errors.As(err, &ne) || !ne.Timeout()
		}
	}
	return false
}

// closedEach runs closedWithin on every connection at once.
func closedEach(conns []net.Conn, d time.Duration) []bool {
	closed := make([]bool, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() { closed[i] = closedWithin(c, d) })
	}
	wg.Wait()
	return closed
}

// TestConnCapPendingPerIP: an address that opens N+10 connections and
// trickles its headers holds N of them; the rest are closed as they are
// accepted, counted and audited, while another address still joins and
// health checks answer. Once the trickling connections close, their slots
// are free again.
func TestConnCapPendingPerIP(t *testing.T) {
	const N = 8
	n := startNode(t, t.TempDir(), func(c *Config) {
		c.MaxPendingConnsPerIP = N
		c.ReadHeaderTimeout = time.Hour // only the cap closes connections here
	})
	const hits = `plait_limit_hits_total{limit="pending_conns_per_ip"}`
	if v := scrape(t, n, "127.0.0.2", hits); v != 0 {
		t.Fatalf("%s = %v before any refusal", hits, v)
	}
	var conns []net.Conn
	for range N + 10 {
		conns = append(conns, trickler(t, n, "127.0.0.1", partialHead))
	}
	waitScrape(t, n, "127.0.0.2", hits, 10) // a refusal is counted after its close
	closed := closedEach(conns, 2*time.Second)
	var open []net.Conn
	for i, c := range conns {
		if !closed[i] {
			open = append(open, c)
		}
	}
	if len(open) != N {
		t.Fatalf("%d of %d trickling connections are open, want %d", len(open), len(conns), N)
	}
	for _, c := range open { // they still trickle
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "a"); err != nil {
			t.Fatalf("an admitted connection: %v", err)
		}
	}
	waitAudit(t, n, "max-pending-conns-per-ip")

	// Another address joins and is served.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, n.URL, &websocket.DialOptions{HTTPClient: fromSource("127.0.0.2")})
	if err != nil {
		t.Fatalf("WebSocket from 127.0.0.2: %v", err)
	}
	defer ws.CloseNow()
	joinWS(t, ws, "other")
	hc := fromSource("127.0.0.2")
	resp, err := hc.Get(n.HTTP + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	hc.CloseIdleConnections()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz from 127.0.0.2: %d", resp.StatusCode)
	}
	// The full address gets no further connection.
	if c := trickler(t, n, "127.0.0.1", "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); !closedWithin(c, 5*time.Second) {
		t.Fatal("a connection beyond the cap was not closed")
	}
	if v := scrape(t, n, "127.0.0.2", hits); v != 11 {
		t.Fatalf("%s = %v, want 11", hits, v)
	}
	if got := strings.Count(auditLog(t, n), "max-pending-conns-per-ip"); got != 1 {
		t.Fatalf("%d audit lines for the refusals, want 1 (one a minute per address)", got)
	}

	// Closing them frees the slots: none leaks. The scrape itself is the
	// one pending connection left.
	for _, c := range open {
		c.Close()
	}
	waitScrape(t, n, "127.0.0.2", "plait_pending_connections", 1)
	for range N {
		trickler(t, n, "127.0.0.1", partialHead)
	}
	waitScrape(t, n, "127.0.0.2", "plait_pending_connections", N+1)
	if v := scrape(t, n, "127.0.0.2", hits); v != 11 {
		t.Fatalf("%s = %v after the slots were freed, want 11", hits, v)
	}
}

// TestConnCapMaxConns: at --max-conns the next upgrade gets 503 with
// Retry-After and a JSON error, health and metrics still answer, and
// closing a WebSocket frees its slot.
func TestConnCapMaxConns(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) { c.MaxConns = 5 })
	var socks []*websocket.Conn
	for i := range 5 {
		ws, code, body := dialWS(t, n.URL, nil)
		if ws == nil {
			t.Fatalf("WebSocket %d: %d %s", i, code, body)
		}
		joinWS(t, ws, "p"+strconv.Itoa(i))
		socks = append(socks, ws)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, n.URL, nil)
	if err == nil {
		ws.CloseNow()
		t.Fatal("a sixth WebSocket was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("sixth WebSocket: %v, %+v", err, resp)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	var e struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || !strings.Contains(e.Error, "full") || !strings.Contains(e.Error, "--max-conns") {
		t.Fatalf("error body %+v, %v", e, err)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if _, code := httpGet(t, n.HTTP+p, nil); code != 200 {
			t.Fatalf("%s at the cap: %d", p, code)
		}
	}
	if v := metricValue(t, n, `plait_limit_hits_total{limit="connections"}`); v != 1 {
		t.Fatalf("connections limit hits %v, want 1", v)
	}

	socks[0].Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws, _, err := websocket.Dial(ctx, n.URL, nil)
		if err == nil {
			defer ws.CloseNow()
			joinWS(t, ws, "again")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after a close: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConnCapUpgradedNotPending: WebSockets stop counting as pending
// connections once upgraded, so an address with a small pending cap
// still opens many of them.
func TestConnCapUpgradedNotPending(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) { c.MaxPendingConnsPerIP = 4 })
	for i := range 10 {
		ws, code, body := dialWS(t, n.URL, nil)
		if ws == nil {
			t.Fatalf("WebSocket %d: %d %s", i, code, body)
		}
		joinWS(t, ws, "p"+strconv.Itoa(i))
	}
	if _, code := httpGet(t, n.HTTP+"/healthz", nil); code != 200 {
		t.Fatalf("/healthz from the same address: %d", code)
	}
	if v := metricValue(t, n, `plait_limit_hits_total{limit="pending_conns_per_ip"}`); v != 0 {
		t.Fatalf("pending limit hits %v, want 0", v)
	}
}

// TestConnCapPendingEviction: at the node-wide pending cap a new
// connection (a health check) gets in by closing the connection that has
// waited longest for its headers; a request whose headers are in (a slow
// upload) is not cut, though older.
func TestConnCapPendingEviction(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) {
		c.MaxPendingConns, c.MaxPendingConnsPerIP = 4, 0
		c.ReadHeaderTimeout = time.Hour
	})
	// The upload's headers are in once the node answers 100 Continue.
	upload := trickler(t, n, "127.0.0.10", "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
	_ = upload.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 64)
	for i := 0; i < 64 && !strings.Contains(string(got), "\r\n\r\n"); i++ {
		k, err := upload.Read(buf)
		if err != nil {
			t.Fatalf("upload: %v after %q", err, got)
		}
		got = append(got, buf[:k]...)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 100 Continue") {
		t.Fatalf("upload: %q", got)
	}
	_ = upload.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(upload, "abc"); err != nil {
		t.Fatal(err)
	}
	slow := []net.Conn{
		trickler(t, n, "127.0.0.11", partialHead),
		trickler(t, n, "127.0.0.12", partialHead),
		trickler(t, n, "127.0.0.13", partialHead),
	}
	hc := fromSource("127.0.0.2")
	hc.Timeout = 10 * time.Second
	resp, err := hc.Get(n.HTTP + "/healthz")
	if err != nil {
		t.Fatalf("/healthz at the cap: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz at the cap: %d", resp.StatusCode)
	}
	if !closedWithin(slow[0], 5*time.Second) {
		t.Fatal("the connection waiting longest for its headers was not closed")
	}
	for i, closed := range closedEach([]net.Conn{upload, slow[1], slow[2]}, 300*time.Millisecond) {
		if closed {
			t.Fatalf("connection %d was closed; only the longest waiting should be", i)
		}
	}
	if v := scrape(t, n, "127.0.0.3", `plait_limit_hits_total{limit="pending_conns"}`); v < 1 {
		t.Fatalf("pending_conns limit hits %v, want at least 1", v)
	}
}

// TestConnCapRules: the automatic caps follow the open-file limit, and
// invalid settings are refused.
func TestConnCapRules(t *testing.T) {
	cfg := func(mod func(*Config)) Config {
		c, err := ParseConfig([]string{"--data-dir", t.TempDir()}, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	def := cfg(nil)
	for _, tc := range []struct {
		name   string
		c      Config
		nofile int
		want   connCaps
	}{
		{"defaults at 20000 files", def, 20000, connCaps{nofile: 20000, maxConns: 17440, maxPending: 2048, maxPendingPerIP: 64}},
		{"defaults at 1024 files", def, 1024, connCaps{nofile: 1024, maxConns: 768, maxPending: 128, maxPendingPerIP: 64}},
		{"defaults at 100 files", def, 100, connCaps{nofile: 100, maxConns: 64, maxPending: 32, maxPendingPerIP: 64}},
		{"unknown limit", def, 0, connCaps{maxConns: 0, maxPending: 2048, maxPendingPerIP: 64}},
		{"explicit", cfg(func(c *Config) { c.MaxConns, c.MaxPendingConns, c.MaxPendingConnsPerIP = 100, 10, 0 }), 20000,
			connCaps{nofile: 20000, maxConns: 100, maxPending: 10}},
		{"explicit pending in the budget", cfg(func(c *Config) { c.MaxPendingConns = 4000 }), 20000,
			connCaps{nofile: 20000, maxConns: 15488, maxPending: 4000, maxPendingPerIP: 64}},
		{"no limits", cfg(func(c *Config) { c.MaxConns, c.MaxPendingConns = -1, -1 }), 20000,
			connCaps{nofile: 20000, maxPendingPerIP: 64}},
	} {
		if got := tc.c.connCaps(tc.nofile); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if openFileLimit() <= 0 {
		t.Error("the open-file limit is unknown")
	}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.MaxConns = -2 }, "max-conns -2"},
		{func(c *Config) { c.MaxPendingConns = -2 }, "max-pending-conns -2"},
		{func(c *Config) { c.MaxPendingConnsPerIP = -1 }, "max-pending-conns-per-ip -1"},
		{func(c *Config) { c.ReadHeaderTimeout = 0 }, "read-header-timeout"},
	} {
		c := cfg(tc.mod)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate: %v, want an error about %q", err, tc.want)
		}
	}
}

// TestConnCapOutOfFiles: when accepting finds no file descriptor, the
// node counts it and keeps accepting once descriptors are free, instead
// of stopping (fasthttp ends Serve on any accept error but a timeout).
func TestConnCapOutOfFiles(t *testing.T) {
	n := startNode(t, t.TempDir())
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(len(ents) + 32)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
				t.Errorf("restore the open-file limit: %v", err)
			}
		}
	}
	t.Cleanup(restore)
	var files []*os.File
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
		files = nil
	}
	t.Cleanup(closeFiles)
	for range 256 { // the limit is 32 above what was open
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatal(err)
			}
			break
		}
		files = append(files, f)
	}
	// One descriptor for the client's socket: the node's accept finds none.
	var c net.Conn
	for len(files) > 0 && c == nil {
		files[len(files)-1].Close()
		files = files[:len(files)-1]
		c, err = net.DialTimeout("tcp", strings.TrimPrefix(n.HTTP, "http://"), 5*time.Second)
		if err != nil && !errors.Is(err, syscall.EMFILE) {
			t.Fatal(err)
		}
	}
	if c == nil {
		t.Fatal("no descriptor left to dial with")
	}
	defer c.Close()
	hits := n.m.LimitHits.WithLabelValues(limitOpenFiles)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(hits) < 1 {
		select {
		case err := <-n.done:
			t.Fatalf("the node stopped serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("accept did not run out of descriptors")
		}
		time.Sleep(5 * time.Millisecond)
	}
	closeFiles()
	restore()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(resp), "HTTP/1.1 200") {
		t.Fatalf("/healthz after the descriptors were freed: %q, %v", resp, err)
	}
	select {
	case err := <-n.done:
		t.Fatalf("the node stopped serving: %v", err)
	default:
	}
}

// feed makes gc read s, as if its client sent it.
func feed(t *testing.T, gc net.Conn, peer net.Conn, s string) {
	t.Helper()
	go func() { _, _ = io.WriteString(peer, s) }()
	buf := make([]byte, len(s))
	if _, err := io.ReadFull(gc, buf); err != nil {
		t.Fatal(err)
	}
}

// TestConnGuardEvictionOrder: at the node-wide cap, a connection that
// sent only line ends (fasthttp skips them and still waits for the
// request line) is evicted as a slow header; a connection past its
// headers is safe for busyGrace, and evicted after it (a body sent
// slowly), but only when none waits for its headers.
func TestConnGuardEvictionOrder(t *testing.T) {
	g := newConnGuard(0, 2)
	var evicted []net.Conn
	g.evicted = func(c net.Conn, _ bool) { evicted = append(evicted, c) }
	g.refused = func(net.Conn, string, bool) {}
	pipe := func() (net.Conn, net.Conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		gc := g.admit(a)
		if gc == nil {
			t.Fatal("refused")
		}
		return a, gc, b
	}
	blankA, blank, blankPeer := pipe()
	feed(t, blank, blankPeer, "\r\n\r\n\r\n")
	bodyA, body, bodyPeer := pipe()
	feed(t, body, bodyPeer, "POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
	// At the cap: the one that sent only line ends goes.
	pipe()
	if len(evicted) != 1 || evicted[0] != blankA {
		t.Fatalf("evicted %v, want the connection that sent only line ends", evicted)
	}
	// The last one waits for its headers: it goes before the body.
	pipe()
	if len(evicted) != 2 || evicted[1] == bodyA {
		t.Fatalf("evicted %v, want the one waiting for headers, not the body", evicted)
	}
	// Only past busyGrace is the body evictable (none waits for headers
	// once the newest has sent its own).
	_, last, lastPeer := pipe()
	feed(t, last, lastPeer, "GET / HTTP/1.1\r\n\r\n")
	if a, _ := net.Pipe(); g.admit(a) != nil {
		t.Fatal("admitted past the cap with every connection busy for less than busyGrace")
	}
	g.mu.Lock()
	guardedOf(body).since = time.Now().Add(-busyGrace)
	g.mu.Unlock()
	a, _ := net.Pipe()
	t.Cleanup(func() { a.Close() })
	if g.admit(a) == nil {
		t.Fatal("refused though a body has trickled in for busyGrace")
	}
	if got := evicted[len(evicted)-1]; got != bodyA {
		t.Fatalf("evicted %v, want the slow body", got)
	}
	if g.pending() != 2 {
		t.Fatalf("%d pending, want 2", g.pending())
	}
}
