package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/wstransport"
	"github.com/plaithub/plait/pkg/protocol"
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
	audit   *auditor                 // the audit log; blocks repeat offenders
	auth    *authState               // nil: anonymous node

	closeAudit func() error

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
	be, err := openBackend(ctx, cfg, log, reg)
	if err != nil {
		_ = closeAudit()
		return nil, err
	}
	log.Info("storage", "backend", be.desc)
	m := hub.NewMetrics(reg)
	registerLimitMetrics(m)
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: log, be: be, reg: reg, m: m, ctx: nctx, cancel: cancel, closeAudit: closeAudit,
		conns: newConnLimiter[netip.Addr](cfg.MaxConnsPerIP), httpLim: newHTTPLimiter(cfg.HTTPRatePerIP, cfg.HTTPBurstPerIP),
		audit: newAuditor(auditW, blockOptions{Threshold: cfg.BlockThreshold, Window: cfg.BlockWindow, Duration: cfg.BlockDuration}, reg, time.Now)}
	fail := func(err error) (*Node, error) {
		cancel()
		if n.auth != nil {
			_ = n.auth.close()
		}
		_ = be.close()
		_ = closeAudit()
		return nil, err
	}
	var authz hub.Authorizer
	if cfg.AuthEnabled() {
		if n.auth, err = n.openAuth(ctx); err != nil {
			return fail(err)
		}
		authz = authorizer{acl: n.auth.acl}
	}
	n.hub, err = hub.New(ctx, hub.Options{
		Store:          be.store,
		Broker:         be.broker,
		Authorizer:     authz,
		Logger:         log,
		Metrics:        m,
		JoinTimeout:    cfg.JoinTimeout,
		IdleDocTimeout: cfg.IdleDocTimeout,

		MaxDocBytes:         offAsNegative(cfg.MaxDocBytes),
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
	go n.audit.sweepEvery(nctx, time.Minute)
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

// handleWS upgrades GET /ws to a WebSocket (coder/websocket over a
// connection hijacked from fasthttp) and serves it with the hub.
func (n *Node) handleWS(c *fiber.Ctx) error {
	if !headerHasToken(c.Get("Connection"), "upgrade") || !headerHasToken(c.Get("Upgrade"), "websocket") {
		c.Set("Upgrade", "websocket")
		return fiber.NewError(fiber.StatusUpgradeRequired, "this endpoint speaks WebSocket only (automerge-repo protocol)")
	}
	if n.draining.Load() {
		return fiber.NewError(fiber.StatusServiceUnavailable, "server shutting down")
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+string(c.Request().Host())+c.OriginalURL(), nil)
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "bad request URL")
	}
	c.Request().Header.VisitAll(func(k, v []byte) { req.Header.Add(string(k), string(v)) })
	req.Host = string(c.Request().Host())
	req.RemoteAddr = c.Context().RemoteAddr().String()
	if err := n.checkOrigin(req); err != nil {
		n.auditRequest(c, auditEvent{Event: "origin_rejected", Code: fiber.StatusForbidden, Reason: err.Error(), Offense: true})
		return fiber.NewError(fiber.StatusForbidden, err.Error())
	}
	info := hub.ConnInfo{RemoteAddr: req.RemoteAddr, RequestID: requestID(c)}
	var live *liveConn
	if n.auth != nil {
		revocations := n.auth.live.revocations.Load() // before the token check
		a, err := n.authenticate(c)
		if err != nil {
			return err
		}
		// The token must not reach anything that might log the URL.
		q := req.URL.Query()
		if q.Has("access_token") {
			q.Del("access_token")
			req.URL.RawQuery = q.Encode()
			req.RequestURI = req.URL.RequestURI()
		}
		info.Identity = hub.Identity{User: a.User}
		live = &liveConn{user: a.User, family: a.Family, issued: a.LoginAt, expires: a.Expires, token: credential(c), revocations: revocations}
		if !n.auth.users.acquire(a.User) {
			n.m.LimitHits.WithLabelValues(limitConnsPerUser).Inc()
			n.auditRequest(c, auditEvent{Event: "limit", User: a.User, Code: fiber.StatusTooManyRequests, Reason: "max-conns-per-user"})
			return fiber.NewError(fiber.StatusTooManyRequests, fmt.Sprintf("too many WebSocket connections for this user (at most %d: --max-conns-per-user)", n.cfg.MaxConnsPerUser))
		}
		info.UserLimit = n.auth.live.userLimit(a.User, n.cfg.UserMessageRate, n.cfg.UserMessageBurst)
	}
	release := func() {
		if live != nil {
			n.auth.live.remove(live)
			n.auth.live.dropUserLimit(live.user)
			n.auth.users.release(live.user)
		}
	}
	key := clientKey(c.Context().RemoteIP())
	if !n.conns.acquire(key) {
		release()
		n.m.LimitHits.WithLabelValues(limitConnsPerIP).Inc()
		n.auditRequest(c, auditEvent{Event: "limit", User: info.Identity.User, Code: fiber.StatusTooManyRequests, Reason: "max-conns-per-ip"})
		return fiber.NewError(fiber.StatusTooManyRequests, fmt.Sprintf("too many WebSocket connections from this address (at most %d: --max-conns-per-ip)", n.cfg.MaxConnsPerIP))
	}
	if !n.wsCap.acquire(struct{}{}) {
		n.conns.release(key)
		release()
		n.m.LimitHits.WithLabelValues(limitConns).Inc()
		c.Set(fiber.HeaderRetryAfter, retryAfterFull)
		return fiber.NewError(fiber.StatusServiceUnavailable, fmt.Sprintf("this node is full: it serves at most %d WebSocket connections (--max-conns); retry later", n.caps.maxConns))
	}
	// The slots are freed once: when the socket is done, or when fasthttp
	// closes the connection without calling the hijack handler.
	var freeOnce sync.Once
	free := func() {
		freeOnce.Do(func() {
			n.wsCap.release(struct{}{})
			n.conns.release(key)
			release()
		})
	}
	gc := guardedOf(c.Context().Conn())
	if gc != nil {
		gc.setOnClose(free)
	}
	c.Context().HijackSetNoResponse(true)
	// fasthttp calls the hijack handler once this handler returns (it skips
	// it only if the socket already failed); the slot is released when the
	// socket is done.
	c.Context().Hijack(func(hc net.Conn) {
		// The server keeps hijacked connections open (KeepHijackedConns), so
		// this handler returns at once and fasthttp frees its goroutine and
		// read buffer; the socket is served on a goroutine of our own. Use
		// the raw connection: fasthttp's wrapper reads through a buffer it
		// recycles when the handler returns (a WebSocket client sends nothing
		// before the 101, so that buffer is empty).
		nc := hc
		if u, ok := hc.(interface{ UnsafeConn() net.Conn }); ok {
			nc = u.UnsafeConn()
		}
		if gc != nil {
			gc.upgraded() // no longer pending: the slots above count it
		}
		_ = nc.SetDeadline(time.Time{}) // fasthttp's request timeouts must not apply to the socket
		ws, err := websocket.Accept(newHijackWriter(nc, wsBufferBytes), req, &websocket.AcceptOptions{
			OriginPatterns:  n.cfg.AllowedOrigins,
			CompressionMode: websocket.CompressionDisabled,
		})
		if err != nil {
			n.log.Info("WebSocket handshake failed", "remote", info.RemoteAddr, "err", err)
			_ = nc.Close()
			free()
			return
		}
		conn := wstransport.New(ws, wstransport.Options{
			MaxMessageBytes: n.cfg.MaxMessageBytes,
			MaxQueueBytes:   n.cfg.MaxQueueBytes,
			WriteTimeout:    n.cfg.WriteTimeout,
			PingInterval:    n.cfg.PingInterval,
			PongTimeout:     n.cfg.PongTimeout,
		})
		if live != nil {
			live.conn = conn
			n.auth.live.add(live)
			live.timer = time.AfterFunc(time.Until(live.expires)+n.cfg.TokenGrace, func() {
				n.audit.record(auditEvent{Event: "token_expired", Remote: info.RemoteAddr, RequestID: info.RequestID, User: live.user, Code: int(protocol.CloseTokenExpired)})
				closeWithError(conn, protocol.CloseTokenExpired, "access token expired: refresh it and reconnect")
			})
			// A revocation that landed between the token check above and
			// the socket's registration found nothing to close.
			go n.recheckRevoked(live)
		}
		go func() {
			_ = n.hub.Serve(n.ctx, conn, info)
			conn.Close(protocol.CloseNormal, "")
			<-conn.Done()
			_ = nc.Close()
			free()
		}()
	})
	return nil
}

