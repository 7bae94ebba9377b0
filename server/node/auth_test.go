package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/auth"
)

// oidcEnv is a local OpenID Connect provider (mockoidc) and the auth key
// file the nodes of a test share.
type oidcEnv struct {
	m       *mockoidc.MockOIDC
	keyFile string
}

func startOIDC(t *testing.T) *oidcEnv {
	t.Helper()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	kf := filepath.Join(t.TempDir(), "auth.keys")
	if err := os.WriteFile(kf, []byte("k1:"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &oidcEnv{m: m, keyFile: kf}
}

// configure turns a node's login on with this provider; public is the URL
// the login callback goes to ("" = the node's own).
func (e *oidcEnv) configure(public string) func(*Config) {
	return func(c *Config) {
		c.OIDCIssuer, c.OIDCClientID, c.OIDCClientSecret = e.m.Issuer(), e.m.ClientID, e.m.ClientSecret
		c.AuthKeyFile = e.keyFile
		c.PublicURL = public
		if public == "" {
			c.PublicURL = "http://" + c.Addr
		}
	}
}

// browser is an HTTP client with a cookie jar that stops at redirects, so
// a test follows each hop itself.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func hop(t *testing.T, c *http.Client, u string, wantStatus int) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d", u, resp.StatusCode, body, wantStatus)
	}
	return resp
}

// login runs the whole browser login: the node's login URL, the provider's
// authorization endpoint (as user), the callback on callbackNode. It
// returns the browser (holding the token cookies) and the tokens.
func login(t *testing.T, e *oidcEnv, begin, callbackNode *testNode, user string) (*http.Client, string, string) {
	t.Helper()
	c := browser(t)
	resp := hop(t, c, begin.HTTP+"/auth/oidc/login?return_to=/docs/home", http.StatusFound)
	e.m.QueueUser(&mockoidc.MockUser{Subject: user, Email: user + "@example.com"})
	resp = hop(t, c, resp.Header.Get("Location"), http.StatusFound)
	cb, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cb.String(), callbackNode.HTTP+"/auth/oidc/callback") {
		t.Fatalf("the provider sends the browser to %s, want the callback on %s", cb, callbackNode.HTTP)
	}
	resp = hop(t, c, cb.String(), http.StatusFound)
	if loc := resp.Header.Get("Location"); loc != "/docs/home" {
		t.Fatalf("after login: redirected to %q, want the return_to path", loc)
	}
	var access, refresh string
	for _, ck := range resp.Cookies() {
		switch ck.Name {
		case accessCookie:
			access = ck.Value
			if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
				t.Errorf("access cookie %+v: want HttpOnly, SameSite=Strict", ck)
			}
		case refreshCookie:
			refresh = ck.Value
		}
		if len(ck.String()) > 4096 {
			t.Errorf("cookie %s is %d bytes", ck.Name, len(ck.String()))
		}
	}
	if access == "" || refresh == "" {
		t.Fatalf("login set no token cookies: %v", resp.Cookies())
	}
	return c, access, refresh
}

// api calls the node's REST API with an access token.
func api(t *testing.T, method, u, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// dialWS opens a WebSocket with hdr and reports the handshake's status.
func dialWS(t *testing.T, u string, hdr http.Header) (*websocket.Conn, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		return nil, resp.StatusCode, string(body)
	}
	ws.SetReadLimit(64 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	return ws, http.StatusSwitchingProtocols, ""
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// joinWS sends join on ws and waits for peer.
func joinWS(t *testing.T, ws *websocket.Conn, id string) {
	t.Helper()
	frame, _ := protocol.Encode(&protocol.Message{Type: protocol.TypeJoin, SenderID: id, SupportedProtocolVersions: []string{"1"},
		PeerMetadata: &protocol.PeerMetadata{IsEphemeral: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageBinary, frame); err != nil {
		t.Fatal(err)
	}
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := protocol.Decode(data); err != nil || m.Type != protocol.TypePeer {
		t.Fatalf("join answered %+v, %v", m, err)
	}
}

// waitClosed reads ws until it closes (within d) and returns the close
// code and the last error message before it.
func waitClosed(t *testing.T, ws *websocket.Conn, d time.Duration) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var errMsg string
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("the socket was not closed within %v", d)
			}
			return websocket.CloseStatus(err), errMsg
		}
		if m, err := protocol.Decode(data); err == nil && m.Type == protocol.TypeError {
			errMsg = m.ErrorMessage
		}
	}
}

