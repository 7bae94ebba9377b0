package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/client"
	"github.com/plaithub/plait/pkg/protocol"
)

// refreshServer implements the node's POST /auth/refresh as
// server/node/auth.go does: each refresh token is accepted once and
// rotated; presenting a spent one revokes the login session, after which
// every refresh fails with 401.
type refreshServer struct {
	srv     *httptest.Server
	ttl     time.Duration
	skew    time.Duration // the server's clock minus ours
	gate    chan struct{} // if set, each refresh waits until it is closed
	entered chan struct{} // a refresh request arrived
	mu      sync.Mutex
	spent   map[string]bool // refresh tokens issued -> spent
	revoked bool            // the login session
	next    int             // tokens issued
	ok      int             // successful refreshes
	reqs    int             // requests
	fail    int             // answer 503 to this many more requests
	used    []string        // refresh tokens presented, in order
	hdrs    []http.Header   // request headers
}

// newRefreshServer starts a refresh endpoint with one login whose refresh
// token is "r0".
func newRefreshServer(t *testing.T, ttl time.Duration) *refreshServer {
	rs := &refreshServer{ttl: ttl, spent: map[string]bool{"r0": false}, entered: make(chan struct{}, 100)}
	rs.srv = httptest.NewServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.srv.Close)
	return rs
}

func (rs *refreshServer) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/auth/refresh" {
		fail(http.StatusNotFound, "not found")
		return
	}
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.RefreshToken == "" {
		fail(http.StatusUnauthorized, "no refresh token")
		return
	}
	rs.entered <- struct{}{}
	if rs.gate != nil {
		<-rs.gate
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.reqs++
	rs.used = append(rs.used, body.RefreshToken)
	rs.hdrs = append(rs.hdrs, r.Header.Clone())
	if rs.fail > 0 {
		rs.fail--
		fail(http.StatusServiceUnavailable, "cannot refresh right now; retry")
		return
	}
	spent, known := rs.spent[body.RefreshToken]
	switch {
	case !known:
		fail(http.StatusUnauthorized, "refresh token invalid, expired or revoked: log in again")
		return
	case spent:
		rs.revoked = true
		fail(http.StatusUnauthorized, "this refresh token was already used: the login session is revoked; log in again")
		return
	}
	rs.spent[body.RefreshToken] = true
	if rs.revoked {
		fail(http.StatusUnauthorized, "refresh token invalid, expired or revoked: log in again")
		return
	}
	rs.next++
	rs.ok++
	refresh := fmt.Sprintf("r%d", rs.next)
	rs.spent[refresh] = false
	now := time.Now().Add(rs.skew)
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"user":               "u1",
		"access_token":       fmt.Sprintf("a%d", rs.next),
		"access_expires_at":  now.Add(rs.ttl).Truncate(time.Second),
		"refresh_token":      refresh,
		"refresh_expires_at": now.Add(30 * 24 * time.Hour).Truncate(time.Second),
	})
}

func (rs *refreshServer) counts() (ok, reqs int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.ok, rs.reqs
}

// rotations records what OnRotate is called with.
type rotations struct {
	mu  sync.Mutex
	got []string
}

func (r *rotations) add(tok string) {
	r.mu.Lock()
	r.got = append(r.got, tok)
	r.mu.Unlock()
}

