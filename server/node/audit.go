package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plaithub/plait/hub"
)

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
	TraceID   string // of the request's span, if traced
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

// auditor writes the security audit log, one JSON line an event, and
// hands offenses to the blocklist. It is safe for concurrent use.
type auditor struct {
	log    *slog.Logger
	events *prometheus.CounterVec
	blocks *blocklist
}

// newAuditor writes JSON lines to w, counts offenses in blocks and
// registers its metrics with reg, unless reg is nil.
func newAuditor(w io.Writer, blocks *blocklist, reg prometheus.Registerer) *auditor {
	a := &auditor{
		log: slog.New(slog.NewJSONHandler(w, nil)),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_audit_events_total",
			Help: "Events written to the security audit log, by event."}, []string{"event"}),
		blocks: blocks,
	}
	if reg != nil {
		reg.MustRegister(a.events)
	}
	return a
}

// record writes ev as one JSON line and, if it is an offense, counts it
// for its source (blocklist.offense); the offense that blocks the source
// is logged as a "blocked" event. Events whose Remote is no address are
// logged but not counted.
func (a *auditor) record(ev auditEvent) {
	a.write(ev)
	if !ev.Offense {
		return
	}
	k, n, until := a.blocks.offense(ev.Remote)
	if until.IsZero() {
		return
	}
	a.write(auditEvent{Event: "blocked", RequestID: ev.RequestID, ConnID: ev.ConnID, Remote: ev.Remote, User: ev.User,
		Reason: fmt.Sprintf("%d offenses within %s, the last %s", n, a.blocks.opts.Window, ev.Event)},
		slog.String("source", k.String()), slog.String("duration", a.blocks.opts.Duration.String()),
		slog.Time("until", until))
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
	str("trace_id", ev.TraceID, maxAuditField)
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
		TraceID:   traceIDString(ev.Conn.Trace),
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

// auditRequest records ev for the HTTP request c: its request id and
// client address filled in.
func (n *Node) auditRequest(c *fiber.Ctx, ev auditEvent) {
	ev.RequestID, ev.Remote, ev.TraceID = requestID(c), clientOf(c).remote, traceIDOf(c)
	n.audit.record(ev)
}

func requestID(c *fiber.Ctx) string {
	id, _ := c.Locals("request_id").(string)
	return id
}
