package node

import (
	"container/list"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// listen opens the node's listener: TLS (1.3 minimum) when the node has a
// certificate, plain TCP otherwise.
func listen(cfg Config) (net.Listener, error) {
	var tc *tls.Config
	if cfg.TLSCert != "" {
		var err error
		if tc, err = tlsConfig(cfg); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen: %w", err)
	}
	ln = wrapProxyListener(ln, cfg.TrustedProxies) // the PROXY header precedes TLS
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	return ln, nil
}

// tlsConfig loads the node's certificate. TLS 1.3 is the minimum: every
// browser and Go release of the last years speaks it, and it drops the
// weak cipher suites and renegotiation of older versions.
func tlsConfig(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("failed to load tls-cert and tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}, nil
}

// openAuditLog opens where the audit log goes: "-" is standard error,
// anything else a file opened for appending (0600: it names users and
// addresses).
func openAuditLog(dest string) (io.Writer, func() error, error) {
	if dest == "-" {
		return os.Stderr, func() error { return nil }, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to open audit-log: %w", err)
	}
	return f, f.Close, nil
}

// Connection admission. A node runs on a fixed number of file
// descriptors, so what a client may hold before it is a WebSocket is
// bounded before any byte of its request is read: connGuard wraps the
// listener and counts every accepted connection as pending until it is
// upgraded to a WebSocket (then --max-conns-per-ip and --max-conns count
// it) or closed.

// bodyReadTimeout bounds reading a request's body once its headers are
// in (--read-header-timeout bounds the headers): uploads to the REST API
// may be slow, headers have no reason to be.
const bodyReadTimeout = 30 * time.Second

// refuseWriteTimeout bounds the write of a refusal: the response is far
// smaller than a fresh socket's send buffer, so it never waits in
// practice, and the accept loop must not.
const refuseWriteTimeout = 100 * time.Millisecond

// guardLogEvery is how often a source's refusals are audited, and the
// node-wide cap's evictions logged: every one is counted in
// plait_limit_hits_total, but a flood must not flood the logs.
const guardLogEvery = time.Minute

// connGuard counts the node's pending connections, per client address
// (clientKey) and in all, and enforces their caps when they are accepted.
// It is safe for concurrent use.
type connGuard struct {
	perIP int // pending connections per client address; 0: no limit
	total int // pending connections on the node; 0: no limit
	// refused counts a connection refused for limit and, if report is
	// set (at most once per guardLogEvery and source, or node), audits or
	// logs it; evicted counts a pending connection closed to make room
	// for a new one, and logs it if report is set. Both are called
	// without the lock held.
	refused func(c net.Conn, limit string, report bool)
	evicted func(c net.Conn, report bool)
	// outOfFiles is told that accepting failed for want of file
	// descriptors, and how long Accept waits before it tries again.
	outOfFiles func(err error, wait time.Duration)

	mu      sync.Mutex
	n       int
	ips     map[netip.Addr]*ipPending
	waiting list.List // *guardedConn waiting for request headers, longest waiting first
	busy    list.List // *guardedConn past their headers (body, handler), longest busy first
	lastLog time.Time // of a node-wide eviction or refusal
}

type ipPending struct {
	n       int
	audited time.Time // the last refusal audited
}

func newConnGuard(perIP, total int) *connGuard {
	return &connGuard{perIP: perIP, total: max(total, 0), ips: make(map[netip.Addr]*ipPending)}
}

// pending returns the number of pending connections (plait_pending_connections).
func (g *connGuard) pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// wrap returns ln with admission: its Accept returns only the
// connections that the caps let in.
func (g *connGuard) wrap(ln net.Listener) net.Listener { return &guardListener{Listener: ln, g: g} }

type guardListener struct {
	net.Listener
	g *connGuard
}

// Accept returns the next admitted connection. Each refused connection
// costs one turn of the loop and nothing else: the loop ends when one is
// admitted or the listener fails (is closed). Running out of file
// descriptors is no failure: fasthttp would stop serving on any error
// but a timeout, so Accept waits (5 ms doubling to 1 s) until
// descriptors are freed, as net/http does.
func (l *guardListener) Accept() (net.Conn, error) {
	var wait time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
				return nil, err
			}
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			if l.g.outOfFiles != nil {
				l.g.outOfFiles(err, wait)
			}
			time.Sleep(wait)
			continue
		}
		wait = 0
		if gc := l.g.admit(c); gc != nil {
			return gc, nil
		}
	}
}

// busyGrace is how long a connection past its request headers (reading
// the body, or handled) is safe from eviction at the node-wide cap.
const busyGrace = 10 * time.Second