func (r *rotations) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func newTokenSource(t *testing.T, rs *refreshServer, refresh string, rot *rotations, minValidity time.Duration) *client.TokenSource {
	t.Helper()
	o := client.TokenSourceOptions{BaseURL: rs.srv.URL, RefreshToken: refresh, MinValidity: minValidity}
	if rot != nil {
		o.OnRotate = rot.add
	}
	ts, err := client.NewTokenSource(o)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func mustToken(t *testing.T, ts *client.TokenSource) string {
	t.Helper()
	tok, err := ts.Token(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestNewTokenSourceValidates(t *testing.T) {
	for _, o := range []client.TokenSourceOptions{
		{BaseURL: "", RefreshToken: "r"},
		{BaseURL: "ws://127.0.0.1:1", RefreshToken: "r"},
		{BaseURL: "http://", RefreshToken: "r"},
		{BaseURL: "http://127.0.0.1:1"},
	} {
		if _, err := client.NewTokenSource(o); err == nil {
			t.Errorf("NewTokenSource(%+v) succeeded", o)
		}
	}
}

// TestTokenSourceCachesAndRotates: the first Token refreshes, hands the
// rotated refresh token to OnRotate before returning, and later calls get
// the cached access token.
func TestTokenSourceCachesAndRotates(t *testing.T) {
	t.Parallel()
	rs := newRefreshServer(t, time.Hour)
	var rot rotations
	ts := newTokenSource(t, rs, "r0", &rot, 0)
	if tok := mustToken(t, ts); tok != "a1" {
		t.Fatalf("first token %q, want a1", tok)
	}
	if got := rot.list(); !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("OnRotate got %q before Token returned, want [r1]", got)
	}
	for range 5 {
		if tok := mustToken(t, ts); tok != "a1" {
			t.Fatalf("cached token %q, want a1", tok)
		}
	}
	if ok, reqs := rs.counts(); ok != 1 || reqs != 1 {
		t.Fatalf("%d refreshes (%d requests), want 1", ok, reqs)
	}
	rs.mu.Lock()
	h := rs.hdrs[0]
	rs.mu.Unlock()
	if h.Get("Content-Type") != "application/json" || h.Get("Origin") != "" {
		t.Fatalf("refresh request headers %v", h)
	}
}

// TestTokenSourceRefreshesNearExpiry: a token is refreshed (with the
// rotated refresh token) once it is valid for MinValidity or less, and not
// before.
func TestTokenSourceRefreshesNearExpiry(t *testing.T) {
	t.Parallel()
	rs := newRefreshServer(t, 3*time.Second)
	var rot rotations
	ts := newTokenSource(t, rs, "r0", &rot, time.Second)
	start := time.Now()
	if tok := mustToken(t, ts); tok != "a1" {
		t.Fatalf("first token %q", tok)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok := mustToken(t, ts)
		if tok == "a2" {
			break
		}
		if tok != "a1" {
			t.Fatalf("token %q, want a1 then a2", tok)
		}
		if time.Now().After(deadline) {
			t.Fatal("the token was not refreshed before it expired")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The token lived 3 s (to the second): it is refreshed with 1 s or
	// less left, so not before 1.5 s.
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("refreshed after %v, with more than MinValidity left", el)
	}
	rs.mu.Lock()
	used := slices.Clone(rs.used)
	rs.mu.Unlock()
	if !slices.Equal(used, []string{"r0", "r1"}) {
		t.Fatalf("refresh tokens presented: %q, want [r0 r1]", used)
	}
	if got := rot.list(); !slices.Equal(got, []string{"r1", "r2"}) {
		t.Fatalf("OnRotate got %q", got)
	}
}

// TestTokenSourceServerClock: the token's lifetime is measured on the
// server's clock, so a client whose clock is an hour ahead does not take a
// fresh one-hour token for expired.
func TestTokenSourceServerClock(t *testing.T) {
	t.Parallel()
	rs := newRefreshServer(t, time.Hour)
	rs.skew = -time.Hour
	ts := newTokenSource(t, rs, "r0", nil, 0)
	for range 3 {
		if tok := mustToken(t, ts); tok != "a1" {
			t.Fatalf("token %q, want a1", tok)
		}
	}
	if ok, _ := rs.counts(); ok != 1 {
		t.Fatalf("%d refreshes, want 1", ok)
	}
}

// TestTokenSourceConcurrentRefreshOnce: callers that need a refresh at the
// same time share one; the refresh token is never presented twice.
func TestTokenSourceConcurrentRefreshOnce(t *testing.T) {
	t.Parallel()
	rs := newRefreshServer(t, time.Hour)
	rs.gate = make(chan struct{})
	var rot rotations
	ts := newTokenSource(t, rs, "r0", &rot, 0)
	const n = 20
	toks := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { toks[i], errs[i] = ts.Token(ctxT(t)) })
	}
	select {
	case <-rs.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no refresh request")
	}
	close(rs.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || toks[i] != "a1" {
			t.Fatalf("caller %d: %q, %v", i, toks[i], errs[i])
		}
	}
	if ok, reqs := rs.counts(); ok != 1 || reqs != 1 {
		t.Fatalf("%d refreshes (%d requests), want exactly 1", ok, reqs)
	}
	if got := rot.list(); !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("OnRotate got %q, want [r1]", got)
	}
}

