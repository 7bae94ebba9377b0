package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"

	"github.com/plaithub/plait/hub"
)

// Labels of plait_limit_hits_total for the node's own limits (the hub
// counts hub.LimitMessages).
const (
	limitConnsPerIP   = "connections_per_ip"
	limitConnsPerUser = "connections_per_user"
	limitHTTPRate     = "http_rate"
	limitPendingPerIP = "pending_conns_per_ip" // --max-pending-conns-per-ip
	limitPending      = "pending_conns"        // --max-pending-conns
	limitConns        = "connections"          // --max-conns
	limitOpenFiles    = "open_files"           // accept found no file descriptor
)

// maxTrackedIPs bounds the per-IP HTTP rate limiter's memory (about 150
// bytes an address). Addresses whose bucket has refilled are forgotten
// first; beyond the bound an arbitrary address is forgotten, which only
// resets its bucket.
const maxTrackedIPs = 1 << 16

// validateLimits checks the limit settings; Validate calls it.
func (c *Config) validateLimits() error {
	for _, r := range []struct {
		rate, burstName string
		perSec          float64
		burst           int
	}{
		{"message-rate", "message-burst", c.MessageRate, c.MessageBurst},
		{"http-rate-per-ip", "http-burst-per-ip", c.HTTPRatePerIP, c.HTTPBurstPerIP},
		{"user-message-rate", "user-message-burst", c.UserMessageRate, c.UserMessageBurst},
	} {
		if r.perSec < 0 || math.IsNaN(r.perSec) || math.IsInf(r.perSec, 0) {
			return fmt.Errorf("%s %v must be a number >= 0 (0 = no limit)", r.rate, r.perSec)
		}
		if r.perSec > 0 && r.burst < 1 {
			return fmt.Errorf("%s %d must be at least 1", r.burstName, r.burst)
		}
	}
	for _, b := range []struct {
		name    string
		v       int
		zeroOff bool // 0 means no limit
		atLeast int
	}{
		{"max-doc-bytes", c.MaxDocBytes, true, 1 << 10},
		{"max-inflated-bytes", c.MaxInflatedBytes, false, 1 << 10},
		{"max-send-message-bytes", c.MaxSendBytes, false, 1 << 10},
		{"max-docs-per-conn", c.MaxDocsPerConn, true, 1},
		{"max-open-docs", c.MaxOpenDocs, true, 1},
		{"max-conn-bytes", c.MaxConnBytes, false, 1 << 10},
		{"max-inflight-bytes", c.MaxInflightBytes, false, 1 << 10},
		{"max-state-bytes", c.MaxStateBytes, false, 1 << 10},
		{"max-ephemeral-bytes", c.MaxEphemeralBytes, false, 1},
		{"ephemeral-relay-bytes", c.EphemeralRelayBytes, false, 1},
		{"max-compact-bytes", c.MaxCompactBytes, false, 1},
	} {
		if b.zeroOff && b.v == 0 {
			continue
		}
		if b.v < b.atLeast {
			off := ""
			if b.zeroOff {
				off = " (or 0 = no limit)"
			}
			return fmt.Errorf("%s %d must be at least %d%s", b.name, b.v, b.atLeast, off)
		}
	}
	if c.MaxSendBytes > c.MaxQueueBytes {
		return fmt.Errorf("max-send-message-bytes %d must not exceed max-queue-bytes %d (a message that does not fit the queue would close every slow reader)", c.MaxSendBytes, c.MaxQueueBytes)
	}
	if err := c.validateConnCaps(); err != nil {
		return err
	}
	switch {
	case c.MaxConnsPerIP < 0:
		return fmt.Errorf("max-conns-per-ip %d must be >= 0 (0 = no limit)", c.MaxConnsPerIP)
	case c.MaxConnsPerUser < 0:
		return fmt.Errorf("max-conns-per-user %d must be >= 0 (0 = no limit)", c.MaxConnsPerUser)
	case c.BlockThreshold < 0:
		return fmt.Errorf("block-threshold %d must be >= 0 (0 = never block)", c.BlockThreshold)
	case c.BlockThreshold > 0 && (c.BlockWindow <= 0 || c.BlockDuration <= 0):
		return errors.New("block-window and block-duration must be positive")
	}
	return nil
}

// offAsNegative maps a node setting whose 0 means "no limit" to the hub's
// convention (0 = the default, negative = no limit).
func offAsNegative(v int) int {
	if v == 0 {
		return -1
	}
	return v
}

// hubMessageRate maps the message-rate setting (0 = off) to
// hub.Options.MessageRate (0 = the hub's default, negative = off).
func (c *Config) hubMessageRate() float64 {
	if c.MessageRate == 0 {
		return -1
	}
	return c.MessageRate
}

