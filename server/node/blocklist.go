package node

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// blockOptions say when a source (the clientKey of an address) is blocked:
// Threshold offenses within Window block it for Duration. Threshold 0
// never blocks; then Window and Duration are unused.
type blockOptions struct {
	Threshold int
	Window    time.Duration
	Duration  time.Duration
}

// offenseSlots is how many slots an offense window is counted in. An
// offense is forgotten between (offenseSlots-1)/offenseSlots of a window
// and a whole window after it; so offenses more than Window apart never
// add up, and memory per source is constant whatever the threshold.
const offenseSlots = 16

// offenses counts one source's recent offenses, by slot.
type offenses struct {
	last  int64 // the slot of the latest offense (slots since blocklist.base)
	count [offenseSlots]uint32
}

// add counts an offense in slot s and returns the offenses of the window
// that ends with s.
func (o *offenses) add(s int64) int {
	if s < o.last { // the clock went back: count it with the latest
		s = o.last
	}
	if s-o.last >= offenseSlots {
		o.count = [offenseSlots]uint32{}
	} else {
		for i := o.last + 1; i <= s; i++ {
			o.count[i%offenseSlots] = 0
		}
	}
	o.last = s
	o.count[s%offenseSlots]++
	n := 0
	for _, c := range o.count {
		n += int(c)
	}
	return n
}

// blocklist blocks the sources of repeated offenses: the Threshold-th
// offense of a source (its clientKey) within Window blocks it for
// Duration, and its HTTP requests are refused until then. The audit log
// reports the offenses (auditor.record). It is safe for concurrent use.
type blocklist struct {
	opts blockOptions
	now  func() time.Time
	base time.Time     // slot 0 of the offense windows
	slot time.Duration // opts.Window / offenseSlots
	max  int           // tracked sources, in each of offenses and blocked

	blockedTotal    prometheus.Counter
	blockedRequests prometheus.Counter

	sweeper  // guards offenses and blocked
	offenses map[netip.Addr]*offenses
	blocked  map[netip.Addr]time.Time // until when
}

// newBlocklist registers its metrics with reg, unless reg is nil. now is
// the clock (time.Now but in tests).
func newBlocklist(opts blockOptions, reg prometheus.Registerer, now func() time.Time) *blocklist {
	b := &blocklist{
		opts: opts,
		now:  now,
		base: now(),
		slot: max(opts.Window/offenseSlots, 1),
		max:  maxTrackedIPs,
		blockedTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_blocked_sources_total",
			Help: "Sources (addresses, IPv6 /64 networks) blocked for repeated offenses (--block-threshold)."}),
		blockedRequests: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_blocked_requests_total",
			Help: "HTTP requests refused because their source was blocked."}),
		offenses: make(map[netip.Addr]*offenses),
		blocked:  make(map[netip.Addr]time.Time),
	}
	b.drop = b.dropExpired
	if reg != nil {
		reg.MustRegister(b.blockedTotal, b.blockedRequests,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "plait_blocked_sources",
				Help: "Sources blocked now."}, func() float64 { return float64(b.blockedNow()) }))
	}
	return b
}

// offense counts an offense of the source remote ("ip:port" or "ip")
// stands for. If that blocks the source it returns the source, the
// offenses counted and when the block ends; else a zero time: blocking is
// off (Threshold 0), remote is no address, or the threshold is not
// reached.
func (b *blocklist) offense(remote string) (k netip.Addr, n int, until time.Time) {
	if b.opts.Threshold <= 0 {
		return k, 0, until
	}
	k, ok := sourceKey(remote)
	if !ok {
		return k, 0, until
	}
	n, until = b.offend(k)
	if !until.IsZero() {
		b.blockedTotal.Inc()
	}
	return k, n, until
}

