package node

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// tamperingIdP is a mockoidc provider whose token responses a test may
// rewrite: ID tokens re-signed with the provider's own key after a claim
// changed, so each is a token the provider could have issued.
type tamperingIdP struct {
	*oidcEnv
	mu      sync.Mutex
	mutate  func(jwt.MapClaims) // nil: responses pass unchanged
	rewrote int
}

func startTamperingIdP(t *testing.T) *tamperingIdP {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &tamperingIdP{}
	if err := m.AddMiddleware(p.middleware); err != nil {
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
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	kf := filepath.Join(t.TempDir(), "auth.keys")
	if err := os.WriteFile(kf, []byte("k1:"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.oidcEnv = &oidcEnv{m: m, keyFile: kf}
	return p
}

func (p *tamperingIdP) set(mutate func(jwt.MapClaims)) {
	p.mu.Lock()
	p.mutate, p.rewrote = mutate, 0
	p.mu.Unlock()
}

func (p *tamperingIdP) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		mutate := p.mutate
		p.mu.Unlock()
		if r.URL.Path != mockoidc.TokenEndpoint || mutate == nil {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var resp map[string]any
		if rec.Code == http.StatusOK && json.Unmarshal(body, &resp) == nil {
			claims := jwt.MapClaims{}
			if raw, ok := resp["id_token"].(string); ok {
				if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err == nil {
					mutate(claims)
					if signed, err := p.m.Keypair.SignJWT(claims); err == nil {
						resp["id_token"] = signed
						body, _ = json.Marshal(resp)
						p.mu.Lock()
						p.rewrote++
						p.mu.Unlock()
					}
				}
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
}

// callbackURL runs a login up to the provider's redirect back to the
// node and returns the callback URL, the browser holding the login cookie.
func callbackURL(t *testing.T, e *oidcEnv, n *testNode, user string) (*http.Client, string) {
	t.Helper()
	c := browser(t)
	resp := hop(t, c, n.HTTP+"/auth/oidc/login", http.StatusFound)
	e.m.QueueUser(&mockoidc.MockUser{Subject: user, Email: user + "@example.com"})
	resp = hop(t, c, resp.Header.Get("Location"), http.StatusFound)
	return c, resp.Header.Get("Location")
}

// noTokens fails if resp set a token cookie.
func noTokens(t *testing.T, resp *http.Response) {
	t.Helper()
	for _, ck := range resp.Cookies() {
		if (ck.Name == accessCookie || ck.Name == refreshCookie) && ck.Value != "" {
			t.Fatalf("a failed login set %s", ck.Name)
		}
	}
}

// TestLoginRefusalsOnNode drives the login flow of a real node against a
// local OpenID Connect provider and checks each way it must fail: a state
// mismatch, a replayed callback, and ID tokens with the wrong audience or
// issuer, expired, without exp or with another nonce (each otherwise
// valid: signed by the provider's key). Each is refused without tokens and
// audited; the node keeps serving and a good login still works.
func TestLoginRefusalsOnNode(t *testing.T) {
	p := startTamperingIdP(t)
	n := startNode(t, t.TempDir(), p.configure(""), func(c *Config) { c.BlockThreshold = 0 })

	t.Run("StateMismatch", func(t *testing.T) {
		c, cb := callbackURL(t, p.oidcEnv, n, "sam")
		u, _ := url.Parse(cb)
		q := u.Query()
		q.Set("state", strings.Repeat("A", len(q.Get("state"))))
		u.RawQuery = q.Encode()
		resp := hop(t, c, u.String(), http.StatusBadRequest)
		noTokens(t, resp)
	})

	t.Run("ReplayedCallback", func(t *testing.T) {
		c, cb := callbackURL(t, p.oidcEnv, n, "rex")
		nu, _ := url.Parse(n.HTTP + "/auth/")
		var loginCookie *http.Cookie
		for _, ck := range c.Jar.Cookies(nu) {
			if ck.Name == "plait_login" {
				loginCookie = ck
			}
		}
		if loginCookie == nil {
			t.Fatal("no login cookie")
		}
		hop(t, c, cb, http.StatusFound) // the real callback: logged in
		c.Jar.SetCookies(nu, []*http.Cookie{{Name: "plait_login", Value: loginCookie.Value, Path: "/auth/"}})
		resp := hop(t, c, cb, http.StatusBadRequest)
		noTokens(t, resp)
	})

	for name, mutate := range map[string]func(jwt.MapClaims){
		"WrongAudience": func(c jwt.MapClaims) { c["aud"] = "some-other-app" },
		"WrongIssuer":   func(c jwt.MapClaims) { c["iss"] = "https://evil.example" },
		"Expired": func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
			c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
		},
		"NoExp":      func(c jwt.MapClaims) { delete(c, "exp") },
		"OtherNonce": func(c jwt.MapClaims) { c["nonce"] = "not-the-one-we-sent" },
	} {
		t.Run(name, func(t *testing.T) {
			c, cb := callbackURL(t, p.oidcEnv, n, "tom")
			p.set(mutate)
			defer p.set(nil)
			resp := hop(t, c, cb, http.StatusUnauthorized)
			noTokens(t, resp)
			p.mu.Lock()
			rewrote := p.rewrote
			p.mu.Unlock()
			if rewrote != 1 {
				t.Fatalf("the provider's token response was rewritten %d times, want 1", rewrote)
			}
		})
	}

	// Still serving, and a good login (through the same rewriting path,
	// unchanged) works: the refusals above come from the changed claims.
	p.set(func(jwt.MapClaims) {})
	if _, code := httpGet(t, n.HTTP+"/healthz", nil); code != 200 {
		t.Fatalf("healthz after the failures: %d", code)
	}
	_, access, _ := login(t, p.oidcEnv, n, n, "good")
	if code, _ := api(t, "GET", n.HTTP+"/api/me", access, nil); code != 200 {
		t.Fatalf("a good login after the failures: %d", code)
	}
	if got := strings.Count(auditLog(t, n), `"event":"login_failed"`); got != 7 {
		t.Fatalf("%d login_failed events in the audit log, want 7", got)
	}
}
