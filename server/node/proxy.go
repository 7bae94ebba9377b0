package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// Trusted proxies. Behind a load balancer every connection comes from the
// balancer, so the node needs to be told which peers may name the client
// they forward (--trusted-proxies): from those, the client address is
// taken from the PROXY protocol header they open the connection with, or
// from X-Forwarded-For or Forwarded (--client-ip-header, the rightmost
// address that is not itself a trusted proxy). From any other peer those
// are ignored. Every per-address limit, the blocklist, the audit log and
// the logs then see the client, not the proxy.

// Values of --client-ip-header.
const (
	clientIPHeaderXFF       = "x-forwarded-for"
	clientIPHeaderForwarded = "forwarded"
	clientIPHeaderNone      = "none"
)

// maxForwardedHops bounds how many addresses of a forwarding header are
// looked at, from the right: no chain of trusted proxies is longer.
const maxForwardedHops = 32

// trustedNets is the set of networks whose peers are trusted proxies.
type trustedNets []netip.Prefix

// parseTrustedNets parses a comma-separated list of CIDRs or addresses
// (an address is a /32 or /128).
func parseTrustedNets(s string) (trustedNets, error) {
	var nets trustedNets
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(f, "/") {
			var err error
			if p, err = netip.ParsePrefix(f); err != nil {
				return nil, fmt.Errorf("trusted-proxies: %q is not a CIDR: %w", f, err)
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("trusted-proxies: %q is neither a CIDR nor an address: %w", f, err)
			}
			if a.Zone() != "" {
				return nil, fmt.Errorf("trusted-proxies: %q has a zone", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		nets = append(nets, p.Masked())
	}
	return nets, nil
}

// contains reports whether a is in a trusted network.
func (t trustedNets) contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// String lists the networks, comma-separated.
func (t trustedNets) String() string {
	s := make([]string, len(t))
	for i, p := range t {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// addrPortOf returns a's address and port; false if a is no IP address.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.Addr().IsValid()
	}
	return netip.AddrPort{}, false
}

// proxyListener hands the connections of trusted peers over as proxyConns,
// which read a PROXY header if the peer sends one. It sits under TLS: the
// header comes before the handshake.
type proxyListener struct {
	net.Listener
	trusted trustedNets
}

// wrapProxyListener returns ln with PROXY protocol support for the
// trusted networks; ln itself if there are none.
func wrapProxyListener(ln net.Listener, trusted trustedNets) net.Listener {
	if len(trusted) == 0 {
		return ln
	}
	return &proxyListener{Listener: ln, trusted: trusted}
}

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if ap, ok := addrPortOf(c.RemoteAddr()); ok && l.trusted.contains(ap.Addr()) {
		return &proxyConn{Conn: c}, nil
	}
	return c, nil
}

// proxyConn is a connection from a trusted proxy. Its first Read reads a
// PROXY header, if the connection starts with one (under the read deadline
// the server set for the request), and from then on RemoteAddr is the
// client the header names. A connection that starts with anything else is
// passed through unchanged; one with a malformed header fails its Read
// (and is closed).
type proxyConn struct {
	net.Conn
	// Read's goroutine only:
	done    bool
	pending []byte // bytes read past the header
	// client is the address the header named; nil before (or without) it.
	client atomic.Pointer[net.TCPAddr]
	// resolved is set once the header was read or found absent.
	resolved atomic.Bool
}

func (c *proxyConn) Read(b []byte) (int, error) {
	if !c.done {
		if err := c.readHeader(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(b)
}

// readHeader reads until the connection's first bytes are known to be a
// PROXY header (parsed and consumed) or not (kept for Read).
func (c *proxyConn) readHeader() error {
	buf := make([]byte, 0, 256)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), proxyHeaderMax+256-cap(buf)))...)[:len(buf)]
		}
		n, err := c.Conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		h, hn, perr := parseProxyHeader(buf)
		switch {
		case perr == nil:
			if h.Src.IsValid() {
				c.client.Store(net.TCPAddrFromAddrPort(h.Src))
			}
			c.finish(buf[hn:])
			return nil
		case errors.Is(perr, errNotProxy):
			c.finish(buf)
			return nil
		case errors.Is(perr, errProxyNeedMore):
			if err != nil {
				return err
			}
			if len(buf) >= proxyHeaderMax {
				return fmt.Errorf("%w: longer than %d bytes", errProxyMalformed, proxyHeaderMax)
			}
		default:
			return perr
		}
	}
}