// TestTokenSourceCallerGivesUp: a caller whose context ends while the
// refresh is under way gets its error, but the refresh completes: its
// rotated token is kept, not lost (which would end the login).
func TestTokenSourceCallerGivesUp(t *testing.T) {
	t.Parallel()
	rs := newRefreshServer(t, time.Hour)
	rs.gate = make(chan struct{})
	var rot rotations
	ts := newTokenSource(t, rs, "r0", &rot, 0)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := ts.Token(ctx)
		res <- err
	}()
	select {
	case <-rs.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no refresh request")
	}
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Token after its context ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Token did not return when its context ended")
	}
	close(rs.gate)
	if tok := mustToken(t, ts); tok != "a1" {
		t.Fatalf("token %q, want a1 from the refresh the first caller left", tok)
	}
	if ok, reqs := rs.counts(); ok != 1 || reqs != 1 {
		t.Fatalf("%d refreshes (%d requests), want 1", ok, reqs)
	}
	if got := rot.list(); !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("OnRotate got %q", got)
	}
}

// TestTokenSourceRefreshFailed: a refresh token the server refuses (401)
// is ErrRefreshFailed with the server's message, and the source gives up
// without asking again; a 503 is a passing failure.
func TestTokenSourceRefreshFailed(t *testing.T) {
	t.Parallel()
	rs := newRefreshServer(t, time.Hour)
	orig := newTokenSource(t, rs, "r0", nil, 0)
	if tok := mustToken(t, orig); tok != "a1" {
		t.Fatalf("token %q", tok)
	}
	// A copy of the spent refresh token: the server revokes the login.
	stolen := newTokenSource(t, rs, "r0", nil, 0)
	_, err := stolen.Token(ctxT(t))
	if !errors.Is(err, client.ErrRefreshFailed) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("refresh with a spent token: %v, want ErrRefreshFailed with the server's message", err)
	}
	// The rotated token, as a restarted app would present it, is refused
	// too: the login session is revoked.
	restarted := newTokenSource(t, rs, "r1", nil, 0)
	if _, err := restarted.Token(ctxT(t)); !errors.Is(err, client.ErrRefreshFailed) {
		t.Fatalf("refresh after the session was revoked: %v, want ErrRefreshFailed", err)
	}
	_, before := rs.counts()
	if _, err := stolen.Token(ctxT(t)); !errors.Is(err, client.ErrRefreshFailed) {
		t.Fatalf("second Token after a refused refresh: %v", err)
	}
	if _, after := rs.counts(); after != before {
		t.Fatal("a source whose refresh token was refused asked the server again")
	}
	unknown := newTokenSource(t, rs, "forged", nil, 0)
	if _, err := unknown.Token(ctxT(t)); !errors.Is(err, client.ErrRefreshFailed) || !strings.Contains(err.Error(), "log in again") {
		t.Fatalf("refresh with an unknown token: %v", err)
	}

	// 503: not ErrRefreshFailed, and the unspent token works next time.
	rs2 := newRefreshServer(t, time.Hour)
	rs2.fail = 1
	ts := newTokenSource(t, rs2, "r0", nil, 0)
	_, err = ts.Token(ctxT(t))
	if err == nil || errors.Is(err, client.ErrRefreshFailed) || !strings.Contains(err.Error(), "retry") {
		t.Fatalf("refresh answered 503: %v", err)
	}
	if tok := mustToken(t, ts); tok != "a1" {
		t.Fatalf("token after a 503: %q", tok)
	}
}

// authProxy stands in front of a real node as a node with login does: it
// checks the handshake's Authorization header (401 with a JSON error if
// check refuses it), relays the WebSocket to the node, and can close a
// connection with an error message and a close code as the node does when
// a token expires or a session is revoked.
type authProxy struct {
	t      *testing.T
	target string
	check  func(token string) string // "" accepts; else the 401's message
	srv    *httptest.Server

	mu    sync.Mutex
	seen  []string // Authorization headers, in order
	conns map[*websocket.Conn]string
}

func newAuthProxy(t *testing.T, target string, check func(token string) string) *authProxy {
	p := &authProxy{t: t, target: target, check: check, conns: make(map[*websocket.Conn]string)}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *authProxy) URL() string { return "ws" + strings.TrimPrefix(p.srv.URL, "http") + "/ws" }

