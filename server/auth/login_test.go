package auth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/auth/boltauth"
)

// publicHost is the name the test browser uses for the Plait nodes; its
// transport sends it to whichever node the test picks, as a load balancer
// would.
const (
	publicHost = "plait.test"
	publicURL  = "http://" + publicHost
)

// newStore is the TokenStore of a test: the embedded store a single node
// runs on. Nodes of one test share it, as a cluster shares its store.
func newStore(t testing.TB) auth.TokenStore {
	t.Helper()
	s, err := boltauth.Open(filepath.Join(t.TempDir(), "auth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// idp is a mockoidc provider whose token endpoint the tests can watch and
// tamper with.
type idp struct {
	m          *mockoidc.MockOIDC
	tokenCalls atomic.Int32 // every request to the token endpoint
	mu         sync.Mutex
	rewrite    func(t *testing.T, resp map[string]any) // applied to successful token responses
	t          *testing.T                              // of the rewrite; it runs on the server's goroutine: t.Error, never t.Fatal
}

func startIdP(t *testing.T) *idp {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{m: m}
	if err := m.AddMiddleware(p.tokenMiddleware); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return p
}

func (p *idp) setRewrite(t *testing.T, f func(t *testing.T, resp map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rewrite, p.t = f, t
}

func (p *idp) tokenMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != mockoidc.TokenEndpoint {
			next.ServeHTTP(w, r)
			return
		}
		p.tokenCalls.Add(1)
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		p.mu.Lock()
		rewrite, t := p.rewrite, p.t
		p.mu.Unlock()
		if rec.Code == http.StatusOK && rewrite != nil {
			var resp map[string]any
			if err := json.Unmarshal(body, &resp); err != nil {
				panic(err)
			}
			rewrite(t, resp)
			var err error
			if body, err = json.Marshal(resp); err != nil {
				panic(err)
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
}

// resign re-signs the response's ID token with the provider's key after
// mutate changed its claims: a token the provider could have issued.
func (p *idp) resign(mutate func(c jwt.MapClaims)) func(t *testing.T, resp map[string]any) {
	return func(t *testing.T, resp map[string]any) {
		claims := idTokenClaims(t, resp)
		mutate(claims)
		signed, err := p.m.Keypair.SignJWT(claims)
		if err != nil {
			t.Error(err)
			return
		}
		resp["id_token"] = signed
	}
}

func idTokenClaims(t *testing.T, resp map[string]any) jwt.MapClaims {
	raw, _ := resp["id_token"].(string)
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err != nil {
		t.Errorf("mockoidc's id_token: %v", err)
	}
	return claims
}

// loginCookie is the cookie the test node keeps a login's state in, as
// the Plait node does.
const loginCookie = "plait_login"

// node is one Plait node: an HTTP server adapting Login to the login
// routes as server/node does (the node's Fiber adapter is tested there).
type node struct {
	login *auth.Login
	addr  string

	mu       sync.Mutex
	failures []error
	statuses []int // the response status of each failure
	logins   []auth.User
}

func startNode(t *testing.T, o auth.LoginOptions) *node {
	t.Helper()
	n := &node{}
	l, err := auth.NewLogin(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	n.login = l
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth/{provider}/login", n.begin)
	mux.HandleFunc("GET /auth/{provider}/callback", n.callback)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	n.addr = srv.Listener.Addr().String()
	return n
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (n *node) begin(w http.ResponseWriter, r *http.Request) {
	ls, err := n.login.Start(r.PathValue("provider"), r.URL.Query().Get("return_to"))
	if errors.Is(err, auth.ErrUnknownProvider) {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": err.Error()})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: ls.State, Path: "/auth/",
		MaxAge: int(ls.TTL / time.Second), HttpOnly: true, SameSite: http.SameSiteLaxMode})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, ls.RedirectURL, http.StatusFound)
}

func (n *node) callback(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Path: "/auth/", Expires: time.Unix(0, 0),
		HttpOnly: true, SameSite: http.SameSiteLaxMode})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	q := r.URL.Query()
	cb := auth.Callback{Provider: r.PathValue("provider"), State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error")}
	if c, err := r.Cookie(loginCookie); err == nil {
		cb.Cookie = c.Value
	}
	u, returnTo, err := n.login.Finish(r.Context(), cb)
	if err != nil {
		status, msg := http.StatusInternalServerError, "internal error"
		var le *auth.LoginError
		if errors.As(err, &le) {
			status, msg = loginStatus(le), le.Message
		}
		n.mu.Lock()
		n.failures = append(n.failures, err)
		n.statuses = append(n.statuses, status)
		n.mu.Unlock()
		writeJSON(w, status, map[string]any{"error": msg})
		return
	}
	n.mu.Lock()
	n.logins = append(n.logins, u)
	n.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"user": u, "return_to": returnTo})
}

// loginStatus is the status each refusal is documented to answer with.
func loginStatus(err error) int {
	switch {
	case errors.Is(err, auth.ErrUnknownProvider):
		return http.StatusNotFound
	case errors.Is(err, auth.ErrProviderRefused), errors.Is(err, auth.ErrCodeExchange),
		errors.Is(err, auth.ErrIDToken), errors.Is(err, auth.ErrProviderUser):
		return http.StatusUnauthorized
	}
	return http.StatusBadRequest
}

func (n *node) lastFailure(t *testing.T) error {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.failures) == 0 {
		t.Fatal("no failure was recorded")
	}
	return n.failures[len(n.failures)-1]
}

func (n *node) lastFailureStatus() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.statuses) == 0 {
		return 0
	}
	return n.statuses[len(n.statuses)-1]
}