func (c *proxyConn) finish(rest []byte) {
	c.done = true
	if len(rest) > 0 {
		c.pending = rest
	}
	c.resolved.Store(true)
}

// RemoteAddr is the client the PROXY header named, else the peer's address.
func (c *proxyConn) RemoteAddr() net.Addr {
	if a := c.client.Load(); a != nil {
		return a
	}
	return c.Conn.RemoteAddr()
}

// proxyConnOf returns the proxyConn under c (through TLS); nil if none.
func proxyConnOf(c net.Conn) *proxyConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	pc, _ := c.(*proxyConn)
	return pc
}

// clientAddr is the client of an HTTP request: its address and the
// "ip:port" or "ip" the audit log and the logs show.
type clientAddr struct {
	ip     netip.Addr
	remote string
}

// resolveClient returns the client of a request whose connection comes
// from peer (already the PROXY header's client if there was one). From a
// trusted peer, the forwarding header named by mode is walked from the
// right, past trusted proxies, to the first address that is not one; an
// entry that is no address ends the walk at the proxy that added it. If
// every entry is trusted the leftmost is the client. From any other peer
// the header is ignored.
func resolveClient(peer net.Addr, hdr *fasthttp.RequestHeader, trusted trustedNets, mode string) clientAddr {
	ap, ok := addrPortOf(peer)
	if !ok {
		return clientAddr{remote: peer.String()}
	}
	c := clientAddr{ip: ap.Addr(), remote: ap.String()}
	if mode == clientIPHeaderNone || !trusted.contains(ap.Addr()) {
		return c
	}
	name, forwarded := "X-Forwarded-For", false
	if mode == clientIPHeaderForwarded {
		name, forwarded = "Forwarded", true
	}
	var entries []string
	for _, v := range hdr.PeekAll(name) { // every header line, in order
		entries = append(entries, strings.Split(string(v), ",")...)
	}
	for i := len(entries) - 1; i >= 0 && i >= len(entries)-maxForwardedHops; i-- {
		a, port, ok := parseForwardedEntry(entries[i], forwarded)
		if !ok {
			return c
		}
		c = clientAddr{ip: a, remote: a.String()}
		if port != 0 {
			c.remote = netip.AddrPortFrom(a, port).String()
		}
		if !trusted.contains(a) {
			return c
		}
	}
	return c
}

// parseForwardedEntry parses one comma-separated entry of X-Forwarded-For
// ("ip", "ip:port", "[ipv6]:port") or of Forwarded (its for= parameter).
func parseForwardedEntry(e string, forwarded bool) (netip.Addr, uint16, bool) {
	e = strings.TrimSpace(e)
	if forwarded {
		v, found := "", false
		for _, pair := range strings.Split(e, ";") {
			k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "for") {
				v, found = strings.Trim(strings.TrimSpace(val), `"`), true
				break
			}
		}
		if !found {
			return netip.Addr{}, 0, false
		}
		e = v
	}
	if a, err := netip.ParseAddr(e); err == nil && a.Zone() == "" {
		return a.Unmap(), 0, true
	}
	if ap, err := netip.ParseAddrPort(e); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), ap.Port(), true
	}
	if strings.HasPrefix(e, "[") && strings.HasSuffix(e, "]") { // Forwarded's "[v6]" without a port
		if a, err := netip.ParseAddr(e[1 : len(e)-1]); err == nil && a.Is6() && a.Zone() == "" {
			return a.Unmap(), 0, true
		}
	}
	return netip.Addr{}, 0, false
}

// clientMiddleware resolves each request's client once (resolveClient)
// for every later handler: see clientOf.
func (n *Node) clientMiddleware(c *fiber.Ctx) error {
	ca := resolveClient(c.Context().RemoteAddr(), &c.Request().Header, n.cfg.TrustedProxies, n.cfg.ClientIPHeader)
	c.Locals(localsClient, ca)
	return c.Next()
}

const localsClient = "client"

// clientOf returns the request's client as clientMiddleware resolved it;
// without that middleware (unit tests of one handler) the connection's peer.
func clientOf(c *fiber.Ctx) clientAddr {
	if ca, ok := c.Locals(localsClient).(clientAddr); ok {
		return ca
	}
	ap, ok := addrPortOf(c.Context().RemoteAddr())
	if !ok {
		return clientAddr{remote: c.Context().RemoteAddr().String()}
	}
	return clientAddr{ip: ap.Addr(), remote: ap.String()}
}