// offend counts an offense of k. If that blocks k it returns the offenses
// counted and when the block ends, else a zero time.
func (b *blocklist) offend(k netip.Addr) (int, time.Time) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if until, ok := b.blocked[k]; ok && now.Before(until) {
		return 0, time.Time{} // already blocked: the block is not extended
	}
	o := b.offenses[k]
	if o == nil {
		makeRoom(&b.sweeper, b.offenses, b.max, now)
		o = &offenses{}
		b.offenses[k] = o
	}
	n := o.add(int64(now.Sub(b.base) / b.slot))
	if n < b.opts.Threshold {
		return 0, time.Time{}
	}
	delete(b.offenses, k) // after the block, the source starts afresh
	if len(b.blocked) >= b.max {
		b.evictBlockLocked(now)
	}
	until := now.Add(b.opts.Duration)
	b.blocked[k] = until
	return n, until
}

// evictBlockLocked makes room in a full blocked map: it forgets the
// expired blocks, or else the block that ends first.
func (b *blocklist) evictBlockLocked(now time.Time) {
	var first netip.Addr
	var firstUntil time.Time
	for k, until := range b.blocked {
		if !now.Before(until) {
			delete(b.blocked, k)
		} else if firstUntil.IsZero() || until.Before(firstUntil) {
			first, firstUntil = k, until
		}
	}
	if len(b.blocked) >= b.max {
		delete(b.blocked, first)
	}
}

// blockedFor returns how long ip's source stays blocked; 0 if it is not.
func (b *blocklist) blockedFor(ip netip.Addr) time.Duration {
	if b.opts.Threshold <= 0 {
		return 0
	}
	k := clientKey(ip.AsSlice())
	now := b.now()
	b.mu.Lock()
	until, ok := b.blocked[k]
	b.mu.Unlock()
	if !ok || !now.Before(until) {
		return 0
	}
	return until.Sub(now)
}

// blockedNow counts the sources blocked now (plait_blocked_sources).
func (b *blocklist) blockedNow() int {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, until := range b.blocked {
		if now.Before(until) {
			n++
		}
	}
	return n
}

// middleware refuses every request of a blocked source with 429 and
// Retry-After, but the health checks and /metrics: a blocked load
// balancer or scraper would take the node out. Refused requests are
// counted, not logged: a blocked source cannot flood the audit log.
func (b *blocklist) middleware(c *fiber.Ctx) error {
	if b.opts.Threshold <= 0 {
		return c.Next()
	}
	switch c.Path() {
	case "/healthz", "/readyz", "/metrics":
		return c.Next()
	}
	ip := clientOf(c).ip
	if !ip.IsValid() {
		return c.Next()
	}
	d := b.blockedFor(ip)
	if d <= 0 {
		return c.Next()
	}
	b.blockedRequests.Inc()
	secs := max(1, int(math.Ceil(d.Seconds())))
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
	return c.Status(fiber.StatusTooManyRequests).JSON(fiber.Map{
		"error": fmt.Sprintf("this address is blocked for repeated failures or malformed input; retry in %d s", secs)})
}

// dropExpired forgets the offense windows that hold no offense any more
// and the blocks that ended.
func (b *blocklist) dropExpired(now time.Time) {
	s := int64(now.Sub(b.base) / b.slot)
	for k, o := range b.offenses {
		if s-o.last >= offenseSlots {
			delete(b.offenses, k)
		}
	}
	for k, until := range b.blocked {
		if !now.Before(until) {
			delete(b.blocked, k)
		}
	}
}

// tracked returns how many sources have offenses counted and how many are
// (or were, until the next sweep) blocked.
func (b *blocklist) tracked() (offending, blocked int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.offenses), len(b.blocked)
}

// sweepEvery sweeps every d until ctx is done.
func (b *blocklist) sweepEvery(ctx context.Context, d time.Duration) {
	if b.opts.Threshold <= 0 {
		return
	}
	every(ctx, d, func(time.Time) { b.sweep(b.now()) })
}

// sourceKey is the source that remote ("ip:port" or "ip") counts under:
// its clientKey. False if remote is no address.
func sourceKey(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	k := clientKey(ip.AsSlice())
	return k, k.IsValid()
}