func (n *node) loginCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.logins)
}

func (n *node) failureCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.failures)
}

func oidcOptions(p *idp, store auth.TokenStore, keys auth.Keys) auth.LoginOptions {
	return auth.LoginOptions{
		PublicURL: publicURL,
		Providers: []auth.ProviderConfig{{Name: "oidc", ClientID: p.m.ClientID, ClientSecret: p.m.ClientSecret, Issuer: p.m.Issuer()}},
		Keys:      keys,
		Store:     store,
	}
}

// browser is a user agent with a cookie jar that stops at every redirect,
// so a test follows (or forges) each hop itself.
type browser struct {
	t      *testing.T
	client *http.Client
	jar    *cookiejar.Jar
	target atomic.Value // string: the node plait.test resolves to
}

func newBrowser(t *testing.T, n *node) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, jar: jar}
	b.use(n)
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == publicHost+":80" {
				addr = b.target.Load().(string)
			}
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true, // a request goes to the node picked now
	}
	b.client = &http.Client{
		Transport:     tr,
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	return b
}

// use makes plait.test reach n.
func (b *browser) use(n *node) { b.target.Store(n.addr) }

type response struct {
	status   int
	location string
	body     map[string]any
	header   http.Header
}

func (b *browser) get(rawURL string) response {
	b.t.Helper()
	return b.do(b.client, rawURL, nil)
}

// getWithCookie sends rawURL with only the given login cookie, outside
// the jar: what an attacker who copied a request would send.
func (b *browser) getWithCookie(rawURL, cookie string) response {
	b.t.Helper()
	c := *b.client
	c.Jar = nil
	return b.do(&c, rawURL, &http.Cookie{Name: loginCookie, Value: cookie})
}

func (b *browser) do(c *http.Client, rawURL string, cookie *http.Cookie) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, location: resp.Header.Get("Location"), header: resp.Header}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			b.t.Fatalf("GET %s: %v in %q", rawURL, err, raw)
		}
	}
	return r
}

// loginCookie is the login cookie in the jar, "" if none.
func (b *browser) loginCookie() string {
	u, _ := url.Parse(publicURL + "/auth/oidc/callback")
	for _, c := range b.jar.Cookies(u) {
		if c.Name == loginCookie {
			return c.Value
		}
	}
	return ""
}

// begin starts a login at the node and returns the provider's
// authorization URL.
func (b *browser) begin(provider, returnTo string) *url.URL {
	b.t.Helper()
	u := publicURL + "/auth/" + provider + "/login"
	if returnTo != "" {
		u += "?return_to=" + url.QueryEscape(returnTo)
	}
	r := b.get(u)
	if r.status != http.StatusFound {
		b.t.Fatalf("begin: status %d %v", r.status, r.body)
	}
	loc, err := url.Parse(r.location)
	if err != nil {
		b.t.Fatal(err)
	}
	return loc
}

// authorize lets the provider authenticate the user and returns the
// callback URL it redirects to.
func (b *browser) authorize(authURL *url.URL) string {
	b.t.Helper()
	r := b.get(authURL.String())
	if r.status != http.StatusFound {
		b.t.Fatalf("provider authorize: status %d %v", r.status, r.body)
	}
	if !strings.HasPrefix(r.location, publicURL+"/auth/oidc/callback?") {
		b.t.Fatalf("provider redirected to %q", r.location)
	}
	return r.location
}

// loginOIDC runs Start and the provider's authorization and returns the
// callback URL, not yet visited.
func (b *browser) loginOIDC(returnTo string) string {
	b.t.Helper()
	return b.authorize(b.begin("oidc", returnTo))
}

func wantError(t *testing.T, r response, status int, msg string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d (%v), want %d %q", r.status, r.body, status, msg)
	}
	if got, _ := r.body["error"].(string); got != msg {
		t.Fatalf("error %q, want %q", got, msg)
	}
}

func wantUser(t *testing.T, r response) map[string]any {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("callback: status %d %v, want 200", r.status, r.body)
	}
	u, _ := r.body["user"].(map[string]any)
	return u
}

// wantCookieCleared checks that r deletes the login cookie.
func wantCookieCleared(t *testing.T, r response) {
	t.Helper()
	for _, line := range r.header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			t.Fatal(err)
		}
		if c.Name == loginCookie {
			if c.Value != "" || c.Path != "/auth/" || !c.HttpOnly || (c.MaxAge >= 0 && !c.Expires.Before(time.Now())) {
				t.Errorf("login cookie not deleted: %q", line)
			}
			return
		}
	}
	t.Errorf("the response does not delete the login cookie: %q", r.header.Values("Set-Cookie"))
}

