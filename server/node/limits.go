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

	mu        sync.Mutex
	ips       map[netip.Addr]*rate.Limiter
	lastSweep time.Time
}

func newHTTPLimiter(perSec float64, burst int) *httpLimiter {
	return &httpLimiter{rate: rate.Limit(perSec), burst: burst, max: maxTrackedIPs, ips: make(map[netip.Addr]*rate.Limiter)}
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
		if len(l.ips) >= l.max {
			if now.Sub(l.lastSweep) >= time.Second {
				l.sweepLocked(now)
			}
			forgetArbitrary(l.ips, l.max) // still full: forget an arbitrary address
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.ips[k] = lim
	}
	if lim.AllowN(now, 1) {
		return true, 0
	}
	wait := time.Duration((1 - lim.TokensAt(now)) / float64(l.rate) * float64(time.Second))
	return false, wait
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

// sweep forgets the addresses whose bucket is full again: a new bucket
// would be the same.
func (l *httpLimiter) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
}

func (l *httpLimiter) sweepLocked(now time.Time) {
	l.lastSweep = now
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
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			l.sweep(now)
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
	ok, wait := n.httpLim.allow(clientKey(c.Context().RemoteIP()), time.Now())
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
}