// waitAudit waits (5 s at most) until the audit log has want: an event
// may be written just after what it caused is seen.
func waitAudit(t *testing.T, n *testNode, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(auditLog(t, n), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the audit log lacks %s:\n%s", want, auditLog(t, n))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func auditLog(t *testing.T, n *testNode) string {
	t.Helper()
	b, err := os.ReadFile(n.cfg.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLoginAndWebSocketAuth: a user logs in through the provider, opens a
// WebSocket with the token (header, query or cookie); no credentials, a
// forged, an expired or a revoked token, and a cross-origin handshake are
// each refused as documented, and the audit log has them.
func TestLoginAndWebSocketAuth(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""), func(c *Config) { c.BlockThreshold = 0 })
	br, access, _ := login(t, e, n, n, "alice")

	if code, me := api(t, "GET", n.HTTP+"/api/me", access, nil); code != 200 || me["user"] != "oidc:alice" {
		t.Fatalf("/api/me: %d %v", code, me)
	}
	// Header, query parameter and cookie all open the socket.
	ws, code, body := dialWS(t, n.URL, bearer(access))
	if code != 101 {
		t.Fatalf("bearer: %d %s", code, body)
	}
	joinWS(t, ws, "alice-1")
	if _, code, body = dialWS(t, n.URL+"?access_token="+url.QueryEscape(access), nil); code != 101 {
		t.Fatalf("query token: %d %s", code, body)
	}
	u, _ := url.Parse(n.HTTP)
	var cookie string
	for _, ck := range br.Jar.Cookies(u) {
		if ck.Name == accessCookie {
			cookie = ck.Name + "=" + ck.Value
		}
	}
	if _, code, body = dialWS(t, n.URL, http.Header{"Cookie": {cookie}, "Origin": {n.HTTP}}); code != 101 {
		t.Fatalf("cookie from the node's own origin: %d %s", code, body)
	}

	for name, tc := range map[string]struct {
		hdr  http.Header
		want int
		msg  string
	}{
		"no credentials": {nil, 401, "authentication required"},
		"forged token":   {bearer(access[:len(access)-4] + "AAAA"), 401, "invalid access token"},
		"cross-origin":   {http.Header{"Authorization": {"Bearer " + access}, "Origin": {"https://evil.example"}}, 403, "not allowed"},
		"expired token":  {bearer(expiredToken(t, n)), 401, "access token expired"},
	} {
		if _, code, body := dialWS(t, n.URL, tc.hdr); code != tc.want || !strings.Contains(body, tc.msg) {
			t.Errorf("%s: %d %s, want %d mentioning %q", name, code, body, tc.want, tc.msg)
		}
	}
	log := auditLog(t, n)
	for _, ev := range []string{`"event":"login"`, `"event":"token_missing"`, `"event":"token_invalid"`, `"event":"origin_rejected"`, `"event":"token_expired"`} {
		if !strings.Contains(log, ev) {
			t.Errorf("audit log lacks %s:\n%s", ev, log)
		}
	}
	if strings.Contains(log, access) {
		t.Error("the audit log contains an access token")
	}

	// Logging out revokes the session: its open socket closes with 4410,
	// and the token opens nothing any more.
	req, _ := http.NewRequest("POST", n.HTTP+"/auth/logout", nil)
	resp, err := br.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if code, msg := waitClosed(t, ws, 5*time.Second); code != websocket.StatusCode(protocol.CloseRevoked) || msg == "" {
		t.Fatalf("after logout the socket closed with %v after %q, want %d after an error message", code, msg, protocol.CloseRevoked)
	}
	if _, code, body := dialWS(t, n.URL, bearer(access)); code != 401 || !strings.Contains(body, "revoked") {
		t.Fatalf("revoked token: %d %s", code, body)
	}
}

// expiredToken mints an access token of the node's keys that expired a
// minute ago.
func expiredToken(t *testing.T, n *testNode) string {
	t.Helper()
	return tokenAt(t, n, "oidc:alice", time.Now().Add(-n.cfg.AccessTTL-time.Minute))
}

// tokenAt logs user in with the node's keys and store as if it were at.
func tokenAt(t *testing.T, n *testNode, user string, at time.Time) string {
	t.Helper()
	keys, err := readAuthKeys(n.cfg.AuthKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	shift := time.Since(at)
	tok, err := auth.NewTokens(auth.TokenOptions{Keys: keys, Store: n.auth.store, AccessTTL: n.cfg.AccessTTL,
		Now: func() time.Time { return time.Now().Add(-shift) }})
	if err != nil {
		t.Fatal(err)
	}
	p, err := tok.Login(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return p.Access
}

// TestTokenExpiryClosesSocket: a socket whose access token expires is
// closed with 4401 after the grace, with an error message first.
func TestTokenExpiryClosesSocket(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""), func(c *Config) { c.TokenGrace = 500 * time.Millisecond })
	// A token issued so that it expires 2 s from now.
	tok := tokenAt(t, n, "oidc:bob", time.Now().Add(-n.cfg.AccessTTL+2*time.Second))
	ws, code, body := dialWS(t, n.URL, bearer(tok))
	if code != 101 {
		t.Fatalf("%d %s", code, body)
	}
	joinWS(t, ws, "bob-1")
	start := time.Now()
	code2, msg := waitClosed(t, ws, 10*time.Second)
	if code2 != websocket.StatusCode(protocol.CloseTokenExpired) || !strings.Contains(msg, "expired") {
		t.Fatalf("closed with %v after %q, want %d after an error message", code2, msg, protocol.CloseTokenExpired)
	}
	if el := time.Since(start); el < time.Second {
		t.Fatalf("closed after %v: before the token expired", el)
	}
}

// TestRefreshRotatesAndReuseRevokes: a refresh token works once; the new
// one works; presenting the spent one again revokes the whole login
// session (the new refresh token fails too, and the session's sockets
// close with 4410).
func TestRefreshRotatesAndReuseRevokes(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""), func(c *Config) { c.BlockThreshold = 0 })
	_, access, refresh := login(t, e, n, n, "carol")
	ws, code, _ := dialWS(t, n.URL, bearer(access))
	if code != 101 {
		t.Fatal(code)
	}
	joinWS(t, ws, "carol-1")

	code, p1 := api(t, "POST", n.HTTP+"/auth/refresh", "", map[string]string{"refresh_token": refresh})
	if code != 200 || p1["refresh_token"] == refresh || p1["access_token"] == nil || p1["user"] != "oidc:carol" {
		t.Fatalf("refresh: %d %v", code, p1)
	}
	if c, _ := api(t, "GET", n.HTTP+"/api/me", p1["access_token"].(string), nil); c != 200 {
		t.Fatalf("refreshed access token: %d", c)
	}
	code, p2 := api(t, "POST", n.HTTP+"/auth/refresh", "", map[string]string{"refresh_token": p1["refresh_token"].(string)})
	if code != 200 {
		t.Fatalf("second refresh: %d %v", code, p2)
	}
	// The first token again: a reuse.
	if code, out := api(t, "POST", n.HTTP+"/auth/refresh", "", map[string]string{"refresh_token": refresh}); code != 401 || !strings.Contains(fmt.Sprint(out["error"]), "already used") {
		t.Fatalf("reused refresh token: %d %v", code, out)
	}
	if code, _ := api(t, "POST", n.HTTP+"/auth/refresh", "", map[string]string{"refresh_token": p2["refresh_token"].(string)}); code != 401 {
		t.Fatalf("the session's newest refresh token after a reuse: %d, want 401", code)
	}
	if code, msg := waitClosed(t, ws, 5*time.Second); code != websocket.StatusCode(protocol.CloseRevoked) {
		t.Fatalf("the session's socket after a reuse: %v %q, want %d", code, msg, protocol.CloseRevoked)
	}
	if !strings.Contains(auditLog(t, n), `"event":"token_reuse"`) {
		t.Error("the audit log lacks the reuse")
	}
}

