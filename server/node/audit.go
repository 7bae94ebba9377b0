package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plaithub/plait/hub"
)

// blockOptions say when a source (the clientKey of an address) is blocked:
// Threshold offenses within Window block it for Duration. Threshold 0
// never blocks; then Window and Duration are unused.
type blockOptions struct {
	Threshold int
	Window    time.Duration
	Duration  time.Duration
}

// auditEvent is one line of the audit log. Empty fields are left out of
// the line.
type auditEvent struct {
	// Event names what happened: "login", "login_failed", "token_refresh",
	// "token_reuse", "token_invalid", "logout", "revoked", "denied",
	// "read_only", "rate_limited", "malformed", "invalid_sync",
	// "join_timeout", "unsupported_version", "limit", "origin_rejected",
	// "blocked", "access_change", ... It labels
	// plait_audit_events_total, so it must come from a fixed set.
	Event     string
	RequestID string
	ConnID    uint64
	Remote    string // "ip:port" or "ip"; the source that offenses count for
	User      string
	Peer      string
	Doc       string
	Code      int    // the close code or HTTP status
	Reason    string // free text; anything that looks like a token is redacted
	// Offense counts the event toward blocking its source: set it for what
	// an honest client does not do (malformed input, bad credentials,
	// exceeding a rate), not for what a stale one may (a revoked permission).
	Offense bool
}

// Lengths at which the audit log cuts fields: they may carry what a client
// sent, and a log line should stay a line.
const (
	maxAuditReason = 1024
	maxAuditField  = 256
)

// offenseSlots is how many slots an offense window is counted in. An
// offense is forgotten between (offenseSlots-1)/offenseSlots of a window
// and a whole window after it; so offenses more than Window apart never
// add up, and memory per source is constant whatever the threshold.
const offenseSlots = 16

// offenses counts one source's recent offenses, by slot.
type offenses struct {
	last  int64 // the slot of the latest offense (slots since auditor.base)
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

// auditor writes the security audit log and blocks the sources of
// repeated offenses. It is safe for concurrent use.
type auditor struct {
	log  *slog.Logger
	opts blockOptions
	now  func() time.Time
	base time.Time     // slot 0 of the offense windows
	slot time.Duration // opts.Window / offenseSlots
	max  int           // tracked sources, in each of offenses and blocked

	events          *prometheus.CounterVec
	blockedTotal    prometheus.Counter
	blockedRequests prometheus.Counter

	mu        sync.Mutex
	offenses  map[netip.Addr]*offenses
	blocked   map[netip.Addr]time.Time // until when
	lastSweep time.Time
}

// newAuditor writes JSON lines to w and registers its metrics with reg,
// unless reg is nil. now is the clock (time.Now but in tests).
func newAuditor(w io.Writer, opts blockOptions, reg prometheus.Registerer, now func() time.Time) *auditor {
	a := &auditor{
		log:  slog.New(slog.NewJSONHandler(w, nil)),
		opts: opts,
		now:  now,
		base: now(),
		slot: max(opts.Window/offenseSlots, 1),
		max:  maxTrackedIPs,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_audit_events_total",
			Help: "Events written to the security audit log, by event."}, []string{"event"}),
		blockedTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_blocked_sources_total",
			Help: "Sources (addresses, IPv6 /64 networks) blocked for repeated offenses (--block-threshold)."}),
		blockedRequests: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_blocked_requests_total",
			Help: "HTTP requests refused because their source was blocked."}),
		offenses: make(map[netip.Addr]*offenses),
		blocked:  make(map[netip.Addr]time.Time),
	}
	if reg != nil {
		reg.MustRegister(a.events, a.blockedTotal, a.blockedRequests,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "plait_blocked_sources",
				Help: "Sources blocked now."}, func() float64 { return float64(a.blockedNow()) }))
	}
	return a
}