func (p *authProxy) serve(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Get("Authorization")
	p.mu.Lock()
	p.seen = append(p.seen, h)
	p.mu.Unlock()
	tok, _ := strings.CutPrefix(h, "Bearer ")
	if msg := p.check(tok); msg != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up, _, err := websocket.Dial(ctx, p.target, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	down, err := websocket.Accept(w, r, nil)
	if err != nil {
		up.CloseNow()
		return
	}
	up.SetReadLimit(-1)
	down.SetReadLimit(-1)
	p.mu.Lock()
	p.conns[down] = tok
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, down)
		p.mu.Unlock()
	}()
	relay := func(from, to *websocket.Conn) {
		for {
			typ, b, err := from.Read(ctx)
			if err != nil {
				return
			}
			if err := to.Write(ctx, typ, b); err != nil {
				return
			}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		relay(up, down)
	}()
	relay(down, up)
	up.CloseNow()
	<-done
	down.CloseNow()
}

// headers returns the Authorization headers of the handshakes so far.
func (p *authProxy) headers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

// end closes the connections opened with a token match accepts as the
// node does: an error message, then the close code.
func (p *authProxy) end(match func(token string) bool, code protocol.CloseCode, reason string) int {
	p.mu.Lock()
	var hit []*websocket.Conn
	for c, tok := range p.conns {
		if match(tok) {
			hit = append(hit, c)
		}
	}
	p.mu.Unlock()
	frame, err := protocol.Encode(&protocol.Message{Type: protocol.TypeError, SenderID: "proxy", ErrorMessage: reason})
	if err != nil {
		p.t.Fatal(err)
	}
	for _, c := range hit {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.Write(ctx, websocket.MessageBinary, frame)
		cancel()
		_ = c.Close(websocket.StatusCode(code), reason)
	}
	return len(hit)
}