// TestAuthAcrossNodes: two nodes on one Redis. A login begun on node A
// completes on node B (the login state is in a sealed cookie, its one use
// recorded in Redis); revoking a user on A closes the user's socket on B
// within 5 s; a permission change made on A applies to an open session on
// B at once.
func TestAuthAcrossNodes(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	e := startOIDC(t)
	b := startNode(t, t.TempDir(), func(c *Config) { c.RedisURL = rs.URL() }, e.configure(""), func(c *Config) { c.AdminUsers = []string{"oidc:admin"} })
	a := startNode(t, t.TempDir(), func(c *Config) { c.RedisURL = rs.URL() }, e.configure(b.cfg.PublicURL), func(c *Config) { c.AdminUsers = []string{"oidc:admin"} })

	// Begun on A, called back on B.
	_, user, userRefresh := login(t, e, a, b, "uma")
	_, admin, _ := login(t, e, a, b, "admin")
	if code, me := api(t, "GET", a.HTTP+"/api/me", user, nil); code != 200 || me["user"] != "oidc:uma" {
		t.Fatalf("the token from B on A: %d %v", code, me)
	}

	// A document owned by the admin, shared with uma as editor; uma syncs
	// it on B.
	id := ownedDoc(t, a, admin)
	if code, _ := api(t, "PUT", a.HTTP+"/api/docs/"+string(id)+"/users/oidc:uma", admin, map[string]string{"role": "editor"}); code != 204 {
		t.Fatal(code)
	}
	p := dialPeer(t, withToken(b, user), "uma-b")
	doc := automerge.New()
	ss := automerge.NewSyncState(doc)
	p.syncDoc(id, doc, ss, true)

	// Demoted on A: uma's next change on B is refused.
	if code, _ := api(t, "PUT", a.HTTP+"/api/docs/"+string(id)+"/users/oidc:uma", admin, map[string]string{"role": "viewer"}); code != 204 {
		t.Fatal(code)
	}
	time.Sleep(2 * time.Second) // the change reaches B through the Redis stream (well under this)
	if err := doc.RootMap().Set("by", "uma"); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit("uma"); err != nil {
		t.Fatal(err)
	}
	if sm, ok := ss.GenerateMessage(); ok {
		p.send(&protocol.Message{Type: protocol.TypeSync, SenderID: p.id, TargetID: p.server, DocumentID: id, Data: sm.Bytes()})
	}
	if msg, code := p.expectClose(); code != websocket.StatusCode(protocol.CloseReadOnly) {
		t.Fatalf("after the demotion on A, uma's change on B: closed %v after %q, want %d", code, msg, protocol.CloseReadOnly)
	}

	// Revoked on A: uma's socket on B closes within 5 s, and her token
	// opens nothing on either node.
	ws, code, body := dialWS(t, b.URL, bearer(user))
	if code != 101 {
		t.Fatalf("%d %s", code, body)
	}
	joinWS(t, ws, "uma-b2")
	start := time.Now()
	if code, _ := api(t, "POST", a.HTTP+"/api/admin/revoke-user", user, map[string]string{"user": "oidc:uma"}); code != 403 {
		t.Fatalf("a non-admin revoking: %d, want 403", code)
	}
	if code, _ := api(t, "POST", a.HTTP+"/api/admin/revoke-user", admin, map[string]string{"user": "oidc:uma"}); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code, msg := waitClosed(t, ws, 5*time.Second); code != websocket.StatusCode(protocol.CloseRevoked) {
		t.Fatalf("uma's socket on B: %v %q, want %d", code, msg, protocol.CloseRevoked)
	}
	t.Logf("revocation on A closed the socket on B after %v", time.Since(start).Round(time.Millisecond))
	for _, n := range []*testNode{a, b} {
		if _, code, _ := dialWS(t, n.URL, bearer(user)); code != 401 {
			t.Fatalf("a revoked user's token: %d, want 401", code)
		}
	}
	if code, _ := api(t, "POST", b.HTTP+"/auth/refresh", "", map[string]string{"refresh_token": userRefresh}); code != 401 {
		t.Fatalf("a revoked user's refresh token: %d, want 401", code)
	}
	if _, fresh, _ := login(t, e, b, b, "uma"); fresh == "" {
		t.Fatal("a revoked user cannot log in again")
	} else if _, code, _ := dialWS(t, a.URL, bearer(fresh)); code != 101 {
		t.Fatalf("a token from a login after the revocation: %d, want 101", code)
	}
}