// record writes ev as one JSON line and, if it is an offense, counts it
// for its source: the Threshold-th offense within Window blocks the
// source for Duration, which is logged as a "blocked" event. Events whose
// Remote is no address are logged but not counted.
func (a *auditor) record(ev auditEvent) {
	a.write(ev)
	if !ev.Offense || a.opts.Threshold <= 0 {
		return
	}
	k, ok := sourceKey(ev.Remote)
	if !ok {
		return
	}
	n, until := a.offend(k)
	if until.IsZero() {
		return
	}
	a.blockedTotal.Inc()
	a.write(auditEvent{Event: "blocked", RequestID: ev.RequestID, ConnID: ev.ConnID, Remote: ev.Remote, User: ev.User,
		Reason: fmt.Sprintf("%d offenses within %s, the last %s", n, a.opts.Window, ev.Event)},
		slog.String("source", k.String()), slog.String("duration", a.opts.Duration.String()),
		slog.Time("until", until))
}

// offend counts an offense of k. If that blocks k it returns the offenses
// counted and when the block ends, else a zero time.
func (a *auditor) offend(k netip.Addr) (int, time.Time) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if until, ok := a.blocked[k]; ok && now.Before(until) {
		return 0, time.Time{} // already blocked: the block is not extended
	}
	o := a.offenses[k]
	if o == nil {
		if len(a.offenses) >= a.max {
			if now.Sub(a.lastSweep) >= time.Second {
				a.sweepLocked(now)
			}
			forgetArbitrary(a.offenses, a.max) // still full: forget an arbitrary source
		}
		o = &offenses{}
		a.offenses[k] = o
	}
	n := o.add(int64(now.Sub(a.base) / a.slot))
	if n < a.opts.Threshold {
		return 0, time.Time{}
	}
	delete(a.offenses, k) // after the block, the source starts afresh
	if len(a.blocked) >= a.max {
		a.evictBlockLocked(now)
	}
	until := now.Add(a.opts.Duration)
	a.blocked[k] = until
	return n, until
}

// evictBlockLocked makes room in a full blocked map: it forgets the
// expired blocks, or else the block that ends first.
func (a *auditor) evictBlockLocked(now time.Time) {
	var first netip.Addr
	var firstUntil time.Time
	for k, until := range a.blocked {
		if !now.Before(until) {
			delete(a.blocked, k)
		} else if firstUntil.IsZero() || until.Before(firstUntil) {
			first, firstUntil = k, until
		}
	}
	if len(a.blocked) >= a.max {
		delete(a.blocked, first)
	}
}

// write logs ev, with extra attributes, and counts it.
func (a *auditor) write(ev auditEvent, extra ...slog.Attr) {
	attrs := make([]slog.Attr, 0, 9+len(extra))
	str := func(key, v string, n int) {
		if v != "" {
			attrs = append(attrs, slog.String(key, clip(v, n)))
		}
	}
	str("event", ev.Event, maxAuditField)
	str("request_id", ev.RequestID, maxAuditField)
	if ev.ConnID != 0 {
		attrs = append(attrs, slog.Uint64("conn", ev.ConnID))
	}
	str("remote", ev.Remote, maxAuditField)
	str("user", ev.User, maxAuditField)
	str("peer", ev.Peer, maxAuditField)
	str("doc", ev.Doc, maxAuditField)
	if ev.Code != 0 {
		attrs = append(attrs, slog.Int("code", ev.Code))
	}
	str("reason", redact(ev.Reason), maxAuditReason)
	attrs = append(attrs, extra...)
	a.log.LogAttrs(context.Background(), slog.LevelInfo, "audit", attrs...)
	a.events.WithLabelValues(ev.Event).Inc()
}

// hubOffenses are the hub's events that count toward blocking. Denied and
// read-only are not: an honest client whose permission was just taken
// away does them.
var hubOffenses = map[hub.SecurityEventKind]bool{
	hub.EventMalformed:          true,
	hub.EventInvalidSync:        true,
	hub.EventUnsupportedVersion: true,
	hub.EventJoinTimeout:        true,
	hub.EventRateLimited:        true,
}

// hubEvent records an event of the hub (hub.Options.OnSecurityEvent).
func (a *auditor) hubEvent(ev hub.SecurityEvent) {
	e := auditEvent{
		Event:     string(ev.Kind),
		RequestID: ev.Conn.RequestID,
		ConnID:    ev.ConnID,
		Remote:    ev.Conn.RemoteAddr,
		User:      ev.Conn.Identity.User,
		Peer:      ev.Peer,
		Doc:       string(ev.Doc),
		Code:      int(ev.Code),
		Offense:   hubOffenses[ev.Kind],
	}
	if ev.Err != nil {
		e.Reason = ev.Err.Error()
	}
	a.record(e)
}