// checkOrigin applies coder/websocket's rule (same host, or a listed
// pattern) before the hijack, so that a refused handshake is a normal 403.
func (n *Node) checkOrigin(r *http.Request) error {
	// A node that is anonymous because it listens on loopback only must be
	// reached by a loopback name: a page whose own host name an attacker
	// re-points at 127.0.0.1 (DNS rebinding) would otherwise pass the
	// same-host check below.
	if n.auth == nil && !n.cfg.AllowAnonymous {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !isLoopback(strings.Trim(host, "[]")) {
			return fmt.Errorf("host %q is not a loopback name: this anonymous node serves loopback only", r.Host)
		}
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil // not a browser: no cross-site risk
	}
	return n.originAllowed(origin, r.Host)
}

// originAllowed reports whether a browser page of origin may use this node
// (reached as host): the same host, or one of --allowed-origins.
func (n *Node) originAllowed(origin, host string) error {
	u, err := urlHost(origin)
	if err != nil {
		return fmt.Errorf("invalid Origin header %q", origin)
	}
	if strings.EqualFold(u, host) {
		return nil
	}
	for _, p := range n.cfg.AllowedOrigins {
		if ok, _ := matchOrigin(p, origin, u); ok {
			return nil
		}
	}
	return fmt.Errorf("origin %q is not allowed here (see --allowed-origins)", origin)
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
	if n.auth != nil {
		if err := n.auth.close(); err != nil {
			errs = append(errs, fmt.Errorf("failed to close the auth store: %w", err))
		}
	}
	if err := n.be.close(); err != nil {
		errs = append(errs, err)
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

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func headerHasToken(v, token string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
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
