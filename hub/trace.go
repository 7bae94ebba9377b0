package hub

import (
	"context"
	"encoding/hex"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Traces. The hub uses only the OpenTelemetry API: the node wires an SDK
// (or nothing: the no-op tracer costs a few nanoseconds a span). One edit
// is one trace across nodes:
//
//	plait.message          a sync message read from a WebSocket (session)
//	  plait.document.sync  its handling by the document's owner
//	    plait.store.write  the store write of the changes it brought
//	    plait.broker.publish  their publication to the other nodes
//	      plait.broker.deliver  on another node: the publication arrives
//	        plait.remote.apply  its owner applies the changes
//
// The trace context crosses nodes in Publication.Trace (W3C traceparent).

// Span names.
const (
	spanMessage  = "plait.message"
	spanDocSync  = "plait.document.sync"
	spanStore    = "plait.store.write"
	spanPublish  = "plait.broker.publish"
	spanDeliver  = "plait.broker.deliver"
	spanApply    = "plait.remote.apply"
	traceScope   = "github.com/plaithub/plait/hub"
	traceparentN = 55 // "00-" 32 hex "-" 16 hex "-" 2 hex
)

// Span attribute keys.
var (
	attrDoc       = attribute.Key("plait.doc")
	attrMsgType   = attribute.Key("plait.message.type")
	attrConn      = attribute.Key("plait.conn")
	attrRequestID = attribute.Key("plait.request_id")
	attrNode      = attribute.Key("plait.node")
	attrOrigin    = attribute.Key("plait.origin")
	attrOffset    = attribute.Key("plait.offset")
	attrBytes     = attribute.Key("plait.bytes")
	attrChanges   = attribute.Key("plait.changes")
)

func defaultTracer() trace.Tracer { return noop.NewTracerProvider().Tracer(traceScope) }

// noSpan is the span of a hub without a Tracer: it records nothing and
// has no span context.
var noSpan trace.Span = noop.Span{}

// startSpan starts a span named name, child of parent (invalid: a new
// trace), with the node's id among its attributes.
func (h *Hub) startSpan(parent trace.SpanContext, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if h.opts.untraced {
		return context.Background(), noSpan
	}
	ctx := context.Background()
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	attrs = append(attrs, attrNode.String(h.opts.PeerID))
	return h.opts.Tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// endSpan ends sp, marking it failed with err if err is not nil.
func endSpan(sp trace.Span, err error) {
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
	sp.End()
}

// formatTraceparent is sc as a W3C traceparent header value; "" if sc is
// not valid.
func formatTraceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	var b strings.Builder
	b.Grow(traceparentN)
	b.WriteString("00-")
	b.WriteString(hex.EncodeToString(tid[:]))
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString(sid[:]))
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString([]byte{byte(sc.TraceFlags())}))
	return b.String()
}

// parseTraceparent reads a W3C traceparent (version 00) as a remote span
// context; the zero SpanContext if s is not a valid one. It is untrusted
// input (another node's publication): anything malformed is ignored.
func parseTraceparent(s string) trace.SpanContext {
	if len(s) != traceparentN || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return trace.SpanContext{}
	}
	tid, err := trace.TraceIDFromHex(s[3:35])
	if err != nil {
		return trace.SpanContext{}
	}
	sid, err := trace.SpanIDFromHex(s[36:52])
	if err != nil {
		return trace.SpanContext{}
	}
	f, err := hex.DecodeString(s[53:55])
	if err != nil {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid,
		TraceFlags: trace.TraceFlags(f[0]) & trace.FlagsSampled, Remote: true})
}

// ValidTraceparent reports whether s is a W3C traceparent the hub reads:
// brokers carry Publication.Trace only if it is one.
func ValidTraceparent(s string) bool { return parseTraceparent(s).IsValid() }

// traceAttr is sc's trace id as a log attribute; an empty attribute, which
// slog leaves out, if sc has none (no SDK is configured).
func traceAttr(sc trace.SpanContext) slog.Attr {
	if !sc.HasTraceID() {
		return slog.Attr{}
	}
	return slog.String("trace_id", sc.TraceID().String())
}