// admit counts c as pending, or refuses it: a client address over its
// cap is refused (429); at the node-wide cap the connection that has
// waited longest for its request headers (still sending them, or idle
// between keep-alive requests: slowloris and friends) is closed to make
// room, else the one that has been past its headers longest, if that is
// over busyGrace (a body sent slowly), and only if there is none the new
// one is refused (503). A request is not cut in its first busyGrace, and
// health checks and scrapes get in while every pending connection
// belongs to slow senders.
func (g *connGuard) admit(c net.Conn) net.Conn {
	key := remoteKey(c.RemoteAddr())
	gc := &guardedConn{Conn: c, g: g, key: key}
	if pc := proxyConnOf(c); pc != nil {
		// A trusted proxy: its connections count for the client its PROXY
		// header names, once read (see guardedConn.Read); until then, and
		// without a header, only toward the node-wide cap.
		key, gc.key, gc.proxied = netip.Addr{}, netip.Addr{}, pc
	}
	gc.scanning.Store(true)
	var (
		victim *guardedConn
		limit  string
		audit  bool
		logEv  bool
	)
	now := time.Now()
	g.mu.Lock()
	ip := g.ips[key]
	switch {
	case g.perIP > 0 && key.IsValid() && ip != nil && ip.n >= g.perIP:
		limit = limitPendingPerIP
		if now.Sub(ip.audited) >= guardLogEvery {
			ip.audited, audit = now, true
		}
	case g.total > 0 && g.n >= g.total:
		e := g.waiting.Front()
		if e == nil {
			// A request whose body has trickled in for longer than an
			// honest one takes is as good as a slow header.
			if b := g.busy.Front(); b != nil && now.Sub(b.Value.(*guardedConn).since) >= busyGrace {
				e = b
			}
		}
		if e != nil {
			victim = e.Value.(*guardedConn)
			g.releaseLocked(victim)
			if now.Sub(g.lastLog) >= guardLogEvery {
				g.lastLog, logEv = now, true
			}
			ip = g.ips[key] // the victim may have been its last one
		} else {
			limit = limitPending
			if now.Sub(g.lastLog) >= guardLogEvery {
				g.lastLog, audit = now, true
			}
		}
	}
	if limit == "" {
		g.n++
		if key.IsValid() {
			if ip == nil {
				ip = &ipPending{}
				g.ips[key] = ip
			}
			ip.n++
		}
		gc.counted = true
		gc.elem = g.waiting.PushBack(gc)
	}
	g.mu.Unlock()
	if victim != nil {
		victim.abort()
		g.evicted(victim.Conn, logEv)
	}
	if limit != "" {
		refuse(c, limit)
		g.refused(c, limit, audit)
		return nil
	}
	if tc, ok := c.(*tls.Conn); ok {
		return &guardedTLSConn{guardedConn: gc, tls: tc}
	}
	return gc
}

// rekey counts c, a trusted proxy's connection counted only node-wide so
// far, for key, the client its PROXY header named; false if that client
// is at its cap (then c is counted as refused: close it).
func (g *connGuard) rekey(c *guardedConn, key netip.Addr) bool {
	if !key.IsValid() {
		return true
	}
	audit := false
	now := time.Now()
	g.mu.Lock()
	if !c.counted {
		g.mu.Unlock()
		return true
	}
	ip := g.ips[key]
	if g.perIP > 0 && ip != nil && ip.n >= g.perIP {
		if now.Sub(ip.audited) >= guardLogEvery {
			ip.audited, audit = now, true
		}
		g.mu.Unlock()
		if g.refused != nil {
			g.refused(c.Conn, limitPendingPerIP, audit)
		}
		return false
	}
	if ip == nil {
		ip = &ipPending{}
		g.ips[key] = ip
	}
	ip.n++
	c.key = key
	g.mu.Unlock()
	return true
}

// releaseLocked stops counting c, once.
func (g *connGuard) releaseLocked(c *guardedConn) {
	if c.elem != nil {
		if c.inBusy {
			g.busy.Remove(c.elem)
		} else {
			g.waiting.Remove(c.elem)
		}
		c.elem, c.inBusy = nil, false
	}
	if !c.counted {
		return
	}
	c.counted = false
	g.n--
	if ip := g.ips[c.key]; ip != nil {
		if ip.n--; ip.n <= 0 {
			delete(g.ips, c.key)
		}
	}
}

