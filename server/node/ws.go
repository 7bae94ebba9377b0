package node

import (
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/gofiber/fiber/v2"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/wstransport"
	"github.com/plaithub/plait/pkg/protocol"
)

// admission is one WebSocket request that passed every check and holds
// its slots: the request as coder/websocket sees it, the hub's view of the
// connection and, on a node with login, the socket's registration for
// revocation and token expiry.
type admission struct {
	req  *http.Request
	info hub.ConnInfo
	live *liveConn // nil on an anonymous node

	once  sync.Once
	undos []func() // what release undoes, in the order it was taken
}

// hold records undo as a slot release frees.
func (a *admission) hold(undo func()) { a.undos = append(a.undos, undo) }

// release frees every slot the admission holds, latest first. It is
// idempotent: the socket's end and fasthttp's closing of a connection it
// never handed over may both call it.
func (a *admission) release() {
	a.once.Do(func() {
		for i := len(a.undos) - 1; i >= 0; i-- {
			a.undos[i]()
		}
	})
}

// admit checks a WebSocket request in order: that it is an upgrade, that
// the node is not draining, its origin, its credentials (on a node with
// login) and the connection limits (per user, per address, per node). The
// error is what the client is told, with its HTTP status; on error nothing
// is held.
func (n *Node) admit(c *fiber.Ctx) (*admission, error) {
	if !headerHasToken(c.Get("Connection"), "upgrade") || !headerHasToken(c.Get("Upgrade"), "websocket") {
		c.Set("Upgrade", "websocket")
		return nil, fiber.NewError(fiber.StatusUpgradeRequired, "this endpoint speaks WebSocket only (automerge-repo protocol)")
	}
	if n.draining.Load() {
		return nil, fiber.NewError(fiber.StatusServiceUnavailable, "server shutting down")
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+string(c.Request().Host())+c.OriginalURL(), nil)
	if err != nil {
		return nil, fiber.NewError(fiber.StatusBadRequest, "bad request URL")
	}
	c.Request().Header.VisitAll(func(k, v []byte) { req.Header.Add(string(k), string(v)) })
	req.Host = string(c.Request().Host())
	cl := clientOf(c)
	req.RemoteAddr = cl.remote
	if err := n.checkOrigin(req); err != nil {
		n.auditRequest(c, auditEvent{Event: "origin_rejected", Code: fiber.StatusForbidden, Reason: err.Error(), Offense: true})
		return nil, fiber.NewError(fiber.StatusForbidden, err.Error())
	}
	a := &admission{req: req, info: hub.ConnInfo{RemoteAddr: req.RemoteAddr, RequestID: requestID(c),
		Trace: trace.SpanContextFromContext(c.UserContext())}}
	if n.auth != nil {
		if err := n.admitUser(c, a); err != nil {
			return nil, err
		}
	}
	key := clientKey(cl.ip.AsSlice())
	if !n.conns.acquire(key) {
		a.release()
		n.m.LimitHits.WithLabelValues(limitConnsPerIP).Inc()
		n.auditRequest(c, auditEvent{Event: "limit", User: a.info.Identity.User, Code: fiber.StatusTooManyRequests, Reason: "max-conns-per-ip"})
		return nil, fiber.NewError(fiber.StatusTooManyRequests, fmt.Sprintf("too many WebSocket connections from this address (at most %d: --max-conns-per-ip)", n.cfg.MaxConnsPerIP))
	}
	a.hold(func() { n.conns.release(key) })
	if !n.wsCap.acquire(struct{}{}) {
		a.release()
		n.m.LimitHits.WithLabelValues(limitConns).Inc()
		c.Set(fiber.HeaderRetryAfter, retryAfterFull)
		return nil, fiber.NewError(fiber.StatusServiceUnavailable, fmt.Sprintf("this node is full: it serves at most %d WebSocket connections (--max-conns); retry later", n.caps.maxConns))
	}
	a.hold(func() { n.wsCap.release(struct{}{}) })
	return a, nil
}