// blockedFor returns how long ip's source stays blocked; 0 if it is not.
func (a *auditor) blockedFor(ip netip.Addr) time.Duration {
	if a.opts.Threshold <= 0 {
		return 0
	}
	k := clientKey(ip.AsSlice())
	now := a.now()
	a.mu.Lock()
	until, ok := a.blocked[k]
	a.mu.Unlock()
	if !ok || !now.Before(until) {
		return 0
	}
	return until.Sub(now)
}

// blockedNow counts the sources blocked now (plait_blocked_sources).
func (a *auditor) blockedNow() int {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, until := range a.blocked {
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
func (a *auditor) middleware(c *fiber.Ctx) error {
	if a.opts.Threshold <= 0 {
		return c.Next()
	}
	switch c.Path() {
	case "/healthz", "/readyz", "/metrics":
		return c.Next()
	}
	ip, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok {
		return c.Next()
	}
	d := a.blockedFor(ip)
	if d <= 0 {
		return c.Next()
	}
	a.blockedRequests.Inc()
	secs := max(1, int(math.Ceil(d.Seconds())))
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
	return c.Status(fiber.StatusTooManyRequests).JSON(fiber.Map{
		"error": fmt.Sprintf("this address is blocked for repeated failures or malformed input; retry in %d s", secs)})
}

// sweep forgets the offense windows that hold no offense any more and
// the blocks that ended.
func (a *auditor) sweep(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweepLocked(now)
}

func (a *auditor) sweepLocked(now time.Time) {
	a.lastSweep = now
	s := int64(now.Sub(a.base) / a.slot)
	for k, o := range a.offenses {
		if s-o.last >= offenseSlots {
			delete(a.offenses, k)
		}
	}
	for k, until := range a.blocked {
		if !now.Before(until) {
			delete(a.blocked, k)
		}
	}
}

// tracked returns how many sources have offenses counted and how many are
// (or were, until the next sweep) blocked.
func (a *auditor) tracked() (offending, blocked int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.offenses), len(a.blocked)
}

// sweepEvery sweeps every d until ctx is done.
func (a *auditor) sweepEvery(ctx context.Context, d time.Duration) {
	if a.opts.Threshold <= 0 {
		return
	}
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.sweep(a.now())
		}
	}
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

// secretName matches the names of parameters that hold secrets.
const secretName = `(?:[a-z0-9_]*token|plait_access|plait_refresh|[a-z0-9_]*secret|password|api_?key)`

// Patterns of secrets that must not reach the log, should a reason
// carry one: token-like parameters (query, form, cookie, JSON),
// Authorization credentials, JWTs (access tokens) and refresh tokens.
var (
	secretParam = regexp.MustCompile(`(?i)((?:^|[^a-z0-9_])` + secretName + `=)([^&\s"';,]+)`)
	secretJSON  = regexp.MustCompile(`(?i)("` + secretName + `"\s*:\s*")((?:[^"\\]|\\.)*)`)
	oauthParam  = regexp.MustCompile(`(?i)([?&](?:code|state)=)([^&\s"';,]+)`)
	authScheme  = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}`)
	jwtLike     = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)
	refreshLike = regexp.MustCompile(`\bpr1\.[A-Za-z0-9_-]+\.[0-9]+\.[A-Za-z0-9_-]+`)
)

const redacted = "[REDACTED]"

// redact replaces what looks like a credential in s.
func redact(s string) string {
	if s == "" {
		return s
	}
	s = jwtLike.ReplaceAllString(s, redacted)
	s = refreshLike.ReplaceAllString(s, redacted)
	s = authScheme.ReplaceAllString(s, "$1 "+redacted)
	s = secretParam.ReplaceAllString(s, "${1}"+redacted)
	s = secretJSON.ReplaceAllString(s, "${1}"+redacted)
	return oauthParam.ReplaceAllString(s, "${1}"+redacted)
}

// clip cuts s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