func setQuery(t *testing.T, rawURL, key, value string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if value == "" {
		q.Del(key)
	} else {
		q.Set(key, value)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func TestLoginOIDCSuccess(t *testing.T) {
	p := startIdP(t)
	p.m.QueueUser(&mockoidc.MockUser{Subject: "alice-sub", Email: "alice@example.com", EmailVerified: true, PreferredUsername: "alice"})
	n := startNode(t, oidcOptions(p, newStore(t), testKeys(t, "k1")))
	b := newBrowser(t, n)

	authURL := b.begin("oidc", "/docs/abc?view=1")
	q := authURL.Query()
	if len(q.Get("state")) != 43 || len(q.Get("nonce")) != 43 {
		t.Errorf("state %q, nonce %q: want 32 random bytes each", q.Get("state"), q.Get("nonce"))
	}
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 {
		t.Errorf("PKCE: challenge %q method %q", q.Get("code_challenge"), q.Get("code_challenge_method"))
	}
	if q.Get("redirect_uri") != publicURL+"/auth/oidc/callback" || q.Get("client_id") != p.m.ClientID {
		t.Errorf("redirect_uri %q client_id %q", q.Get("redirect_uri"), q.Get("client_id"))
	}
	if strings.Contains(b.loginCookie(), q.Get("state")) || b.loginCookie() == "" {
		t.Error("the login cookie is missing or shows the state in clear")
	}
	r := b.get(b.authorize(authURL))
	u := wantUser(t, r)
	if u["ID"] != "oidc:alice-sub" || u["Provider"] != "oidc" || u["Subject"] != "alice-sub" ||
		u["Email"] != "alice@example.com" || u["Name"] != "alice" {
		t.Errorf("user %v", u)
	}
	if r.body["return_to"] != "/docs/abc?view=1" {
		t.Errorf("return_to %v", r.body["return_to"])
	}
	if b.loginCookie() != "" {
		t.Error("the login cookie survived the callback")
	}
	wantCookieCleared(t, r)
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("callback headers %v", r.header)
	}
	if got := n.failureCount(); got != 0 {
		t.Errorf("%d failures", got)
	}
}

func TestLoginStateMismatch(t *testing.T) {
	p := startIdP(t)
	n := startNode(t, oidcOptions(p, newStore(t), testKeys(t, "k1")))
	b := newBrowser(t, n)

	for name, state := range map[string]string{
		"other state":   strings.Repeat("A", 43),
		"missing state": "",
		"state prefix":  "x",
	} {
		t.Run(name, func(t *testing.T) {
			callback := b.loginOIDC("/")
			cookie := b.loginCookie()
			r := b.get(setQuery(t, callback, "state", state))
			wantError(t, r, http.StatusBadRequest, "state mismatch")
			wantCookieCleared(t, r)
			if err := n.lastFailure(t); !errors.Is(err, auth.ErrStateMismatch) || n.lastFailureStatus() != http.StatusBadRequest {
				t.Errorf("failure got %v with status %d", err, n.lastFailureStatus())
			}
			if b.loginCookie() != "" {
				t.Error("the login cookie survived a failed callback")
			}
			// The real state still works only with the cookie, which the
			// failed callback cleared: the login must be started again.
			wantError(t, b.get(callback), http.StatusBadRequest, auth.ErrNoLogin.Error())
			// With the cookie put back, the genuine callback goes through:
			// the mismatch did not spend the state.
			if r := b.getWithCookie(callback, cookie); r.status != http.StatusOK {
				t.Errorf("genuine callback after a forged one: %d %v", r.status, r.body)
			}
		})
	}
	if got := p.tokenCalls.Load(); got == 0 {
		t.Fatal("the genuine callbacks did not reach the token endpoint")
	}
}

func TestLoginStateMismatchNeverExchanges(t *testing.T) {
	p := startIdP(t)
	n := startNode(t, oidcOptions(p, newStore(t), testKeys(t, "k1")))
	b := newBrowser(t, n)
	callback := b.loginOIDC("/")
	wantError(t, b.get(setQuery(t, callback, "state", "forged")), http.StatusBadRequest, "state mismatch")
	if got := p.tokenCalls.Load(); got != 0 {
		t.Errorf("a callback with a forged state reached the token endpoint %d times", got)
	}
}

func TestLoginReplayedCallback(t *testing.T) {
	p := startIdP(t)
	store := newStore(t)
	n := startNode(t, oidcOptions(p, store, testKeys(t, "k1")))
	b := newBrowser(t, n)

	callback := b.loginOIDC("/")
	cookie := b.loginCookie()
	wantUser(t, b.get(callback))
	calls := p.tokenCalls.Load()

	// The same cookie and the same query again (copied from the first
	// request): refused by the single-use state, before the code reaches
	// the provider (which would refuse a used code too).
	wantError(t, b.getWithCookie(callback, cookie), http.StatusBadRequest, "login already completed (replayed callback)")
	if err := n.lastFailure(t); !errors.Is(err, auth.ErrLoginReplayed) {
		t.Errorf("failure got %v", err)
	}
	if got := p.tokenCalls.Load(); got != calls {
		t.Errorf("the replay reached the token endpoint (%d calls, %d before)", got, calls)
	}
	if got := n.loginCount(); got != 1 {
		t.Errorf("%d logins, want 1", got)
	}
}

func TestLoginCallbackOnSecondNode(t *testing.T) {
	p := startIdP(t)
	p.m.QueueUser(&mockoidc.MockUser{Subject: "bob-sub", Email: "bob@example.com"})
	store, keys := newStore(t), testKeys(t, "k1")
	a := startNode(t, oidcOptions(p, store, keys))
	bn := startNode(t, oidcOptions(p, store, keys))
	b := newBrowser(t, a)

	callback := b.loginOIDC("/after")
	cookie := b.loginCookie()
	b.use(bn) // the load balancer sends the callback to the other node
	r := b.get(callback)
	if u := wantUser(t, r); u["ID"] != "oidc:bob-sub" {
		t.Errorf("user %v", u)
	}
	if r.body["return_to"] != "/after" {
		t.Errorf("return_to %v", r.body["return_to"])
	}
	if a.loginCount() != 0 || bn.loginCount() != 1 {
		t.Errorf("logins: node A %d, node B %d", a.loginCount(), bn.loginCount())
	}
	// A replay on the first node is refused: the store is shared.
	b.use(a)
	wantError(t, b.getWithCookie(callback, cookie), http.StatusBadRequest, auth.ErrLoginReplayed.Error())

	// A node with other keys cannot read the cookie.
	other := startNode(t, oidcOptions(p, store, testKeys(t, "k2")))
	b.use(a)
	callback = b.loginOIDC("/")
	b.use(other)
	wantError(t, b.get(callback), http.StatusBadRequest, auth.ErrNoLogin.Error())
}

// otherKey is an RSA key that is not the provider's, with its key id.
var otherKey = sync.OnceValues(func() (*mockoidc.Keypair, error) {
	return mockoidc.RandomKeypair(2048)
})

func TestLoginIDTokenChecks(t *testing.T) {
	p := startIdP(t)
	n := startNode(t, oidcOptions(p, newStore(t), testKeys(t, "k1")))
	b := newBrowser(t, n)
	now := func() float64 { return float64(time.Now().Unix()) }

	cases := []struct {
		name    string
		rewrite func(t *testing.T, resp map[string]any)
		before  func() // runs before the login; undone by after
		after   func()
		want    error
		email   string // of a successful login
	}{
		{name: "re-signed unchanged (control)", rewrite: p.resign(func(jwt.MapClaims) {}), email: "carol@example.com"},
		{name: "email not verified", rewrite: p.resign(func(c jwt.MapClaims) { c["email_verified"] = false })},
		{name: "email not verified, as a string", rewrite: p.resign(func(c jwt.MapClaims) { c["email_verified"] = "false" })},
		{name: "email verified, as a string", rewrite: p.resign(func(c jwt.MapClaims) { c["email_verified"] = "true" }), email: "carol@example.com"},
		{name: "email_verified not a boolean", rewrite: p.resign(func(c jwt.MapClaims) { c["email_verified"] = 1 }), email: "carol@example.com"},
		{name: "wrong audience", rewrite: p.resign(func(c jwt.MapClaims) { c["aud"] = "some-other-client" }), want: auth.ErrIDToken},
		{name: "wrong audience list", rewrite: p.resign(func(c jwt.MapClaims) { c["aud"] = []string{"a", "b"} }), want: auth.ErrIDToken},
		{name: "two audiences without azp", rewrite: p.resign(func(c jwt.MapClaims) { c["aud"] = []string{p.m.ClientID, "b"} }), want: auth.ErrIDToken},
		{name: "two audiences, azp is us", rewrite: p.resign(func(c jwt.MapClaims) {
			c["aud"] = []string{p.m.ClientID, "b"}
			c["azp"] = p.m.ClientID
		}), email: "carol@example.com"},
		{name: "azp is another party", rewrite: p.resign(func(c jwt.MapClaims) { c["azp"] = "b" }), want: auth.ErrIDToken},
		{name: "wrong issuer", rewrite: p.resign(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com/oidc" }), want: auth.ErrIDToken},
		{name: "issuer with trailing slash", rewrite: p.resign(func(c jwt.MapClaims) { c["iss"] = p.m.Issuer() + "/" }), want: auth.ErrIDToken},
		{name: "expired", rewrite: p.resign(func(c jwt.MapClaims) { c["exp"] = now() - 60 }), want: auth.ErrIDToken},
		{name: "expired by the provider's clock", before: func() { p.m.FastForward(-time.Hour) }, after: func() { p.m.FastForward(time.Hour) }, want: auth.ErrIDToken},
		{name: "no exp", rewrite: p.resign(func(c jwt.MapClaims) { delete(c, "exp") }), want: auth.ErrIDToken},
		{name: "exp not a number", rewrite: p.resign(func(c jwt.MapClaims) { c["exp"] = "tomorrow" }), want: auth.ErrIDToken},
		{name: "not yet valid", rewrite: p.resign(func(c jwt.MapClaims) { c["nbf"] = now() + 3600; c["exp"] = now() + 7200 }), want: auth.ErrIDToken},
		{name: "nonce mismatch", rewrite: p.resign(func(c jwt.MapClaims) { c["nonce"] = "another-login" }), want: auth.ErrIDToken},
		{name: "no nonce", rewrite: p.resign(func(c jwt.MapClaims) { delete(c, "nonce") }), want: auth.ErrIDToken},
		{name: "no sub", rewrite: p.resign(func(c jwt.MapClaims) { delete(c, "sub") }), want: auth.ErrIDToken},
		{name: "sub with a newline", rewrite: p.resign(func(c jwt.MapClaims) { c["sub"] = "a\nb" }), want: auth.ErrIDToken},
		{name: "signed by another key with the provider's key id", rewrite: func(t *testing.T, resp map[string]any) {
			k, err := otherKey()
			if err != nil {
				t.Error(err)
				return
			}
			kid, _ := p.m.Keypair.KeyID()
			forged := *k
			forged.Kid = kid
			s, err := forged.SignJWT(idTokenClaims(t, resp))
			if err != nil {
				t.Error(err)
				return
			}
			resp["id_token"] = s
		}, want: auth.ErrIDToken},
		{name: "alg none", rewrite: func(t *testing.T, resp map[string]any) {
			body, _ := json.Marshal(idTokenClaims(t, resp))
			resp["id_token"] = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
				base64.RawURLEncoding.EncodeToString(body) + "."
		}, want: auth.ErrIDToken},
		{name: "signature stripped", rewrite: func(t *testing.T, resp map[string]any) {
			raw := resp["id_token"].(string)
			resp["id_token"] = raw[:strings.LastIndex(raw, ".")+1]
		}, want: auth.ErrIDToken},
		{name: "claims swapped after signing", rewrite: func(t *testing.T, resp map[string]any) {
			parts := strings.Split(resp["id_token"].(string), ".")
			c := idTokenClaims(t, resp)
			c["sub"] = "mallory"
			body, _ := json.Marshal(c)
			parts[1] = base64.RawURLEncoding.EncodeToString(body)
			resp["id_token"] = strings.Join(parts, ".")
		}, want: auth.ErrIDToken},
		{name: "no id_token", rewrite: func(t *testing.T, resp map[string]any) { delete(resp, "id_token") }, want: auth.ErrIDToken},
		{name: "id_token not a string", rewrite: func(t *testing.T, resp map[string]any) { resp["id_token"] = 12345 }, want: auth.ErrCodeExchange},
		{name: "no access_token", rewrite: func(t *testing.T, resp map[string]any) { delete(resp, "access_token") }, want: auth.ErrCodeExchange},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p.setRewrite(t, tc.rewrite)
			defer p.setRewrite(nil, nil)
			if tc.before != nil {
				tc.before()
				defer tc.after()
			}
			p.m.QueueUser(&mockoidc.MockUser{Subject: "carol-sub", Email: "carol@example.com", EmailVerified: true})
			r := b.get(b.loginOIDC("/"))
			if tc.want == nil {
				if u := wantUser(t, r); u["ID"] != "oidc:carol-sub" || u["Email"] != tc.email {
					t.Errorf("user %v, want email %q", u, tc.email)
				}
				return
			}
			wantError(t, r, http.StatusUnauthorized, tc.want.Error())
			if err := n.lastFailure(t); !errors.Is(err, tc.want) || n.lastFailureStatus() != http.StatusUnauthorized {
				t.Errorf("failure got %v with status %d, want %v", err, n.lastFailureStatus(), tc.want)
			}
		})
	}
	// The node survived all of it.
	wantUser(t, b.get(b.loginOIDC("/")))
}

func TestLoginCodeRejectedIsRedacted(t *testing.T) {
	p := startIdP(t)
	n := startNode(t, oidcOptions(p, newStore(t), testKeys(t, "k1")))
	b := newBrowser(t, n)
	const code = "bogus-code-f00dfeed"
	r := b.get(setQuery(t, b.loginOIDC("/"), "code", code))
	wantError(t, r, http.StatusUnauthorized, auth.ErrCodeExchange.Error())
	err := n.lastFailure(t)
	if !errors.Is(err, auth.ErrCodeExchange) {
		t.Errorf("failure got %v", err)
	}
	// mockoidc answers "Invalid code: <code>": it must not reach the audit
	// log.
	if strings.Contains(err.Error(), code) || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("failure error %q: want the OAuth error code without the code", err)
	}
	if p.tokenCalls.Load() == 0 {
		t.Error("the code never reached the provider")
	}
}

