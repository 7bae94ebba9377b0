package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/protocol"
)

// metricValue reads one sample of /metrics, e.g.
// `plait_limit_hits_total{limit="messages"}`.
func metricValue(t *testing.T, n *testNode, sample string) float64 {
	t.Helper()
	body, code := httpGet(t, n.HTTP+"/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", sample)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fromSource returns an HTTP client whose connections come from the
// loopback address src (127.0.0.0/8 is all loopback on Linux).
func fromSource(src string) *http.Client {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestMessageFloodClosesOnlyThatConnection: a client that sends faster
// than --message-rate allows gets an error and close 4430, counted in
// /metrics, while another client on the node keeps syncing.
func TestMessageFloodClosesOnlyThatConnection(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) { c.MessageRate, c.MessageBurst = 20, 50 })
	good := dialPeer(t, n.URL, "good")
	id := protocol.NewDocumentID()
	doc := newDoc(t, "k", "v0")
	ss := automerge.NewSyncState(doc)
	good.syncDoc(id, doc, ss, false)

	flood := dialPeer(t, n.URL, "flood")
	frame, err := protocol.Encode(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: "flood", TargetID: flood.server, DocumentID: protocol.NewDocumentID()})
	if err != nil {
		t.Fatal(err)
	}
	for range 500 {
		if err := flood.sendRaw(websocket.MessageBinary, frame); err != nil {
			break // closed by the server
		}
	}
	msg, code := flood.expectClose()
	if code != websocket.StatusCode(protocol.CloseRateLimited) {
		t.Fatalf("close code %d, want %d; error message %q", code, protocol.CloseRateLimited, msg)
	}
	if !strings.Contains(msg, "rate limited") {
		t.Fatalf("error message %q does not say rate limited", msg)
	}

	// The good client still syncs, and a new one sees its edit.
	if err := doc.RootMap().Set("k", "after the flood"); err != nil {
		t.Fatal(err)
	}
	doc.Commit("edit")
	good.syncDoc(id, doc, ss, false)
	check := dialPeer(t, n.URL, "check")
	docC := automerge.New()
	check.syncDoc(id, docC, automerge.NewSyncState(docC), true)
	if got := getString(t, docC, "k"); got != "after the flood" {
		t.Fatalf("after the flood the node holds k=%q", got)
	}
	if v := metricValue(t, n, `plait_limit_hits_total{limit="messages"}`); v != 1 {
		t.Fatalf("plait_limit_hits_total{limit=messages} = %v, want 1", v)
	}
	if v := metricValue(t, n, `plait_disconnects_total{code="rate limited (4430)"}`); v != 1 {
		t.Fatalf("plait_disconnects_total{code=rate limited} = %v, want 1", v)
	}
}

// TestConnectionFloodFromOneAddress: beyond --max-conns-per-ip the upgrade
// is refused with 429 and a JSON error; the open connections keep working,
// another address is not affected, and a closed connection frees its slot.
func TestConnectionFloodFromOneAddress(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) { c.MaxConnsPerIP = 3 })
	peers := []*goPeer{dialPeer(t, n.URL, "p0"), dialPeer(t, n.URL, "p1"), dialPeer(t, n.URL, "p2")}
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ws, resp, err := websocket.Dial(ctx, n.URL, nil)
		cancel()
		if err == nil {
			ws.CloseNow()
			t.Fatalf("connection %d beyond the cap was accepted", 4+i)
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("connection beyond the cap: %v %v, want 429", resp, err)
		}
		var body struct{ Error string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || !strings.Contains(body.Error, "max-conns-per-ip") {
			t.Fatalf("429 body: %+v %v", body, err)
		}
	}
	if v := metricValue(t, n, `plait_limit_hits_total{limit="connections_per_ip"}`); v != 5 {
		t.Fatalf("plait_limit_hits_total{limit=connections_per_ip} = %v, want 5", v)
	}

	// The connections within the cap are unaffected.
	id := protocol.NewDocumentID()
	doc := newDoc(t, "title", "capped")
	peers[0].syncDoc(id, doc, automerge.NewSyncState(doc), false)
	docB := automerge.New()
	peers[1].syncDoc(id, docB, automerge.NewSyncState(docB), true)
	if got := getString(t, docB, "title"); got != "capped" {
		t.Fatalf("peer 1 sees title %q", got)
	}

	// Another source address has slots of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, n.URL, &websocket.DialOptions{HTTPClient: fromSource("127.0.0.2")})
	if err != nil {
		t.Fatalf("dial from 127.0.0.2: %v", err)
	}
	ws.CloseNow()

	// Closing a connection frees its slot.
	peers[2].ws.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, _, err := websocket.Dial(ctx, n.URL, nil)
		if err == nil {
			ws.CloseNow()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after a close: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHTTPFloodFromOneAddress: beyond --http-burst-per-ip requests at once
// an address gets 429 with Retry-After, on every endpoint but /metrics and
// on the WebSocket upgrade too; another address is not affected.
func TestHTTPFloodFromOneAddress(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) { c.HTTPRatePerIP, c.HTTPBurstPerIP = 0.2, 5 })
	var limited *http.Response
	for i := range 20 {
		resp, err := http.Get(n.HTTP + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i < 5 && resp.StatusCode != 200 {
			t.Fatalf("request %d within the burst: %d", i, resp.StatusCode)
		}
		if i >= 5 && resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("request %d beyond the burst: %d, want 429", i, resp.StatusCode)
		}
		if i >= 5 {
			limited = resp
		}
	}
	ra, err := strconv.Atoi(limited.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 5 {
		t.Fatalf("Retry-After %q, want 1..5 seconds (one request per 5 s)", limited.Header.Get("Retry-After"))
	}
	body, code := httpGet(t, n.HTTP+"/readyz", nil)
	if code != 429 || !strings.Contains(body, `"error"`) {
		t.Fatalf("/readyz when limited: %d %q", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, resp, err := websocket.Dial(ctx, n.URL, nil); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("WebSocket upgrade when limited: %v %v, want 429", resp, err)
	}
	// /metrics is never limited; another address is not affected.
	if v := metricValue(t, n, `plait_limit_hits_total{limit="http_rate"}`); v != 17 {
		t.Fatalf("plait_limit_hits_total{limit=http_rate} = %v, want 17", v)
	}
	resp, err := fromSource("127.0.0.3").Get(n.HTTP + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("another address: %d", resp.StatusCode)
	}
}

// TestLimitsOff: 0 turns each limit off.
func TestLimitsOff(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) { c.MessageRate, c.MaxConnsPerIP, c.HTTPRatePerIP = 0, 0, 0 })
	for i := range 300 {
		if _, code := httpGet(t, n.HTTP+"/healthz", nil); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	p := dialPeer(t, n.URL, "p")
	frame, _ := protocol.Encode(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: "p", TargetID: p.server, DocumentID: protocol.NewDocumentID()})
	for range 3000 {
		if err := p.sendRaw(websocket.MessageBinary, frame); err != nil {
			t.Fatal(err)
		}
	}
	id := protocol.NewDocumentID()
	p.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: p.id, TargetID: p.server, DocumentID: id, Data: []byte{0x42, 0, 0, 0, 0}})
	if m := p.recv(); m.Type != protocol.TypeDocUnavailable {
		t.Fatalf("expected doc-unavailable, got %+v", m)
	}
}