// refuse answers a refused connection with a short error response when
// that costs no more than a write (not on TLS: it would need a
// handshake) and closes it.
func refuse(c net.Conn, limit string) {
	if _, ok := c.(*tls.Conn); !ok {
		status, msg := "429 Too Many Requests", "too many pending connections from this address (--max-pending-conns-per-ip)"
		if limit == limitPending {
			status, msg = "503 Service Unavailable", "this node has too many pending connections (--max-pending-conns); retry later"
		}
		body := `{"error":"` + msg + `"}`
		_ = c.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
		_, _ = io.WriteString(c, "HTTP/1.1 "+status+"\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	}
	_ = c.Close()
}

// remoteKey is the clientKey of a connection's remote address; the zero
// Addr if it has none (then only the node-wide cap applies).
func remoteKey(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return clientKey(ta.IP)
	}
	return netip.Addr{}
}

// guardedConn is an admitted connection. It watches the bytes read while
// the request headers are due, to know whether it waits for them (an
// eviction candidate), and stops counting as pending when it is upgraded
// or closed.
type guardedConn struct {
	net.Conn
	g   *connGuard
	key netip.Addr // under g.mu once admitted

	// proxied is the trusted proxy's connection under this one until its
	// PROXY header is resolved (the reading goroutine's).
	proxied *proxyConn

	scanning atomic.Bool // the request headers are due: watch for their end
	newlines int         // consecutive line ends seen; the reading goroutine's
	sawText  bool        // a byte other than a line end seen; the reading goroutine's

	// Under g.mu:
	counted bool          // counts as pending
	elem    *list.Element // in g.waiting or g.busy (inBusy)
	inBusy  bool
	since   time.Time // when it joined g.busy
	onClose func()    // see setOnClose
	closed  bool
}

// guardedTLSConn keeps a TLS connection recognisable (fasthttp checks for
// these methods: ALPN, the handshake deadline, RequestCtx.IsTLS).
type guardedTLSConn struct {
	*guardedConn
	tls *tls.Conn
}

func (c *guardedTLSConn) Handshake() error                     { return c.tls.Handshake() }
func (c *guardedTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// guardedOf returns the guardedConn of c; nil if c is not one (a listener
// the node did not wrap).
func guardedOf(c net.Conn) *guardedConn {
	switch gc := c.(type) {
	case *guardedConn:
		return gc
	case *guardedTLSConn:
		return gc.guardedConn
	}
	return nil
}

func (c *guardedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.proxied != nil && c.proxied.resolved.Load() {
		pc := c.proxied
		c.proxied = nil
		if a := pc.client.Load(); a != nil && !c.g.rekey(c, clientKey(a.IP)) {
			_ = c.Close()
			return 0, fmt.Errorf("connection refused: %s", limitPendingPerIP)
		}
	}
	if n > 0 && c.scanning.Load() && c.scan(b[:n]) {
		c.scanning.Store(false)
		c.g.mu.Lock()
		if c.elem != nil && !c.inBusy {
			c.g.waiting.Remove(c.elem)
			c.elem, c.inBusy, c.since = c.g.busy.PushBack(c), true, time.Now()
		}
		c.g.mu.Unlock()
	}
	return n, err
}

// scan reports whether b holds the blank line that ends request headers
// (CRLF CRLF, or bare LFs as fasthttp also accepts). Line ends before the
// request line do not count: fasthttp skips them and still waits.
func (c *guardedConn) scan(b []byte) bool {
	for _, x := range b {
		switch x {
		case '\n':
			if c.newlines++; c.newlines >= 2 && c.sawText {
				return true
			}
		case '\r':
		default:
			c.newlines, c.sawText = 0, true
		}
	}
	return false
}

// awaitRequest marks c as waiting for the headers of its next request:
// fasthttp's ConnState hook calls it when c turns idle (keep-alive).
func (c *guardedConn) awaitRequest() {
	c.newlines, c.sawText = 0, false
	c.scanning.Store(true)
	c.g.mu.Lock()
	if c.elem != nil && c.inBusy {
		c.g.busy.Remove(c.elem)
		c.elem, c.inBusy = nil, false
	}
	if c.counted && c.elem == nil {
		c.elem = c.g.waiting.PushBack(c)
	}
	c.g.mu.Unlock()
}

// upgraded stops counting c as pending: it was hijacked for a WebSocket.
func (c *guardedConn) upgraded() {
	c.scanning.Store(false)
	c.g.mu.Lock()
	c.g.releaseLocked(c)
	c.g.mu.Unlock()
}

// setOnClose makes the first Close of c call f (once; at once if c is
// closed already): what the connection holds beyond its pending slot
// (WebSocket slots) is freed even if it never reaches its hijack handler.
func (c *guardedConn) setOnClose(f func()) {
	c.g.mu.Lock()
	closed := c.closed
	if !closed {
		c.onClose = f
	}
	c.g.mu.Unlock()
	if closed {
		f()
	}
}

// Close closes the connection and releases its slot, once.
func (c *guardedConn) Close() error {
	c.g.mu.Lock()
	c.g.releaseLocked(c)
	f := c.onClose
	c.onClose, c.closed = nil, true
	c.g.mu.Unlock()
	if f != nil {
		f()
	}
	return c.Conn.Close()
}

// abort closes an evicted connection's socket (already released). For
// TLS the raw socket: a close_notify could wait on a stalled peer.
func (c *guardedConn) abort() {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
		return
	}
	_ = c.Conn.Close()
}

// connStateHook is fasthttp's ConnState hook: a connection that turns
// idle between keep-alive requests waits for headers again.
func connStateHook(c net.Conn, s fasthttp.ConnState) {
	if s != fasthttp.StateIdle {
		return
	}
	if gc := guardedOf(c); gc != nil {
		gc.awaitRequest()
	}
}

// headerReceived is fasthttp's HeaderReceived hook: once the headers are
// in, the body gets bodyReadTimeout (Server.ReadTimeout, the header
// timeout, ran from the request's first byte).
func headerReceived(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	return fasthttp.RequestConfig{ReadTimeout: bodyReadTimeout}
}

// initConnCaps resolves the connection caps against the open-file limit
// and builds the connection guard; New calls it.
func (n *Node) initConnCaps() {
	n.caps = n.cfg.connCaps(openFileLimit())
	n.wsCap = newConnLimiter[struct{}](n.caps.maxConns)
	n.guard = newConnGuard(n.caps.maxPendingPerIP, n.caps.maxPending)
	n.guard.refused = func(c net.Conn, limit string, report bool) {
		n.m.LimitHits.WithLabelValues(limit).Inc()
		if !report {
			return
		}
		if limit == limitPendingPerIP {
			n.audit.record(auditEvent{Event: "limit", Remote: c.RemoteAddr().String(), Code: 429,
				Reason: fmt.Sprintf("max-pending-conns-per-ip: more than %d connections that are not WebSockets; more refusals from this address within %s are only counted", n.caps.maxPendingPerIP, guardLogEvery)})
			return
		}
		n.log.Warn("pending connection cap reached and every pending connection is busy with a request: refusing new connections",
			"max_pending_conns", n.caps.maxPending, "remote", c.RemoteAddr().String())
	}
	n.guard.evicted = func(c net.Conn, report bool) {
		n.m.LimitHits.WithLabelValues(limitPending).Inc()
		if report {
			n.log.Warn("pending connection cap reached: closing the connections that wait longest for their request headers",
				"max_pending_conns", n.caps.maxPending, "closed_remote", c.RemoteAddr().String())
		}
	}
	var lastFilesLog atomic.Int64 // unix nanoseconds
	n.guard.outOfFiles = func(err error, wait time.Duration) {
		n.m.LimitHits.WithLabelValues(limitOpenFiles).Inc()
		now := time.Now()
		if last := lastFilesLog.Load(); now.Sub(time.Unix(0, last)) >= guardLogEvery && lastFilesLog.CompareAndSwap(last, now.UnixNano()) {
			n.log.Error("cannot accept connections: out of file descriptors; retrying (lower --max-conns or --max-pending-conns, or raise the open-file limit)",
				"err", err, "wait", wait, "open_file_limit", n.caps.nofile, "max_conns", n.caps.maxConns, "max_pending_conns", n.caps.maxPending)
		}
	}
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "plait_pending_connections",
		Help: "Accepted connections that are not WebSockets (yet): HTTP requests, idle keep-alive connections, connections sending their headers."},
		func() float64 { return float64(n.guard.pending()) }))
}

// logConnCaps logs the effective connection caps, in one line.
func (n *Node) logConnCaps() {
	capAttr := func(v int) any {
		if v <= 0 {
			return "none"
		}
		return v
	}
	n.log.Info("connection limits", "max_conns", capAttr(n.caps.maxConns), "max_conns_per_ip", capAttr(n.cfg.MaxConnsPerIP),
		"max_pending_conns", capAttr(n.caps.maxPending), "max_pending_conns_per_ip", capAttr(n.caps.maxPendingPerIP),
		"read_header_timeout", n.cfg.ReadHeaderTimeout, "open_file_limit", capAttr(n.caps.nofile))
	if f := n.caps.nofile; f > 0 && (n.caps.maxConns <= 0 || n.caps.maxPending <= 0 || n.caps.maxConns+n.caps.maxPending > f) {
		n.log.Warn("the connection caps allow more connections than the open-file limit: at the limit the node cannot accept connections (health checks included) or open files",
			"open_file_limit", f, "max_conns", capAttr(n.caps.maxConns), "max_pending_conns", capAttr(n.caps.maxPending))
	}
}