// TestPerUserLimits: a user's connections beyond --max-conns-per-user get
// 429; a user flooding over two connections exceeds the shared per-user
// message rate and is closed 4430; another user on the same node syncs
// unaffected throughout. A repeat offender's address is then blocked.
func TestPerUserLimits(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""), func(c *Config) {
		c.MaxConnsPerUser = 2
		c.UserMessageRate, c.UserMessageBurst = 20, 60
		c.MessageRate, c.MessageBurst = 1000, 1000 // the per-connection limit stays out of the way
	})
	_, flooder, _ := login(t, e, n, n, "flo")
	_, good, _ := login(t, e, n, n, "gus")

	gp := dialPeer(t, withToken(n, good), "gus-1")
	id := ownedDoc(t, n, good)
	doc := newDoc(t, "k", "v0")
	ss := automerge.NewSyncState(doc)
	gp.syncDoc(id, doc, ss, false)

	f1 := dialPeer(t, withToken(n, flooder), "flo-1")
	f2 := dialPeer(t, withToken(n, flooder), "flo-2")
	if _, code, body := dialWS(t, n.URL, bearer(flooder)); code != 429 || !strings.Contains(body, "max-conns-per-user") {
		t.Fatalf("a third connection of one user: %d %s, want 429", code, body)
	}
	_, other, _ := login(t, e, n, n, "hal")
	if _, code, _ := dialWS(t, n.URL, bearer(other)); code != 101 {
		t.Fatalf("another user's connection: %d", code)
	}
	frame := func(p *goPeer) []byte {
		b, _ := protocol.Encode(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: p.id, TargetID: p.server, DocumentID: protocol.NewDocumentID()})
		return b
	}
	// 40 on each connection: below each connection's limit (1,000 burst)
	// and below the user's burst of 60 for either alone, but above it for
	// both together: the second connection is the one cut off.
	const read = `plait_messages_in_total{type="doc-unavailable"}`
	if err := gp.sendRaw(websocket.MessageBinary, frame(gp)); err != nil { // the series exists from here on
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(metricsText(t, n), read); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in /metrics", read)
		}
	}
	before := metricValue(t, n, read)
	for i, p := range []*goPeer{f1, f2} {
		for range 40 {
			if err := p.sendRaw(websocket.MessageBinary, frame(p)); err != nil {
				break
			}
		}
		if i == 0 { // the node reads f1's before f2's
			for deadline := time.Now().Add(10 * time.Second); metricValue(t, n, read) < before+40; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the node did not read the first connection's 40 messages")
				}
			}
		}
	}
	cut := f2
	if msg, code := cut.expectClose(); code != websocket.StatusCode(protocol.CloseRateLimited) || !strings.Contains(msg, "this user") {
		t.Fatalf("the flooding user's connection closed with %v after %q, want %d for the per-user rate", code, msg, protocol.CloseRateLimited)
	}
	if err := doc.RootMap().Set("k", "after"); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit("after"); err != nil {
		t.Fatal(err)
	}
	gp.syncDoc(id, doc, ss, false)
	if v := metricValue(t, n, `plait_limit_hits_total{limit="user_messages"}`); v < 1 {
		t.Fatalf("user_messages limit hits %v", v)
	}
	if v := metricValue(t, n, `plait_limit_hits_total{limit="connections_per_user"}`); v != 1 {
		t.Fatalf("connections_per_user limit hits %v, want 1", v)
	}
}

