package node

import (
	"os"

	"context"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/webhook"
)

// wsBufferBytes sizes each WebSocket connection's read and write buffers.
// Frames larger than the buffers pass through them in pieces, so small
// buffers cost little throughput and save memory on idle connections.
const wsBufferBytes = 512

// Node is one running Plait node: the Fiber app, the hub and the store.
type Node struct {
	cfg Config
	log *slog.Logger
	be  *backend
	hub *hub.Hub
	app *fiber.App
	reg *prometheus.Registry
	m   *hub.Metrics

	conns   *connLimiter[netip.Addr] // WebSockets per client address
	httpLim *httpLimiter             // HTTP requests per client address
	caps    connCaps                 // effective connection caps
	guard   *connGuard               // connections not (yet) WebSockets
	wsCap   *connLimiter[struct{}]   // WebSockets on the node (--max-conns)
	audit   *auditor                 // the security audit log
	blocks  *blocklist               // blocks repeat offenders
	auth    *authState               // nil: anonymous node
	quotas  quotas                   // --quota-file
	hooks   *webhook.Dispatcher      // --webhooks-file; nil: none

	closeAudit func() error
	tracing    *tracing
	tracer     trace.Tracer // HTTP spans

	ctx      context.Context // lives until Shutdown: parent of every session
	cancel   context.CancelFunc
	draining atomic.Bool
}

// New opens the store and builds the node; it does not listen yet.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	auditW, closeAudit, err := openAuditLog(cfg.AuditLog)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	log = slog.New(traceLogHandler{log.Handler()}) // trace ids on lines logged with a span's context
	log, logs := throttleLogs(log, reg)            // repeated warnings and errors: a few lines and a count
	tr, err := openTracing(ctx, cfg, os.Getenv)
	if err != nil {
		_ = closeAudit()
		return nil, err
	}
	be, err := openBackend(ctx, cfg, log, reg)
	if err != nil {
		_ = tr.shutdown(ctx)
		_ = closeAudit()
		return nil, err
	}
	log.Info("storage", "backend", be.desc)
	log.Info("traces", "exporter", tr.exporter)
	m := hub.NewMetrics(reg)
	registerLimitMetrics(m)
	m.LimitHits.WithLabelValues(limitDocsPerUser)
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: log, be: be, reg: reg, m: m, ctx: nctx, cancel: cancel, closeAudit: closeAudit,
		tracing: tr, tracer: tr.tp.Tracer(tracerName),
		conns: newConnLimiter[netip.Addr](cfg.MaxConnsPerIP), httpLim: newHTTPLimiter(cfg.HTTPRatePerIP, cfg.HTTPBurstPerIP),
		blocks: newBlocklist(blockOptions{Threshold: cfg.BlockThreshold, Window: cfg.BlockWindow, Duration: cfg.BlockDuration}, reg, time.Now)}
	n.audit = newAuditor(auditW, n.blocks, reg)
	fail := func(err error) (*Node, error) {
		cancel()
		if n.auth != nil {
			_ = n.auth.close()
		}
		if n.hooks != nil {
			n.hooks.Close()
		}
		_ = be.close()
		_ = tr.shutdown(context.Background())
		_ = closeAudit()
		return nil, err
	}
	if n.quotas, err = readQuotaFile(cfg.QuotaFile); err != nil {
		return fail(err)
	}
	var authz hub.Authorizer
	if cfg.AuthEnabled() {
		if n.auth, err = n.openAuth(ctx); err != nil {
			return fail(err)
		}
		authz = authorizer{acl: n.auth.acl}
	}
	peerID := "plait-" + protocol.RandomHex(8)
	if err := n.startWebhooks(ctx, reg, peerID); err != nil {
		return fail(err)
	}
	n.hub, err = hub.New(ctx, hub.Options{
		PeerID:         peerID,
		OnStored:       n.onStored,
		Store:          be.store,
		Broker:         be.broker,
		Authorizer:     authz,
		Logger:         log,
		Tracer:         tr.hubTracer(),
		Metrics:        m,
		JoinTimeout:    cfg.JoinTimeout,
		IdleDocTimeout: cfg.IdleDocTimeout,
		PendingWait:    cfg.PendingWait,

		MaxDocBytes:         offAsNegative(cfg.MaxDocBytes),
		DocMaxBytes:         n.docMaxBytes,
		MaxInflatedBytes:    cfg.MaxInflatedBytes,
		MaxSendBytes:        cfg.MaxSendBytes,
		MaxDocsPerConn:      offAsNegative(cfg.MaxDocsPerConn),
		MaxOpenDocs:         offAsNegative(cfg.MaxOpenDocs),
		MaxConnBytes:        cfg.MaxConnBytes,
		MaxInflightBytes:    cfg.MaxInflightBytes,
		MaxStateBytes:       cfg.MaxStateBytes,
		MaxEphemeralBytes:   cfg.MaxEphemeralBytes,
		EphemeralRelayBytes: cfg.EphemeralRelayBytes,
		MaxCompactBytes:     cfg.MaxCompactBytes,
		MessageRate:         cfg.hubMessageRate(),
		MessageBurst:        cfg.MessageBurst,
		OnSecurityEvent:     n.audit.hubEvent,
		AfterGC:             releaseFreedMemory,
	})
	if err != nil {
		return fail(err)
	}
	go n.httpLim.sweepEvery(nctx, time.Minute)
	go every(nctx, throttleWindow, func(time.Time) { logs.flush(context.Background()) })
	go n.blocks.sweepEvery(nctx, time.Minute)
	if n.auth != nil {
		go n.watchEvents()
	}
	n.initConnCaps()
	n.app = n.newApp()
	n.app.Server().KeepHijackedConns = true        // see handleWS
	n.app.Server().ConnState = connStateHook       // see connGuard
	n.app.Server().HeaderReceived = headerReceived // the body's own timeout
	return n, nil
}