// TestTokenFailsThenConnects: while Token fails the client does not
// connect (each failure a failed attempt, with its error in Stats), then a
// token the server refuses (401) is a failed attempt too, and with a good
// token the client connects and syncs the edits it made meanwhile.
func TestTokenFailsThenConnects(t *testing.T) {
	n := startNode(t)
	p := newAuthProxy(t, n.URL(), func(tok string) string {
		switch tok {
		case "good":
			return ""
		case "":
			return "authentication required"
		}
		return "access token expired: refresh it (POST /auth/refresh) and reconnect"
	})
	errOffline := errors.New("identity provider unreachable")
	var online, stale atomic.Bool
	stale.Store(true)
	var calls atomic.Int32
	token := func(context.Context) (string, error) {
		calls.Add(1)
		if !online.Load() {
			return "", errOffline
		}
		if stale.CompareAndSwap(true, false) {
			return "stale", nil
		}
		return "good", nil
	}
	a, err := client.New(context.Background(), client.Options{URLs: []string{p.URL()}, Token: token,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	h, err := a.Create(set("title", "written offline"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Change(set("n", int64(1))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "failed attempts", func() bool {
		s := a.Stats()
		return s.ConnectFailures >= 3 && errors.Is(s.LastErr, errOffline)
	})
	if a.Connected() || len(p.headers()) != 0 {
		t.Fatal("the client dialed without a token")
	}
	if err := h.Change(set("n", int64(2))); err != nil {
		t.Fatal(err)
	}

	online.Store(true)
	if err := a.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s := a.Stats()
	if !errors.Is(s.LastErr, client.ErrUnauthorized) || !strings.Contains(s.LastError, "access token expired") {
		t.Fatalf("last error %v: want the refused stale token (ErrUnauthorized, with the server's message)", s.LastErr)
	}
	if got := p.headers(); !slices.Equal(got, []string{"Bearer stale", "Bearer good"}) {
		t.Fatalf("handshakes sent %q, want the stale token, then the good one", got)
	}
	if int(calls.Load()) != int(s.ConnectFailures)+1 {
		t.Fatalf("Token called %d times for %d failed attempts and 1 connection", calls.Load(), s.ConnectFailures)
	}
	waitInSync(t, h)

	b := newClient(t, client.Options{URLs: []string{p.URL()}, Token: func(context.Context) (string, error) { return "good", nil }})
	hb, err := b.Find(ctxT(t), h.URL())
	if err != nil {
		t.Fatal(err)
	}
	waitSame(t, h, hb)
	if get(t, hb, "title") != "written offline" || get(t, hb, "n") != int64(2) {
		t.Fatal("edits made while the client could not connect did not reach the server")
	}
}

// TestTokenExpiredReconnectsAtOnce: a connection closed with 4401 is
// reopened at once (the backoff is an hour here) with a new token, and
// syncs.
func TestTokenExpiredReconnectsAtOnce(t *testing.T) {
	n := startNode(t)
	p := newAuthProxy(t, n.URL(), func(tok string) string {
		if strings.HasPrefix(tok, "tok-") {
			return ""
		}
		return "invalid access token"
	})
	var calls atomic.Int32
	token := func(context.Context) (string, error) { return fmt.Sprintf("tok-a%d", calls.Add(1)), nil }
	a := newClient(t, client.Options{URLs: []string{p.URL()}, Token: token, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	b := newClient(t, client.Options{URLs: []string{p.URL()}, Token: func(context.Context) (string, error) { return "tok-b", nil }})
	ha := created(t, a, set("v", int64(0)))
	hb, err := b.Find(ctxT(t), ha.URL())
	if err != nil {
		t.Fatal(err)
	}
	if got := p.end(func(tok string) bool { return tok == "tok-a1" }, protocol.CloseTokenExpired, "access token expired: refresh it and reconnect"); got != 1 {
		t.Fatalf("closed %d connections, want 1", got)
	}
	waitFor(t, "the reconnection", func() bool { return a.Stats().Connects == 2 && a.Connected() })
	s := a.Stats()
	if calls.Load() != 2 || s.ConnectFailures != 0 {
		t.Fatalf("Token called %d times, %d failed attempts: want 2 calls and a first reconnection that works", calls.Load(), s.ConnectFailures)
	}
	if code := websocket.CloseStatus(s.LastErr); code != websocket.StatusCode(protocol.CloseTokenExpired) || !strings.Contains(s.LastError, "access token expired") {
		t.Fatalf("last error %v (code %d): want the 4401 close with the server's message", s.LastErr, code)
	}
	if hs := p.headers(); !slices.Contains(hs, "Bearer tok-a2") {
		t.Fatalf("handshakes %q lack the new token", hs)
	}
	if err := hb.Change(set("w", int64(2))); err != nil {
		t.Fatal(err)
	}
	if err := ha.Change(set("v", int64(1))); err != nil {
		t.Fatal(err)
	}
	waitSame(t, ha, hb)
	if get(t, ha, "w") != int64(2) || get(t, hb, "v") != int64(1) {
		t.Fatal("no sync on the new connection")
	}
}

// TestRevoked: a connection closed with 4410 leaves ErrRevoked in
// Stats().LastErr; the client keeps trying (handshakes refused as revoked
// are ErrRevoked too) and resumes once a token is accepted again.
func TestRevoked(t *testing.T) {
	n := startNode(t)
	var revoked atomic.Bool
	p := newAuthProxy(t, n.URL(), func(tok string) string {
		if revoked.Load() {
			return "access revoked: log in again"
		}
		return ""
	})
	good := func(context.Context) (string, error) { return "good", nil }
	// a waits an hour after a failure: its last error stays the close's.
	a := newClient(t, client.Options{URLs: []string{p.URL()}, Token: good, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	b := newClient(t, client.Options{URLs: []string{p.URL()}, Token: good})
	revoked.Store(true)
	if got := p.end(func(string) bool { return true }, protocol.CloseRevoked, "your access was revoked: log in again"); got != 2 {
		t.Fatalf("closed %d connections, want 2", got)
	}
	waitFor(t, "a's disconnection", func() bool { return a.Stats().Disconnects == 1 && !a.Connected() })
	if s := a.Stats(); !errors.Is(s.LastErr, client.ErrRevoked) || websocket.CloseStatus(s.LastErr) != websocket.StatusCode(protocol.CloseRevoked) {
		t.Fatalf("a's last error %v: want ErrRevoked from the 4410 close", s.LastErr)
	}
	waitFor(t, "b's refused attempts", func() bool {
		s := b.Stats()
		return s.ConnectFailures >= 2 && errors.Is(s.LastErr, client.ErrRevoked)
	})
	if s := b.Stats(); !strings.Contains(s.LastError, "HTTP 401") {
		t.Fatalf("b's last error %q: want the refused handshake", s.LastError)
	}
	revoked.Store(false) // logged in again
	if err := b.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}