func TestLoginCallbackRefusals(t *testing.T) {
	p := startIdP(t)
	n := startNode(t, oidcOptions(p, newStore(t), testKeys(t, "k1")))
	b := newBrowser(t, n)

	t.Run("provider error", func(t *testing.T) {
		callback := b.loginOIDC("/")
		r := b.get(setQuery(t, setQuery(t, callback, "code", ""), "error", "access_denied"))
		wantError(t, r, http.StatusUnauthorized, "the identity provider refused the login: access_denied")
		if err := n.lastFailure(t); !errors.Is(err, auth.ErrProviderRefused) {
			t.Errorf("failure got %v", err)
		}
		if b.loginCookie() != "" {
			t.Error("the login cookie survived")
		}
		r = b.get(publicURL + "/auth/oidc/callback?error=" + url.QueryEscape("<script>alert(1)</script>"))
		wantError(t, r, http.StatusUnauthorized, auth.ErrProviderRefused.Error())
	})
	t.Run("no cookie", func(t *testing.T) {
		callback := b.loginOIDC("/")
		b.jar.SetCookies(&url.URL{Scheme: "http", Host: publicHost, Path: "/auth/"},
			[]*http.Cookie{{Name: loginCookie, Path: "/auth/", MaxAge: -1}})
		wantError(t, b.get(callback), http.StatusBadRequest, auth.ErrNoLogin.Error())
	})
	t.Run("tampered cookie", func(t *testing.T) {
		callback := b.loginOIDC("/")
		c := []byte(b.loginCookie())
		c[len(c)/2] ^= 'A' ^ 'B'
		wantError(t, b.getWithCookie(callback, string(c)), http.StatusBadRequest, auth.ErrNoLogin.Error())
		if err := n.lastFailure(t); !errors.Is(err, auth.ErrNoLogin) || !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("failure got %v", err)
		}
	})
	t.Run("missing code", func(t *testing.T) {
		wantError(t, b.get(setQuery(t, b.loginOIDC("/"), "code", "")), http.StatusBadRequest, auth.ErrMissingCode.Error())
	})
	t.Run("unknown provider", func(t *testing.T) {
		wantError(t, b.get(publicURL+"/auth/facebook/login"), http.StatusNotFound, auth.ErrUnknownProvider.Error())
		wantError(t, b.get(publicURL+"/auth/facebook/callback?code=x&state=y"), http.StatusNotFound, auth.ErrUnknownProvider.Error())
	})
}

