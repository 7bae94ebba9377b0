package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/pkg/protocol"
)

// lines returns the JSON log lines written so far (syncBuffer: audit_test.go).
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(s.String(), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestThrottleHandler(t *testing.T) {
	var buf syncBuffer
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	th := newThrottleHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), time.Minute, 3, clock, c)
	log := slog.New(th)
	count := func(msg string) (n int, suppressed []float64) {
		for _, l := range buf.lines(t) {
			if l["msg"] == msg {
				n++
				if s, ok := l["suppressed"].(float64); ok {
					suppressed = append(suppressed, s)
				}
			}
		}
		return n, suppressed
	}
	for i := 0; i < 10; i++ {
		log.With("conn", i).Warn("closing connection", "err", "x")
		log.Info("info is never held back", "i", i)
	}
	log.Error("closing connection", "err", "an error is its own message")
	if n, _ := count("closing connection"); n != 4 {
		t.Fatalf("%d lines of a repeated warning (3) and its error (1)", n)
	}
	if n, _ := count("info is never held back"); n != 10 {
		t.Fatalf("%d info lines, want 10", n)
	}
	if got := testutil.ToFloat64(c); got != 7 {
		t.Fatalf("suppressed counter %v, want 7", got)
	}
	// The next window's first record carries the count.
	now = now.Add(61 * time.Second)
	log.Warn("closing connection", "err", "y")
	n, sup := count("closing connection")
	if n != 5 || len(sup) != 1 || sup[0] != 7 {
		t.Fatalf("after the window: %d lines, suppressed %v; want 5 and [7]", n, sup)
	}
	// Held back with no record after: flush reports it, with the attributes
	// of the latest held-back record's logger.
	for i := 0; i < 5; i++ {
		log.With("doc", "d1").Warn("failed to store changes")
	}
	th.flush(context.Background())
	if n, _ := count("failed to store changes"); n != 3 {
		t.Fatalf("flush before the window ended reported: %d lines", n)
	}
	now = now.Add(2 * time.Minute)
	th.flush(context.Background())
	var report map[string]any
	for _, l := range buf.lines(t) {
		if l["msg"] == "failed to store changes" && l["suppressed"] != nil {
			report = l
		}
	}
	if report == nil || report["suppressed"].(float64) != 2 || report["doc"] != "d1" || report["level"] != "WARN" {
		t.Fatalf("flush report %v", report)
	}
	// A flushed message starts afresh.
	log.Warn("failed to store changes")
	if n, sup := count("failed to store changes"); n != 5 || len(sup) != 1 {
		t.Fatalf("after the flush: %d lines, suppressed %v", n, sup)
	}
}

// startNodeLogged starts a node like startNode, logging JSON at level to w.
func startNodeLogged(t *testing.T, w io.Writer, level slog.Level) *testNode {
	t.Helper()
	cfg, err := ParseConfig([]string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--audit-log", filepath.Join(t.TempDir(), "audit.log")}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(context.Background(), cfg, slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	tn := &testNode{Node: n, URL: "ws://" + ln.Addr().String() + "/ws", HTTP: "http://" + ln.Addr().String(), done: make(chan error, 1), t: t}
	go func() { tn.done <- n.Serve(ln) }()
	t.Cleanup(tn.stop)
	return tn
}

// TestJoinsAndClosesNotAtInfo: connections that join, sync and close
// write no line at info level.
func TestJoinsAndClosesNotAtInfo(t *testing.T) {
	var buf syncBuffer
	n := startNodeLogged(t, &buf, slog.LevelInfo)
	id := protocol.NewDocumentID()
	doc := newDoc(t, "k", "v")
	for i := 0; i < 20; i++ {
		p := dialPeer(t, n.URL, fmt.Sprintf("p%d", i))
		if i == 0 {
			p.syncDoc(id, doc, automerge.NewSyncState(doc), false)
		}
		p.ws.Close(websocket.StatusNormalClosure, "")
	}
	waitFor(t, func() bool { return metricSum(t, []*testNode{n}, "plait_connections ") == 0 })
	for _, l := range buf.lines(t) {
		if l["conn"] != nil || l["remote"] != nil || l["peer"] != nil {
			t.Fatalf("a connection wrote an info line: %v", l)
		}
	}
}

// TestRequestIDThroughSession: the upgrade's X-Request-Id (the client's,
// if well-formed, else a fresh one) comes back on the 101 and is on every
// log line of the session it opened.
func TestRequestIDThroughSession(t *testing.T) {
	var buf syncBuffer
	n := startNodeLogged(t, &buf, slog.LevelDebug)
	for _, tc := range []struct{ sent, want string }{
		{"req-42.abc:1", "req-42.abc:1"},
		{"has space", ""}, // replaced
		{strings.Repeat("a", 65), ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ws, resp, err := websocket.Dial(ctx, n.URL, &websocket.DialOptions{HTTPHeader: http.Header{"X-Request-Id": {tc.sent}}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got := resp.Header.Get("X-Request-Id")
		if tc.want != "" && got != tc.want || tc.want == "" && (got == tc.sent || !validRequestID(got)) {
			t.Fatalf("sent X-Request-Id %q, the 101 has %q", tc.sent, got)
		}
		p := &goPeer{t: t, ws: ws, id: "rid", in: make(chan readResult, 64)}
		go func() {
			for {
				typ, b, err := ws.Read(context.Background())
				p.in <- readResult{typ, b, err}
				if err != nil {
					return
				}
			}
		}()
		p.send(&protocol.Message{Type: protocol.TypeJoin, SenderID: "rid", SupportedProtocolVersions: []string{"1"}})
		if m := p.recv(); m.Type != protocol.TypePeer {
			t.Fatalf("join: %+v", m)
		}
		ws.Close(websocket.StatusNormalClosure, "")
		var conn any
		waitFor(t, func() bool {
			joined, closed := false, false
			for _, l := range buf.lines(t) {
				if l["request_id"] != got {
					continue
				}
				switch l["msg"] {
				case "peer joined":
					joined, conn = true, l["conn"]
				case "connection closed":
					closed = l["conn"] == conn
				}
			}
			return joined && closed
		})
		// Every line of that connection carries the request id.
		for _, l := range buf.lines(t) {
			if l["conn"] == conn && l["request_id"] != got {
				t.Fatalf("a line of connection %v without request_id %q: %v", conn, got, l)
			}
		}
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