func TestLimitDefaultsAndRefusals(t *testing.T) {
	c, err := ParseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MessageRate != 500 || c.MessageBurst != 10000 || c.MaxConnsPerIP != 2048 || c.HTTPRatePerIP != 100 || c.HTTPBurstPerIP != 2048 {
		t.Fatalf("limit defaults: %+v", c)
	}
	if err := c.validateLimits(); err != nil {
		t.Fatal(err)
	}
	c, err = ParseConfig(nil, env(map[string]string{"PLAIT_MESSAGE_RATE": "0", "PLAIT_MAX_CONNS_PER_IP": "0", "PLAIT_HTTP_RATE_PER_IP": "0"}), io.Discard)
	if err != nil || c.validateLimits() != nil || c.hubMessageRate() >= 0 {
		t.Fatalf("limits off: %+v %v", c, err)
	}
	for name, mod := range map[string]func(*Config){
		"message-rate":      func(c *Config) { c.MessageRate = -1 },
		"message-burst":     func(c *Config) { c.MessageBurst = 0 },
		"max-conns-per-ip":  func(c *Config) { c.MaxConnsPerIP = -1 },
		"http-rate-per-ip":  func(c *Config) { c.HTTPRatePerIP = -1 },
		"http-burst-per-ip": func(c *Config) { c.HTTPBurstPerIP = 0 },
	} {
		c, _ := ParseConfig(nil, env(nil), io.Discard)
		mod(&c)
		if err := c.validateLimits(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":                 "127.0.0.1",
		"::ffff:10.1.2.3":           "10.1.2.3",
		"2001:db8:1:2:aaaa::1":      "2001:db8:1:2::",
		"2001:db8:1:2:ffff:ffff::9": "2001:db8:1:2::",
		"::1":                       "::",
	} {
		if got := clientKey(net.ParseIP(in)).String(); got != want {
			t.Errorf("clientKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestHTTPLimiterMemoryBounded: full buckets are forgotten by a sweep, and
// the number of addresses tracked never exceeds the bound.
func TestHTTPLimiterMemoryBounded(t *testing.T) {
	l := newHTTPLimiter(10, 5)
	l.max = 100
	now := time.Now()
	addr := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("10.0.%d.%d", i/256, i%256)) }
	for i := range 1000 {
		if ok, _ := l.allow(addr(i), now); !ok {
			t.Fatalf("first request of %v refused", addr(i))
		}
		if l.tracked() > l.max {
			t.Fatalf("%d addresses tracked, bound %d", l.tracked(), l.max)
		}
	}
	for range 5 {
		l.allow(addr(1), now)
	}
	ok, wait := l.allow(addr(1), now)
	if ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("sixth request at once: %v, wait %v", ok, wait)
	}
	l.sweep(now.Add(100 * time.Millisecond)) // everyone else's bucket is full
	if got := l.tracked(); got != 1 {
		t.Fatalf("%d addresses tracked after a sweep, want 1 (the limited one)", got)
	}
	l.sweep(now.Add(time.Second))
	if got := l.tracked(); got != 0 {
		t.Fatalf("%d addresses tracked once every bucket refilled", got)
	}
}