func TestLoginCookieExpires(t *testing.T) {
	p := startIdP(t)
	var skew atomic.Int64
	o := oidcOptions(p, newStore(t), testKeys(t, "k1"))
	o.StateTTL = 2 * time.Minute
	o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	n := startNode(t, o)
	b := newBrowser(t, n)

	callback := b.loginOIDC("/")
	cookie := b.loginCookie()
	skew.Store(int64(2*time.Minute + time.Second))
	wantError(t, b.get(callback), http.StatusBadRequest, auth.ErrNoLogin.Error())
	skew.Store(int64(time.Minute))
	// Within the TTL the same cookie still works (the expiry above was
	// the clock's doing, not something else).
	wantUser(t, b.getWithCookie(callback, cookie))
}

func TestLoginReturnTo(t *testing.T) {
	p := startIdP(t)
	n := startNode(t, oidcOptions(p, newStore(t), testKeys(t, "k1")))
	b := newBrowser(t, n)
	for in, want := range map[string]string{
		"":                              "/",
		"/":                             "/",
		"/docs/1?x=y#frag":              "/docs/1?x=y#frag",
		"//evil.com":                    "/",
		"//evil.com/path":               "/",
		"/\\evil.com":                   "/",
		"/\t/evil.com":                  "/",
		"/\n/evil.com":                  "/",
		"https://evil.com/":             "/",
		"javascript:alert(1)":           "/",
		"evil.com":                      "/",
		"/" + strings.Repeat("a", 1100): "/",
	} {
		r := b.get(b.loginOIDC(in))
		wantUser(t, r)
		if r.body["return_to"] != want {
			t.Errorf("return_to %q: got %q, want %q", in, r.body["return_to"], want)
		}
	}
}