// admitUser checks the request's access token, keeps it out of the URL
// the WebSocket library sees, and takes the user's connection slot and
// message limiter.
func (n *Node) admitUser(c *fiber.Ctx, a *admission) error {
	revocations := n.auth.live.revocations.Load() // before the token check
	acc, err := n.authenticate(c)
	if err != nil {
		return err
	}
	// The token must not reach anything that might log the URL.
	q := a.req.URL.Query()
	if q.Has("access_token") {
		q.Del("access_token")
		a.req.URL.RawQuery = q.Encode()
		a.req.RequestURI = a.req.URL.RequestURI()
	}
	a.info.Identity = hub.Identity{User: acc.User}
	a.live = &liveConn{user: acc.User, family: acc.Family, issued: acc.LoginAt, expires: acc.Expires, token: credential(c), revocations: revocations}
	if !n.auth.users.acquire(acc.User) {
		n.m.LimitHits.WithLabelValues(limitConnsPerUser).Inc()
		n.auditRequest(c, auditEvent{Event: "limit", User: acc.User, Code: fiber.StatusTooManyRequests, Reason: "max-conns-per-user"})
		return fiber.NewError(fiber.StatusTooManyRequests, fmt.Sprintf("too many WebSocket connections for this user (at most %d: --max-conns-per-user)", n.cfg.MaxConnsPerUser))
	}
	a.info.UserLimit = n.auth.rates.acquire(acc.User)
	live := a.live
	a.hold(func() {
		n.auth.live.remove(live)
		n.auth.rates.release(live.user)
		n.auth.users.release(live.user)
	})
	return nil
}

// handleWS upgrades GET /ws to a WebSocket (coder/websocket over a
// connection hijacked from fasthttp) once admit let it in, and serves it
// with the hub.
func (n *Node) handleWS(c *fiber.Ctx) error {
	a, err := n.admit(c)
	if err != nil {
		return err
	}
	// The slots are freed once: when the socket is done, or when fasthttp
	// closes the connection without calling the hijack handler.
	gc := guardedOf(c.Context().Conn())
	if gc != nil {
		gc.setOnClose(a.release)
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
		n.serveSocket(a, nc)
	})
	return nil
}

// serveSocket completes the WebSocket handshake on nc, the connection
// hijacked for a, and serves the socket with the hub on a goroutine of its
// own; a is released when the socket is done.
func (n *Node) serveSocket(a *admission, nc net.Conn) {
	_ = nc.SetDeadline(time.Time{}) // fasthttp's request timeouts must not apply to the socket
	// Frames queued together for this client go out in one write.
	bc := wstransport.NewBatchConn(nc)
	hw := newHijackWriter(bc, wsBufferBytes)
	hw.Header().Set("X-Request-Id", a.info.RequestID) // on the 101 too: the session's log lines carry it
	ws, err := websocket.Accept(hw, a.req, &websocket.AcceptOptions{
		OriginPatterns:  n.cfg.AllowedOrigins,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		n.log.Debug("WebSocket handshake failed", "remote", a.info.RemoteAddr, "request_id", a.info.RequestID, "err", err)
		_ = nc.Close()
		a.release()
		return
	}
	conn := wstransport.New(ws, wstransport.Options{
		MaxMessageBytes: n.cfg.MaxMessageBytes,
		MaxQueueBytes:   n.cfg.MaxQueueBytes,
		WriteTimeout:    n.cfg.WriteTimeout,
		PingInterval:    n.cfg.PingInterval,
		PongTimeout:     n.cfg.PongTimeout,
		Batch:           bc,
		OnWritten:       n.m.ObserveSend,
	})
	if live := a.live; live != nil {
		live.conn = conn
		n.auth.live.add(live)
		live.timer = time.AfterFunc(time.Until(live.expires)+n.cfg.TokenGrace, func() {
			n.audit.record(auditEvent{Event: "token_expired", Remote: a.info.RemoteAddr, RequestID: a.info.RequestID,
				TraceID: traceIDString(a.info.Trace), User: live.user, Code: int(protocol.CloseTokenExpired)})
			closeWithError(conn, protocol.CloseTokenExpired, "access token expired: refresh it and reconnect")
		})
		// A revocation that landed between the token check in admit and
		// the socket's registration found nothing to close.
		go n.recheckRevoked(live)
	}
	go func() {
		_ = n.hub.Serve(n.ctx, conn, a.info)
		conn.Close(protocol.CloseNormal, "")
		<-conn.Done()
		_ = nc.Close()
		a.release()
	}()
}

func headerHasToken(v, token string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}