// clientKey is the address a client is counted under by the per-IP
// limits: its IPv4 address, or the /64 network of its IPv6 address (one
// host usually holds a whole /64).
func clientKey(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// connLimiter caps the concurrent WebSocket connections per client address
// or per user.
type connLimiter[K comparable] struct {
	max int // 0: no limit
	mu  sync.Mutex
	n   map[K]int
}

func newConnLimiter[K comparable](max int) *connLimiter[K] {
	return &connLimiter[K]{max: max, n: make(map[K]int)}
}

// acquire takes a connection slot for k; false if k has max already.
func (l *connLimiter[K]) acquire(k K) bool {
	if l.max <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[k] >= l.max {
		return false
	}
	l.n[k]++
	return true
}

// release gives back a slot taken by acquire.
func (l *connLimiter[K]) release(k K) {
	if l.max <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[k] <= 1 {
		delete(l.n, k)
	} else {
		l.n[k]--
	}
}

// httpLimiter is a token bucket per client address for HTTP requests.
type httpLimiter struct {
	rate  rate.Limit // 0: no limit
	burst int
	max   int // tracked addresses

	sweeper // guards ips
	ips     map[netip.Addr]*rate.Limiter
}

func newHTTPLimiter(perSec float64, burst int) *httpLimiter {
	l := &httpLimiter{rate: rate.Limit(perSec), burst: burst, max: maxTrackedIPs, ips: make(map[netip.Addr]*rate.Limiter)}
	l.drop = l.dropFull
	return l
}

// allow takes a token of k's bucket at now. If there is none it returns
// false and how long until there is one.
func (l *httpLimiter) allow(k netip.Addr, now time.Time) (bool, time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.ips[k]
	if lim == nil {
		makeRoom(&l.sweeper, l.ips, l.max, now)
		lim = rate.NewLimiter(l.rate, l.burst)
		l.ips[k] = lim
	}
	if lim.AllowN(now, 1) {
		return true, 0
	}
	wait := time.Duration((1 - lim.TokensAt(now)) / float64(l.rate) * float64(time.Second))
	return false, wait
}

// sweeper is what the per-source maps share (the HTTP limiter's buckets,
// the blocklist's offenses and blocks): their lock, and a sweep that
// forgets the entries that no longer matter, run every minute and, at
// most once a second, when a map is full (makeRoom).
type sweeper struct {
	mu        sync.Mutex
	lastSweep time.Time
	drop      func(now time.Time) // under mu: forgets what no longer matters
}

// sweep forgets what no longer matters at now.
func (s *sweeper) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
}

func (s *sweeper) sweepLocked(now time.Time) {
	s.lastSweep = now
	s.drop(now)
}

// makeRoom bounds m, under s.mu, before a key is added: a full m is swept
// (at most once a second) and, if still full, loses arbitrary keys.
func makeRoom[K comparable, V any](s *sweeper, m map[K]V, max int, now time.Time) {
	if len(m) < max {
		return
	}
	if now.Sub(s.lastSweep) >= time.Second {
		s.sweepLocked(now)
	}
	forgetArbitrary(m, max)
}

// forgetArbitrary deletes arbitrary keys of m until it holds fewer than
// max: the last resort of the per-address maps' memory bound.
func forgetArbitrary[K comparable, V any](m map[K]V, max int) {
	for k := range m {
		if len(m) < max {
			return
		}
		delete(m, k)
	}
}

// dropFull forgets the addresses whose bucket is full again: a new
// bucket would be the same.
func (l *httpLimiter) dropFull(now time.Time) {
	for k, lim := range l.ips {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.ips, k)
		}
	}
}

func (l *httpLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ips)
}

// sweepEvery sweeps every d until ctx is done.
func (l *httpLimiter) sweepEvery(ctx context.Context, d time.Duration) {
	if l.rate <= 0 {
		return
	}
	every(ctx, d, l.sweep)
}