// Hub returns the node's hub.
func (n *Node) Hub() *hub.Hub { return n.hub }

func (n *Node) newApp() *fiber.App {
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ReadTimeout:           n.cfg.ReadHeaderTimeout, // the headers; headerReceived then gives the body its own
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           120 * time.Second,
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			code := fiber.StatusInternalServerError
			var fe *fiber.Error
			if errors.As(err, &fe) {
				code = fe.Code
			}
			return c.Status(code).JSON(fiber.Map{"error": err.Error()})
		},
	})
	n.routes(app)
	return app
}

// Serve accepts connections on ln until Shutdown.
func (n *Node) Serve(ln net.Listener) error {
	n.log.Info("plait node serving", "addr", ln.Addr().String(), "data_dir", n.cfg.DataDir,
		"peer_id", n.hub.PeerID(), "storage_id", n.hub.StorageID(), "tls", n.cfg.TLSCert != "", "anonymous", n.auth == nil)
	n.logAuthMode(ln.Addr().String())
	if n.cfg.DebugAddr != "" {
		if err := n.serveDebug(); err != nil {
			return err
		}
	}
	n.logConnCaps()
	return n.app.Listener(n.guard.wrap(ln))
}

// Shutdown drains the node: /readyz turns 503, every session is closed with
// 1012 (service restart) so clients reconnect, documents write their sync
// states, the HTTP server stops and the store is closed.
func (n *Node) Shutdown(ctx context.Context) error {
	n.draining.Store(true)
	var errs []error
	if err := n.hub.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	n.cancel()
	if err := n.app.ShutdownWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("failed to stop HTTP server: %w", err))
	}
	if n.hooks != nil {
		// After the API's last event; in a cluster another node makes the
		// deliveries this one had in hand.
		n.hooks.Close()
	}
	if n.auth != nil {
		if err := n.auth.close(); err != nil {
			errs = append(errs, fmt.Errorf("failed to close the auth store: %w", err))
		}
	}
	if err := n.be.close(); err != nil {
		errs = append(errs, err)
	}
	if err := n.tracing.shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("failed to flush traces: %w", err))
	}
	if err := n.closeAudit(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Run listens on cfg.Addr and serves until ctx is done, then shuts down
// within cfg.ShutdownTimeout.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	n, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	ln, err := listen(cfg)
	if err != nil {
		_ = n.Shutdown(context.Background())
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- n.Serve(ln) }()
	select {
	case err := <-errc:
		_ = n.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// serveDebug serves Go's pprof handlers on the loopback debug address; it
// stops with the node.
func (n *Node) serveDebug() error {
	ln, err := net.Listen("tcp", n.cfg.DebugAddr)
	if err != nil {
		return fmt.Errorf("failed to listen on debug-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-n.ctx.Done(); _ = srv.Close() }()
	n.log.Info("pprof profiles", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	return nil
}
