package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

// fakeClock is a settable clock for the blocklist.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer is a bytes.Buffer safe for the test to read while the
// auditor writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// auditFixture is an audit log writing to a buffer and its blocklist, on
// a fake clock, with their own metrics registry.
type auditFixture struct {
	a     *auditor
	b     *blocklist
	out   *syncBuffer
	clock *fakeClock
	reg   *prometheus.Registry
}

func newAuditFixture(t *testing.T, opts blockOptions) *auditFixture {
	t.Helper()
	f := &auditFixture{out: &syncBuffer{}, clock: newFakeClock(), reg: prometheus.NewRegistry()}
	f.b = newBlocklist(opts, f.reg, f.clock.now)
	f.a = newAuditor(f.out, f.b, f.reg)
	return f
}

// lines parses every line written so far.
func (f *auditFixture) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(f.out.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// events returns the lines whose event is ev.
func (f *auditFixture) events(t *testing.T, ev string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range f.lines(t) {
		if m["event"] == ev {
			out = append(out, m)
		}
	}
	return out
}

// metric returns the value of the sample name{labels} of the registry, 0
// if it has none.
func (f *auditFixture) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	fams, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range fams {
		if fam.GetName() != name {
			continue
		}
	samples:
		for _, m := range fam.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue samples
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func (f *auditFixture) offend(remote string) {
	f.a.record(auditEvent{Event: "malformed", Remote: remote, Offense: true})
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var testBlock = blockOptions{Threshold: 3, Window: time.Minute, Duration: 10 * time.Minute}

// TestAuditLogJSONLines: each event is one JSON line with msg "audit" and
// every field under its name, counted by event in /metrics.
func TestAuditLogJSONLines(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	f.a.record(auditEvent{Event: "denied", RequestID: "req1", ConnID: 42, Remote: "192.0.2.1:5555", User: "alice",
		Peer: "peer-a", Doc: "automerge:abc", Code: 4403, Reason: "no access"})
	f.a.record(auditEvent{Event: "login", User: "bob"})
	if got := strings.Count(f.out.String(), "\n"); got != 2 {
		t.Fatalf("%d lines, want 2:\n%s", got, f.out.String())
	}
	m := f.lines(t)[0]
	want := map[string]any{"level": "INFO", "msg": "audit", "event": "denied", "request_id": "req1", "conn": 42.0,
		"remote": "192.0.2.1:5555", "user": "alice", "peer": "peer-a", "doc": "automerge:abc", "code": 4403.0, "reason": "no access"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"])); err != nil {
		t.Errorf("time %v: %v", m["time"], err)
	}
	if got := f.metric(t, "plait_audit_events_total", "event", "denied"); got != 1 {
		t.Errorf("plait_audit_events_total{event=denied} = %v, want 1", got)
	}
	if got := f.metric(t, "plait_audit_events_total", "event", "login"); got != 1 {
		t.Errorf("plait_audit_events_total{event=login} = %v, want 1", got)
	}
}

// TestAuditOmitsEmptyFields: a line carries only the fields that are set.
func TestAuditOmitsEmptyFields(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	f.a.record(auditEvent{Event: "login", User: "bob"})
	m := f.lines(t)[0]
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	if len(m) != 5 || m["event"] != "login" || m["user"] != "bob" || m["msg"] != "audit" {
		t.Errorf("line has %v, want only time, level, msg, event and user: %v", keys, m)
	}
}

// TestAuditClipsLongFields: what a client sent cannot make a line
// arbitrarily long.
func TestAuditClipsLongFields(t *testing.T) {
	f := newAuditFixture(t, testBlock)
	f.a.record(auditEvent{Event: "malformed", Peer: strings.Repeat("p", 10000), Reason: strings.Repeat("é", 10000)})
	if n := len(f.out.String()); n > 2*maxAuditReason+maxAuditField+200 {
		t.Errorf("line of %d bytes", n)
	}
	m := f.lines(t)[0]
	if r := m["reason"].(string); !strings.HasSuffix(r, "é…") {
		t.Errorf("reason not cut on a rune boundary: ...%q", r[len(r)-8:])
	}
}

// TestAuditRedactsTokens: what looks like a credential in a reason never
// reaches the log.
func TestAuditRedactsTokens(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
	const refresh = "pr1.AAAAAAAAAAAAAAAAAAAAAA.7.bWFjbWFjbWFjbWFjbWFjbWFjbWFj"
	for _, tc := range []struct{ reason, secret string }{
		{"GET /ws?access_token=s3cr3tvalue&x=1", "s3cr3tvalue"},
		{"POST /auth/refresh refresh_token=rt-secret-1", "rt-secret-1"},
		{"header Authorization: Bearer opaque.secret-123", "opaque.secret-123"},
		{"bad token " + jwt, jwt},
		{"reused " + refresh, refresh},
		{"cookie plait_access=cookievalue42; plait_refresh=refreshcookie42", "cookievalue42"},
		{"cookie plait_access=cookievalue42; plait_refresh=refreshcookie42", "refreshcookie42"},
		{`body {"refresh_token": "jsonsecret9", "x": 1}`, "jsonsecret9"},
		{"callback /auth/github/callback?state=st4te&code=oauthcode7", "oauthcode7"},
		{"client_secret=shhh&password=hunter2", "shhh"},
		{"client_secret=shhh&password=hunter2", "hunter2"},
	} {
		f := newAuditFixture(t, testBlock)
		f.a.record(auditEvent{Event: "token_invalid", Reason: tc.reason})
		out := f.out.String()
		if strings.Contains(out, tc.secret) {
			t.Errorf("reason %q: %q in the log: %s", tc.reason, tc.secret, out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("reason %q: no %s in the log: %s", tc.reason, redacted, out)
		}
	}
	// Reasons without secrets are left alone.
	for _, r := range []string{
		"invalid access token: token has invalid claims: token is expired",
		"missing Bearer token",
		"close code=4400 malformed message",
		"github: state mismatch",
	} {
		if got := redact(r); got != r {
			t.Errorf("redact(%q) = %q", r, got)
		}
	}
}

// TestAuditHubEvent: a hub event becomes an audit event with its fields;
// malformed input, invalid sync data, unsupported versions, join timeouts
// and rate limits are offenses, denials and read-only writes are not.
func TestAuditHubEvent(t *testing.T) {
	f := newAuditFixture(t, blockOptions{Threshold: 1, Window: time.Minute, Duration: time.Minute})
	f.a.hubEvent(hub.SecurityEvent{
		Kind:   hub.EventMalformed,
		Conn:   hub.ConnInfo{RemoteAddr: "203.0.113.1:4000", RequestID: "req-9", Identity: hub.Identity{User: "carol"}},
		ConnID: 77, Peer: "peer-c", Doc: protocol.DocumentID("automerge:xyz"), Code: protocol.CloseMalformedMessage,
		Err: errors.New("not CBOR"),
	})
	m := f.events(t, "malformed")
	if len(m) != 1 {
		t.Fatalf("no malformed event:\n%s", f.out.String())
	}
	want := map[string]any{"request_id": "req-9", "conn": 77.0, "remote": "203.0.113.1:4000", "user": "carol",
		"peer": "peer-c", "doc": "automerge:xyz", "code": float64(protocol.CloseMalformedMessage), "reason": "not CBOR"}
	for k, v := range want {
		if m[0][k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[0][k], v)
		}
	}

	for i, tc := range []struct {
		kind    hub.SecurityEventKind
		offense bool
	}{
		{hub.EventMalformed, true},
		{hub.EventInvalidSync, true},
		{hub.EventUnsupportedVersion, true},
		{hub.EventJoinTimeout, true},
		{hub.EventRateLimited, true},
		{hub.EventDenied, false},
		{hub.EventReadOnly, false},
	} {
		ip := fmt.Sprintf("203.0.113.%d", 10+i)
		f.a.hubEvent(hub.SecurityEvent{Kind: tc.kind, Conn: hub.ConnInfo{RemoteAddr: ip + ":1"}}) // no Err
		if got := f.b.blockedFor(mustAddr(t, ip)) > 0; got != tc.offense {
			t.Errorf("%s: blocked %v, want %v", tc.kind, got, tc.offense)
		}
	}
}