// The login's state fits a cookie (under 4 KiB with its attributes) even
// with a long return_to, lives StateTTL, and the provider is told the
// callback under the public URL. The cookie's attributes are the node's
// (server/node TestLoginCookieAttributes).
func TestLoginStartState(t *testing.T) {
	p := startIdP(t)
	for _, public := range []string{"http://plait.test", "https://plait.example.com/", "https://example.com/plait"} {
		o := oidcOptions(p, newStore(t), testKeys(t, "a-rather-long-key-id-2026-11"))
		o.PublicURL = public
		l, err := auth.NewLogin(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		for _, returnTo := range []string{"/", "/" + strings.Repeat("%F0%9F%98%80", 85), "/" + strings.Repeat("x", 3000)} {
			ls, err := l.Start("oidc", returnTo)
			if err != nil {
				t.Fatal(err)
			}
			if len(ls.State) >= 4096-200 {
				t.Errorf("login state is %d bytes with a %d-byte return_to", len(ls.State), len(returnTo))
			}
			if ls.TTL != auth.DefaultStateTTL {
				t.Errorf("TTL %v", ls.TTL)
			}
			if loc, _ := url.Parse(ls.RedirectURL); loc.Query().Get("redirect_uri") != strings.TrimSuffix(public, "/")+"/auth/oidc/callback" {
				t.Errorf("redirect_uri %q", loc.Query().Get("redirect_uri"))
			}
		}
	}
	if _, err := startNode(t, oidcOptions(p, newStore(t), testKeys(t, "k1"))).login.Start("facebook", "/"); !errors.Is(err, auth.ErrUnknownProvider) {
		t.Errorf("Start of an unknown provider: %v", err)
	}
}

func TestNewLoginRefuses(t *testing.T) {
	p := startIdP(t)
	good := func() auth.LoginOptions {
		return oidcOptions(p, newStore(t), testKeys(t, "k1"))
	}
	oidc := good().Providers[0]
	for _, tc := range []struct {
		name string
		edit func(o *auth.LoginOptions)
		want string
	}{
		{"missing secret", func(o *auth.LoginOptions) { o.Providers[0].ClientSecret = "" }, `"oidc": missing client secret (ClientSecret)`},
		{"missing github secret", func(o *auth.LoginOptions) {
			o.Providers = append(o.Providers, auth.ProviderConfig{Name: "github", ClientID: "id"})
		}, `"github": missing client secret (ClientSecret)`},
		{"missing client id", func(o *auth.LoginOptions) { o.Providers[0].ClientID = "" }, `"oidc": missing client id (ClientID)`},
		{"missing google id", func(o *auth.LoginOptions) {
			o.Providers = []auth.ProviderConfig{{Name: "google", ClientSecret: "s"}}
		}, `"google": missing client id (ClientID)`},
		{"missing issuer", func(o *auth.LoginOptions) { o.Providers[0].Issuer = "" }, "missing issuer URL (Issuer)"},
		{"issuer over plain http", func(o *auth.LoginOptions) { o.Providers[0].Issuer = "http://idp.example.com" }, "want https"},
		{"issuer unreachable", func(o *auth.LoginOptions) { o.Providers[0].Issuer = "http://127.0.0.1:1/oidc" }, "failed to discover issuer"},
		{"issuer mismatch", func(o *auth.LoginOptions) {
			o.Providers[0].Issuer = strings.Replace(p.m.Issuer(), "127.0.0.1", "localhost", 1)
		}, "failed to discover issuer"},
		{"issuer on github", func(o *auth.LoginOptions) {
			o.Providers = []auth.ProviderConfig{{Name: "github", ClientID: "i", ClientSecret: "s", Issuer: "https://x"}}
		}, "Issuer is for oidc only"},
		{"unknown provider", func(o *auth.LoginOptions) { o.Providers[0].Name = "facebook" }, `"facebook": unknown`},
		{"duplicate provider", func(o *auth.LoginOptions) { o.Providers = append(o.Providers, oidc) }, "configured twice"},
		{"relative public URL", func(o *auth.LoginOptions) { o.PublicURL = "/plait" }, "PublicURL"},
		{"public URL without scheme", func(o *auth.LoginOptions) { o.PublicURL = "plait.example.com" }, "PublicURL"},
		{"public URL ftp", func(o *auth.LoginOptions) { o.PublicURL = "ftp://plait.example.com" }, "PublicURL"},
		{"public URL with query", func(o *auth.LoginOptions) { o.PublicURL = "https://plait.example.com/?a=b" }, "PublicURL"},
		{"no keys", func(o *auth.LoginOptions) { o.Keys = auth.Keys{} }, "Keys"},
		{"no store", func(o *auth.LoginOptions) { o.Store = nil }, "Store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good()
			o.Providers = append([]auth.ProviderConfig(nil), o.Providers...)
			tc.edit(&o)
			_, err := auth.NewLogin(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewLogin = %v, want an error with %q", err, tc.want)
			}
		})
	}
	l, err := auth.NewLogin(context.Background(), good())
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Providers(); len(got) != 1 || got[0] != "oidc" {
		t.Errorf("Providers() = %v", got)
	}
}