// every calls f with the time of each tick, every d until ctx is done.
func every(ctx context.Context, d time.Duration, f func(tick time.Time)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// limitHTTP is the middleware of the per-IP HTTP rate limit. Every request
// counts (the WebSocket upgrade too) except GET /metrics, so that scrapers
// are never refused.
func (n *Node) limitHTTP(c *fiber.Ctx) error {
	if n.httpLim.rate <= 0 || c.Path() == "/metrics" {
		return c.Next()
	}
	ok, wait := n.httpLim.allow(clientKey(clientOf(c).ip.AsSlice()), time.Now())
	if ok {
		return c.Next()
	}
	n.m.LimitHits.WithLabelValues(limitHTTPRate).Inc()
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
	return fiber.NewError(fiber.StatusTooManyRequests, fmt.Sprintf("too many requests from this address (more than %g/s, burst %d: --http-rate-per-ip)", float64(n.httpLim.rate), n.httpLim.burst))
}

// registerLimitMetrics shows the node's limits in /metrics from the start.
func registerLimitMetrics(m *hub.Metrics) {
	m.LimitHits.WithLabelValues(limitConnsPerIP)
	m.LimitHits.WithLabelValues(limitConnsPerUser)
	m.LimitHits.WithLabelValues(hub.LimitUserMessages)
	m.LimitHits.WithLabelValues(limitHTTPRate)
	m.LimitHits.WithLabelValues(limitPendingPerIP)
	m.LimitHits.WithLabelValues(limitPending)
	m.LimitHits.WithLabelValues(limitConns)
	m.LimitHits.WithLabelValues(limitOpenFiles)
}

// validateConnCaps checks the connection caps (validateLimits calls it).
func (c *Config) validateConnCaps() error {
	switch {
	case c.MaxConns < -1:
		return fmt.Errorf("max-conns %d must be >= -1 (0 = automatic from the open-file limit, -1 = no limit)", c.MaxConns)
	case c.MaxPendingConns < -1:
		return fmt.Errorf("max-pending-conns %d must be >= -1 (0 = automatic from the open-file limit, -1 = no limit)", c.MaxPendingConns)
	case c.MaxPendingConnsPerIP < 0:
		return fmt.Errorf("max-pending-conns-per-ip %d must be >= 0 (0 = no limit)", c.MaxPendingConnsPerIP)
	case c.ReadHeaderTimeout <= 0:
		return fmt.Errorf("read-header-timeout %v must be positive", c.ReadHeaderTimeout)
	}
	return nil
}

// The automatic connection caps split the process's open-file limit L
// (the soft RLIMIT_NOFILE, which Go raises to the hard limit at start):
//
//	reserve           = min(512, L/8)             store, Redis pool, logs, listener
//	max-pending-conns = clamp(L/8, 32, 2048)      HTTP, not yet upgraded connections
//	max-conns         = max(64, L - reserve - max-pending-conns)
//
// With L = 20,000: 2,048 pending and 17,440 WebSockets. An explicit
// max-pending-conns (> 0) takes the place of the automatic one in the
// max-conns rule.
const (
	fdReserveMax   = 512
	autoPendMin    = 32
	autoPendMax    = 2048
	autoConnsMin   = 64
	maxFileLimit   = 1 << 24 // RLIM_INFINITY and the like count as this
	unknownFiles   = 0
	retryAfterFull = "5" // seconds, on a 503 of --max-conns
)

// connCaps are a node's effective connection caps; 0 = no limit.
type connCaps struct {
	nofile          int // the open-file limit they were derived from; 0: unknown
	maxConns        int // WebSockets on the node
	maxPending      int // connections not (yet) upgraded, on the node
	maxPendingPerIP int // the same per client address
}

// connCaps resolves the connection settings against the open-file limit
// nofile (0: unknown; then automatic max-conns is no limit and automatic
// max-pending-conns is 2048).
func (c *Config) connCaps(nofile int) connCaps {
	nofile = min(nofile, maxFileLimit)
	autoPending := autoPendMax
	if nofile > 0 {
		autoPending = min(max(nofile/8, autoPendMin), autoPendMax)
	}
	caps := connCaps{nofile: nofile, maxPendingPerIP: c.MaxPendingConnsPerIP}
	budgetPending := autoPending
	switch {
	case c.MaxPendingConns > 0:
		caps.maxPending, budgetPending = c.MaxPendingConns, c.MaxPendingConns
	case c.MaxPendingConns == 0:
		caps.maxPending = autoPending
	}
	switch {
	case c.MaxConns > 0:
		caps.maxConns = c.MaxConns
	case c.MaxConns == 0 && nofile > 0:
		caps.maxConns = max(autoConnsMin, nofile-min(fdReserveMax, nofile/8)-budgetPending)
	}
	return caps
}

// openFileLimit returns the process's soft open-file limit; 0 if unknown.
func openFileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return unknownFiles
	}
	return int(min(r.Cur, maxFileLimit))
}

// userRates are the message limiters shared by each user's WebSockets on
// this node (--user-message-rate, --user-message-burst): one per user
// while the user has a socket here. Safe for concurrent use.
type userRates struct {
	perSec float64 // <= 0: no limit
	burst  int

	mu sync.Mutex
	m  map[string]*userRate
}

type userRate struct {
	lim  *rate.Limiter
	refs int
}

func newUserRates(perSec float64, burst int) *userRates {
	return &userRates{perSec: perSec, burst: burst, m: make(map[string]*userRate)}
}

// acquire returns the message limiter shared by user's connections (nil
// without a limit); release it with release.
func (r *userRates) acquire(user string) *rate.Limiter {
	if r.perSec <= 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.m[user]
	if u == nil {
		u = &userRate{lim: rate.NewLimiter(rate.Limit(r.perSec), r.burst)}
		r.m[user] = u
	}
	u.refs++
	return u.lim
}

// release drops one connection's hold on user's limiter.
func (r *userRates) release(user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u := r.m[user]; u != nil {
		if u.refs--; u.refs <= 0 {
			delete(r.m, user)
		}
	}
}
