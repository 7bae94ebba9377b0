package node

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

func spanAttr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestTraceAcrossNodes: an edit sent to one node is one trace that ends on
// the other node: the message, the document's sync, the store write and
// the publication on the first node; the delivery and the application on
// the second, each the child of the one before.
func TestTraceAcrossNodes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var nodes []*testNode
	for i := 0; i < 2; i++ {
		nodes = append(nodes, startNode(t, t.TempDir(), func(c *Config) {
			c.RedisURL = srv.URL()
			c.TracerProvider = tp
		}))
	}
	n1, n2 := nodes[0].Hub().PeerID(), nodes[1].Hub().PeerID()

	id := protocol.NewDocumentID()
	a := dialPeer(t, nodes[0].URL, "a")
	doc := newDoc(t, "k", "v0")
	ssA := automerge.NewSyncState(doc)
	a.syncDoc(id, doc, ssA, false)
	b := dialPeer(t, nodes[1].URL, "b")
	docB := automerge.New()
	ssB := automerge.NewSyncState(docB)
	b.syncDoc(id, docB, ssB, true) // node 2 has the document open

	exp.Reset()
	if err := doc.RootMap().Set("k", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit("edit"); err != nil {
		t.Fatal(err)
	}
	a.syncDoc(id, doc, ssA, false)
	deadline := time.Now().Add(15 * time.Second)
	for getString(t, docB, "k") != "v1" {
		if time.Now().After(deadline) {
			t.Fatal("the edit did not reach the other node's peer")
		}
		b.syncDoc(id, docB, ssB, false)
	}

	spans := exp.GetSpans()
	byID := map[trace.SpanID]tracetest.SpanStub{}
	var apply *tracetest.SpanStub
	for i, s := range spans {
		byID[s.SpanContext.SpanID()] = s
		if s.Name == "plait.remote.apply" && spanAttr(s, "plait.node") == n2 && spanAttr(s, "plait.doc") == string(id) {
			apply = &spans[i]
		}
	}
	if apply == nil {
		t.Fatalf("no plait.remote.apply span on node 2 among %d spans", len(spans))
	}
	// Walk up from the application on node 2 to the message on node 1.
	chain := []struct{ name, node string }{
		{"plait.broker.deliver", n2},
		{"plait.broker.publish", n1},
		{"plait.document.sync", n1},
		{"plait.message", n1},
	}
	cur := *apply
	for _, want := range chain {
		parent, ok := byID[cur.Parent.SpanID()]
		if !ok {
			t.Fatalf("the parent of %s (%s) is not among the spans", cur.Name, cur.Parent.SpanID())
		}
		if parent.Name != want.name || spanAttr(parent, "plait.node") != want.node {
			t.Fatalf("the parent of %s is %s on %s, want %s on %s", cur.Name, parent.Name, spanAttr(parent, "plait.node"), want.name, want.node)
		}
		if parent.SpanContext.TraceID() != apply.SpanContext.TraceID() {
			t.Fatalf("%s is in trace %s, the application in %s", parent.Name, parent.SpanContext.TraceID(), apply.SpanContext.TraceID())
		}
		cur = parent
	}
	if spanAttr(cur, "plait.message.type") != "sync" || spanAttr(cur, "plait.doc") != string(id) {
		t.Fatalf("the root span: %v", cur.Attributes)
	}
	// The store write is the document sync's child, in the same trace.
	docSync := byID[byID[byID[apply.Parent.SpanID()].Parent.SpanID()].Parent.SpanID()]
	store := false
	for _, s := range spans {
		if s.Name == "plait.store.write" && s.Parent.SpanID() == docSync.SpanContext.SpanID() {
			store = s.SpanContext.TraceID() == apply.SpanContext.TraceID()
		}
	}
	if !store {
		t.Fatal("no plait.store.write span under the document sync")
	}
}

