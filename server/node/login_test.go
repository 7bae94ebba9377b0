package node

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestLoginCookieAttributes checks the login cookie a node sets when a
// login starts (HttpOnly, SameSite=Lax, only for /auth/, ten minutes,
// Secure behind an https public URL, under 4 KiB even with a long
// return_to), that its callback clears it, and the unknown provider's 404.
func TestLoginCookieAttributes(t *testing.T) {
	e := startOIDC(t)
	for _, tc := range []struct {
		public string
		secure bool
	}{
		{"", false},
		{"https://plait.example.com/", true},
	} {
		n := startNode(t, t.TempDir(), e.configure(tc.public))
		for _, returnTo := range []string{"/", "/" + strings.Repeat("%F0%9F%98%80", 85), "/" + strings.Repeat("x", 3000)} {
			resp := hop(t, browser(t), n.HTTP+"/auth/oidc/login?return_to="+url.QueryEscape(returnTo), http.StatusFound)
			sc := resp.Header.Values("Set-Cookie")
			if len(sc) != 1 {
				t.Fatalf("Set-Cookie %q", sc)
			}
			if len(sc[0]) >= 4096 {
				t.Errorf("login cookie is %d bytes with a %d-byte return_to", len(sc[0]), len(returnTo))
			}
			c, err := http.ParseSetCookie(sc[0])
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != loginCookie || c.Path != "/auth/" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode ||
				c.MaxAge != 600 || c.Secure != tc.secure {
				t.Errorf("%q: cookie %q", tc.public, sc[0])
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
			}
		}
		resp := hop(t, browser(t), n.HTTP+"/auth/oidc/callback?state=x&code=y", http.StatusBadRequest)
		c, err := http.ParseSetCookie(resp.Header.Get("Set-Cookie"))
		if err != nil || c.Name != loginCookie || c.Value != "" || c.Path != "/auth/" || c.Expires.Unix() != 0 || c.Secure != tc.secure {
			t.Errorf("%q: the callback's Set-Cookie %q, want the login cookie cleared", tc.public, resp.Header.Get("Set-Cookie"))
		}
		if resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("Referrer-Policy %q", resp.Header.Get("Referrer-Policy"))
		}
		hop(t, browser(t), n.HTTP+"/auth/facebook/login", http.StatusNotFound)
	}
}