// TestRepeatOffenderBlocked: an address that keeps failing to
// authenticate is blocked (429 with Retry-After on everything but health
// checks), counted in /metrics.
func TestRepeatOffenderBlocked(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""), func(c *Config) { c.BlockThreshold, c.BlockWindow, c.BlockDuration = 5, time.Minute, time.Minute })
	for range 5 {
		if _, code, _ := dialWS(t, n.URL, bearer("not-a-token")); code != 401 {
			t.Fatalf("a forged token: %d", code)
		}
	}
	resp, err := http.Get(n.HTTP + "/api/me")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a blocked address: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if _, code := httpGet(t, n.HTTP+"/healthz", nil); code != 200 {
		t.Fatalf("health checks from a blocked address: %d", code)
	}
	waitAudit(t, n, `"event":"blocked"`) // written just after the block takes effect
	if v := metricValue(t, n, `plait_blocked_sources_total`); v != 1 {
		t.Fatalf("plait_blocked_sources_total %v, want 1", v)
	}
}

// TestMalformedFramesGetAddressBlocked: connections that keep sending
// garbage get their address blocked, on an anonymous node too; the block
// is in the audit log with the connections' ids.
func TestMalformedFramesGetAddressBlocked(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) { c.BlockThreshold, c.BlockWindow, c.BlockDuration = 3, time.Minute, time.Minute })
	for i := range 3 {
		p := dialRaw(t, n.URL, fmt.Sprint("junk-", i))
		if err := p.sendRaw(websocket.MessageBinary, []byte{0xff, 0x00, 0x13}); err != nil {
			t.Fatal(err)
		}
		if _, code := p.expectClose(); code != websocket.StatusCode(protocol.CloseMalformedMessage) {
			t.Fatalf("garbage: closed %v, want %d", code, protocol.CloseMalformedMessage)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, code, _ := dialWS(t, n.URL, nil)
		if code == 429 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 3 malformed frames the address may still connect (%d)", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The block takes effect before its line is written.
	waitAudit(t, n, `"event":"blocked"`)
	if log := auditLog(t, n); !strings.Contains(log, `"event":"malformed"`) || !strings.Contains(log, `"conn":`) {
		t.Fatalf("audit log:\n%s", log)
	}
}

// TestAnonymousNodeRefusesRebinding: an anonymous loopback node refuses an
// upgrade whose Host is not a loopback name (a page re-pointing its own
// name at 127.0.0.1 would pass the same-origin check), and accepts
// localhost.
func TestAnonymousNodeRefusesRebinding(t *testing.T) {
	n := startNode(t, t.TempDir())
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(n.HTTP, "http://"))
	dial := func(host string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, n.URL, &websocket.DialOptions{Host: host, HTTPHeader: http.Header{"Origin": {"http://" + host}}})
		if err == nil {
			ws.CloseNow()
			return 101
		}
		if resp == nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if code := dial("evil.example:" + port); code != 403 {
		t.Fatalf("a rebinding page: %d, want 403", code)
	}
	if code := dial("localhost:" + port); code != 101 {
		t.Fatalf("localhost: %d, want 101", code)
	}
}

// TestCookieRefreshKeepsRefreshTokenInCookie: a browser refreshing with its
// cookie gets new cookies, and the JSON answer carries no refresh token a
// script could read.
func TestCookieRefreshKeepsRefreshTokenInCookie(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""))
	br, _, _ := login(t, e, n, n, "cookie")
	req, _ := http.NewRequest("POST", n.HTTP+"/auth/refresh", nil)
	resp, err := br.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("refresh by cookie: %d %v", resp.StatusCode, err)
	}
	if out["refresh_token"] != nil || out["access_token"] == nil {
		t.Fatalf("refresh by cookie answered %v: want an access token and no refresh token", out)
	}
	set := false
	for _, ck := range resp.Cookies() {
		set = set || (ck.Name == refreshCookie && ck.Value != "")
	}
	if !set {
		t.Fatal("refresh by cookie set no new refresh cookie")
	}
}

// metricsText returns the node's /metrics page.
func metricsText(t *testing.T, n *testNode) string {
	t.Helper()
	body, code := httpGet(t, n.HTTP+"/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	return body
}