// TestHTTPSpanAndAuditTraceID: an HTTP request is a span that continues an
// incoming traceparent, and the audit log names its trace.
func TestHTTPSpanAndAuditTraceID(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	n := startNode(t, t.TempDir(), func(c *Config) { c.TracerProvider = tp })
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	tp1 := "00-" + tid + "-00f067aa0ba902b7-01"
	if _, code := httpGet(t, n.HTTP+"/", map[string]string{"traceparent": tp1}); code != http.StatusOK {
		t.Fatalf("GET /: %d", code)
	}
	_, code := httpGet(t, n.HTTP+"/ws", map[string]string{"traceparent": tp1, "Connection": "Upgrade", "Upgrade": "websocket",
		"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "http://evil.example"})
	if code != http.StatusForbidden {
		t.Fatalf("a foreign origin: %d", code)
	}
	var get, ws bool
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID().String() != tid || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
			continue
		}
		switch {
		case s.Name == "GET /*" && spanAttr(s, "http.response.status_code") == "200":
			// "/" is the web app's route ("/*", static.go): spans are
			// named by route, not by path, so their names stay few.
			get = true
		case s.Name == "GET /ws" && spanAttr(s, "http.response.status_code") == "403":
			ws = true
		}
	}
	if !get || !ws {
		t.Fatalf("spans of GET / (%v) and GET /ws (%v) continuing the traceparent: %d spans", get, ws, len(exp.GetSpans()))
	}
	if _, code := httpGet(t, n.HTTP+"/healthz", nil); code != http.StatusOK {
		t.Fatal(code)
	}
	for _, s := range exp.GetSpans() {
		if strings.Contains(s.Name, "/healthz") {
			t.Fatal("a span for a health check")
		}
	}
	// A WebSocket opened in a trace: the session's offenses are audited
	// with the upgrade's trace id.
	p := dialPeerOpts(t, n.URL, "traced", &websocket.DialOptions{HTTPHeader: http.Header{"Traceparent": {tp1}}})
	if err := p.sendRaw(websocket.MessageBinary, []byte{0xa1, 0x64, 't', 'y'}); err != nil {
		t.Fatal(err)
	}
	p.expectClose()
	waitFor(t, func() bool {
		b, err := os.ReadFile(n.cfg.AuditLog)
		if err != nil {
			t.Fatal(err)
		}
		origin, malformed := false, false
		for _, line := range strings.Split(string(b), "\n") {
			var ev struct {
				Event   string
				TraceID string `json:"trace_id"`
			}
			if json.Unmarshal([]byte(line), &ev) == nil && ev.TraceID == tid {
				origin = origin || ev.Event == "origin_rejected"
				malformed = malformed || ev.Event == "malformed"
			}
		}
		return origin && malformed
	})
}

// TestOpenTracingFromEnv: traces are off without OTEL_* settings, refused
// for an exporter the node lacks, and with an OTLP endpoint the node sends
// its spans there over HTTP.
func TestOpenTracingFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	ctx := context.Background()
	for _, m := range []map[string]string{
		{},
		{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
		{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
	} {
		tr, err := openTracing(ctx, Config{}, env(m))
		if err != nil || tr.exporter != "off" {
			t.Fatalf("%v: %v %v", m, tr, err)
		}
	}
	for _, m := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "zipkin"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
	} {
		if _, err := openTracing(ctx, Config{}, env(m)); err == nil {
			t.Fatalf("%v accepted", m)
		}
	}
	var posts atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" && len(body) > 0 {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL) // the exporter reads it itself
	tr, err := openTracing(ctx, Config{}, os.Getenv)
	if err != nil || tr.exporter != "otlp (http)" {
		t.Fatalf("with an endpoint: %v %v", tr, err)
	}
	_, sp := tr.tp.Tracer("test").Start(ctx, "span")
	sp.End()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tr.shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if posts.Load() == 0 {
		t.Fatal("no spans reached the OTLP endpoint")
	}
}
