package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Traces (OpenTelemetry). Off unless the standard OTEL_* variables
// configure an OTLP exporter: then the node sends its spans (the hub's
// message, store, publish and delivery spans, and one per HTTP request)
// over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT),
// with the SDK's own handling of OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER and OTEL_EXPORTER_OTLP_HEADERS.

const tracerName = "github.com/plaithub/plait/server/node"

// tracing is the node's tracer provider and how to stop it.
type tracing struct {
	tp       trace.TracerProvider
	shutdown func(context.Context) error // flushes and stops the exporter
	exporter string                      // for the start-up log: "off", "otlp (http)", "given"
}

// openTracing returns the tracer provider cfg.TracerProvider names, else
// the one the OTEL_* variables (read with getenv) configure, else a no-op.
func openTracing(ctx context.Context, cfg Config, getenv func(string) string) (*tracing, error) {
	if cfg.TracerProvider != nil {
		return &tracing{tp: cfg.TracerProvider, shutdown: func(context.Context) error { return nil }, exporter: "given"}, nil
	}
	off := &tracing{tp: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }, exporter: "off"}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return off, nil
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "none":
		return off, nil
	case "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return off, nil
		}
	case "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: use otlp (or none)", exp)
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q is not supported: the node sends OTLP over HTTP (http/protobuf, port 4318)", proto)
	}
	exp, err := otlptracehttp.New(ctx) // endpoint, headers, TLS and timeout from OTEL_EXPORTER_OTLP_*
	if err != nil {
		return nil, fmt.Errorf("failed to set up the OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", serviceName(getenv))))
	if err != nil {
		return nil, fmt.Errorf("failed to describe the trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &tracing{tp: tp, shutdown: tp.Shutdown, exporter: "otlp (http)"}, nil
}

// hubTracer is the hub's tracer; nil (no spans at all) when traces are off.
func (t *tracing) hubTracer() trace.Tracer {
	if t.exporter == "off" {
		return nil
	}
	return t.tp.Tracer("github.com/plaithub/plait/hub")
}

// serviceName is OTEL_SERVICE_NAME, or "plait".
func serviceName(getenv func(string) string) string {
	if s := getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return "plait"
}

// traceMiddleware makes a span of every HTTP request but the probes and
// /metrics, continuing the trace of an incoming traceparent header (a
// proxy's or a client's), and keeps it in the request's context for the
// handlers, the logs and the audit log.
func (n *Node) traceMiddleware(c *fiber.Ctx) error {
	switch c.Path() {
	case "/healthz", "/readyz", "/metrics":
		return c.Next()
	}
	carrier := propagation.MapCarrier{}
	if v := c.Get("traceparent"); v != "" {
		carrier["traceparent"] = v
		if s := c.Get("tracestate"); s != "" {
			carrier["tracestate"] = s
		}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), carrier)
	method := c.Method()
	ctx, sp := n.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("http.request.method", method),
		attribute.String("url.path", c.Path()),
		attribute.String("client.address", clientOf(c).ip.String()),
		attribute.String("plait.request_id", requestID(c)),
		attribute.String("plait.node", n.hub.PeerID())))
	c.SetUserContext(ctx)
	err := c.Next()
	status := c.Response().StatusCode()
	var fe *fiber.Error
	if errors.As(err, &fe) {
		status = fe.Code
	}
	route := c.Route().Path
	sp.SetName(method + " " + route)
	sp.SetAttributes(attribute.String("http.route", route), attribute.Int("http.response.status_code", status))
	if status >= 500 {
		sp.SetStatus(codes.Error, fmt.Sprintf("HTTP %d", status))
	}
	sp.End()
	return err
}

// traceIDOf is the trace id of the request's span; "" without one.
func traceIDOf(c *fiber.Ctx) string {
	return traceIDString(trace.SpanContextFromContext(c.UserContext()))
}

// traceIDString is sc's trace id; "" if it has none.
func traceIDString(sc trace.SpanContext) string {
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// traceLogHandler adds trace_id and span_id to records logged with a
// context that holds a span (the *Context methods of slog).
type traceLogHandler struct{ slog.Handler }

func (h traceLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceLogHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return traceLogHandler{h.Handler.WithAttrs(a)}
}

func (h traceLogHandler) WithGroup(g string) slog.Handler {
	return traceLogHandler{h.Handler.WithGroup(g)}
}