// fakeProviders serves GitHub's and Google's endpoints over TLS; the
// Login's HTTP client dials it for their host names.
type fakeProviders struct {
	srv         *httptest.Server
	client      *http.Client
	code        string
	githubID    atomic.Int64
	googleBreak atomic.Bool  // the user info endpoint drops the connection
	tokenForm   atomic.Value // url.Values of the last token request
}

func startFakeProviders(t *testing.T) *fakeProviders {
	t.Helper()
	f := &fakeProviders{code: "the-code-" + fmt.Sprint(time.Now().UnixNano())}
	f.githubID.Store(12345)
	mux := http.NewServeMux()
	token := func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.tokenForm.Store(r.PostForm)
		if r.PostForm.Get("code") != f.code {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"bad_verification_code"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"tok-`+r.Host+`","token_type":"bearer"}`)
	}
	mux.HandleFunc("github.com/login/oauth/access_token", token)
	mux.HandleFunc("oauth2.googleapis.com/token", token)
	mux.HandleFunc("api.github.com/user", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-github.com" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		u := map[string]any{"login": "octocat", "name": "", "email": nil}
		if id := f.githubID.Load(); id != 0 {
			u["id"] = id
		}
		_ = json.NewEncoder(w).Encode(u)
	})
	mux.HandleFunc("api.github.com/user/emails", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `[{"email":"old@example.com","primary":false,"verified":true},{"email":"octo@example.com","primary":true,"verified":true}]`)
	})
	mux.HandleFunc("www.googleapis.com/oauth2/v2/userinfo", func(w http.ResponseWriter, r *http.Request) {
		if f.googleBreak.Load() {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		if r.URL.Query().Get("access_token") != "tok-oauth2.googleapis.com" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, `{"id":"1098765","email":"dave@example.com","verified_email":false,"name":"Dave"}`)
	})
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	tr := f.srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com" // the test certificate's name
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		switch addr {
		case "github.com:443", "api.github.com:443", "oauth2.googleapis.com:443", "www.googleapis.com:443":
			addr = f.srv.Listener.Addr().String()
		}
		return d.DialContext(ctx, network, addr)
	}
	f.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return f
}

func TestLoginGitHubAndGoogle(t *testing.T) {
	p := startIdP(t)
	f := startFakeProviders(t)
	o := oidcOptions(p, newStore(t), testKeys(t, "k1"))
	o.Providers = append(o.Providers,
		auth.ProviderConfig{Name: "github", ClientID: "gh-id", ClientSecret: "gh-secret"},
		auth.ProviderConfig{Name: "google", ClientID: "gg-id", ClientSecret: "gg-secret"})
	o.HTTPClient = f.client
	n := startNode(t, o)
	b := newBrowser(t, n)
	if got := n.login.Providers(); strings.Join(got, ",") != "github,google,oidc" {
		t.Errorf("Providers() = %v", got)
	}

	callback := func(provider string, authURL *url.URL) string {
		if authURL.Query().Get("code_challenge") != "" || authURL.Query().Get("nonce") != "" {
			t.Errorf("%s: PKCE or nonce sent to a provider whose goth session drops them: %s", provider, authURL)
		}
		return publicURL + "/auth/" + provider + "/callback?code=" + f.code + "&state=" + authURL.Query().Get("state")
	}

	t.Run("github", func(t *testing.T) {
		authURL := b.begin("github", "/gh")
		if authURL.Host != "github.com" || authURL.Query().Get("scope") != "read:user user:email" {
			t.Errorf("authorization URL %s", authURL)
		}
		r := b.get(callback("github", authURL))
		u := wantUser(t, r)
		if u["ID"] != "github:12345" || u["Email"] != "octo@example.com" || u["Name"] != "octocat" {
			t.Errorf("user %v", u)
		}
		if r.body["return_to"] != "/gh" {
			t.Errorf("return_to %v", r.body["return_to"])
		}
		form := f.tokenForm.Load().(url.Values)
		if form.Get("redirect_uri") != publicURL+"/auth/github/callback" || form.Has("code_verifier") {
			t.Errorf("token request %v", form)
		}
	})
	t.Run("github user without id", func(t *testing.T) {
		f.githubID.Store(0)
		defer f.githubID.Store(12345)
		wantError(t, b.get(callback("github", b.begin("github", "/"))), http.StatusUnauthorized, auth.ErrProviderUser.Error())
	})
	t.Run("github code refused", func(t *testing.T) {
		authURL := b.begin("github", "/")
		r := b.get(setQuery(t, callback("github", authURL), "code", "nope"))
		wantError(t, r, http.StatusUnauthorized, auth.ErrCodeExchange.Error())
	})
	t.Run("google", func(t *testing.T) {
		authURL := b.begin("google", "/")
		if authURL.Host != "accounts.google.com" || authURL.Query().Get("scope") != "openid profile email" {
			t.Errorf("authorization URL %s", authURL)
		}
		u := wantUser(t, b.get(callback("google", authURL)))
		// Google says the address is not verified: it is dropped.
		if u["ID"] != "google:1098765" || u["Email"] != "" || u["Name"] != "Dave" {
			t.Errorf("user %v", u)
		}
	})
	t.Run("google user request fails without leaking the token", func(t *testing.T) {
		// goth puts the access token in the user info URL; the HTTP
		// client's error quotes the URL.
		f.googleBreak.Store(true)
		defer f.googleBreak.Store(false)
		wantError(t, b.get(callback("google", b.begin("google", "/"))), http.StatusUnauthorized, auth.ErrProviderUser.Error())
		err := n.lastFailure(t)
		if !errors.Is(err, auth.ErrProviderUser) || strings.Contains(err.Error(), "tok-") ||
			!strings.Contains(err.Error(), "https://www.googleapis.com/oauth2/v2/userinfo") {
			t.Errorf("failure got %q: want the endpoint without the access token", err)
		}
	})
	t.Run("started with another provider", func(t *testing.T) {
		authURL := b.begin("github", "/")
		r := b.get(publicURL + "/auth/oidc/callback?code=x&state=" + authURL.Query().Get("state"))
		wantError(t, r, http.StatusBadRequest, auth.ErrWrongProvider.Error())
		if err := n.lastFailure(t); !errors.Is(err, auth.ErrWrongProvider) {
			t.Errorf("failure got %v", err)
		}
	})
}

// Sanity check of the test provider's PKCE enforcement, which the success
// test relies on: without the verifier, mockoidc refuses the code.
func TestMockOIDCEnforcesPKCE(t *testing.T) {
	p := startIdP(t)
	verifier := "a-verifier-of-at-least-forty-three-characters-long"
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{
		"client_id": {p.m.ClientID}, "response_type": {"code"}, "scope": {"openid"}, "state": {"s"},
		"redirect_uri": {"http://x/cb"}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(p.m.AuthorizationEndpoint() + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	form := url.Values{"client_id": {p.m.ClientID}, "client_secret": {p.m.ClientSecret}, "grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}}
	resp, err = http.PostForm(p.m.TokenEndpoint(), form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte("code verifier")) {
		t.Fatalf("token without verifier: %d %s", resp.StatusCode, body)
	}
}

// brokenStore fails ConsumeOnce, as a store that is down would.
type brokenStore struct{ auth.TokenStore }

func (brokenStore) ConsumeOnce(context.Context, string, time.Duration) (bool, error) {
	return false, errors.New("store unavailable")
}

func TestLoginStoreFailure(t *testing.T) {
	p := startIdP(t)
	n := startNode(t, oidcOptions(p, brokenStore{newStore(t)}, testKeys(t, "k1")))
	b := newBrowser(t, n)
	r := b.get(b.loginOIDC("/"))
	wantError(t, r, http.StatusInternalServerError, "internal error")
	wantCookieCleared(t, r)
	if err := n.lastFailure(t); err == nil || n.lastFailureStatus() != http.StatusInternalServerError {
		t.Errorf("failure got %v with status %d", err, n.lastFailureStatus())
	}
	if p.tokenCalls.Load() != 0 {
		t.Error("the code was exchanged although the state could not be spent")
	}
}
