package hub

import (
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceparent(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	s := formatTraceparent(sc)
	if s != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("formatted %q", s)
	}
	got := parseTraceparent(s)
	if got.TraceID() != tid || got.SpanID() != sid || !got.IsSampled() || !got.IsRemote() {
		t.Fatalf("parsed %+v", got)
	}
	if formatTraceparent(trace.SpanContext{}) != "" {
		t.Fatal("an invalid span context formatted")
	}
	for _, bad := range []string{"", "00", s + "x", "01" + s[2:], "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz", "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"} {
		if parseTraceparent(bad).IsValid() || ValidTraceparent(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// BenchmarkSpanNoop is what tracing costs on the hot path when no SDK is
// configured (the default): a span started and ended per message.
func BenchmarkSpanNoop(b *testing.B) {
	b.Run("no tracer", func(b *testing.B) {
		benchSpan(b, &Hub{opts: Options{Tracer: defaultTracer(), untraced: true, PeerID: "plait-bench"}})
	})
	b.Run("noop tracer", func(b *testing.B) { benchSpan(b, &Hub{opts: Options{Tracer: defaultTracer(), PeerID: "plait-bench"}}) })
}

func benchSpan(b *testing.B, h *Hub) {
	b.ReportAllocs()
	for b.Loop() {
		_, sp := h.startSpan(trace.SpanContext{}, spanMessage, trace.SpanKindServer, attrDoc.String("doc"), attrMsgType.String("sync"))
		endSpan(sp, nil)
	}
}
