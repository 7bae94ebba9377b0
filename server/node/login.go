package node

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/plaithub/plait/server/auth"
)

// Cookie names. The access cookie is what a browser's WebSocket carries
// (browsers cannot set headers on one); the refresh cookie goes only to
// /auth/, and so does the login cookie, which holds the sealed state of a
// login in progress between /auth/:provider/login and its callback.
const (
	accessCookie  = "plait_access"
	refreshCookie = "plait_refresh"
	loginCookie   = "plait_login"
	authPath      = "/auth/" // public-url has no path (Config.check)
)

// handleLogin starts a login: GET /auth/:provider/login?return_to=/path
// sends the browser to the provider with the login's state in the login
// cookie.
func (n *Node) handleLogin(c *fiber.Ctx) error {
	ls, err := n.auth.login.Start(c.Params("provider"), c.Query("return_to"))
	if errors.Is(err, auth.ErrUnknownProvider) {
		return c.Status(fiber.StatusNotFound).JSON(fiber.Map{"error": err.Error()})
	}
	if err != nil {
		return err
	}
	c.Cookie(&fiber.Cookie{
		Name:     loginCookie,
		Value:    ls.State,
		Path:     authPath,
		MaxAge:   max(1, int(ls.TTL/time.Second)),
		Secure:   n.auth.secure,
		HTTPOnly: true,
		SameSite: fiber.CookieSameSiteLaxMode,
	})
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect(ls.RedirectURL, fiber.StatusFound)
}

// handleLoginCallback finishes a login: GET /auth/:provider/callback.
// Every outcome clears the login cookie. A refused login answers
// {"error": "..."} with loginStatus and is audited; a login the provider
// vouched for goes on in onLogin.
func (n *Node) handleLoginCallback(c *fiber.Ctx) error {
	c.Cookie(&fiber.Cookie{
		Name:     loginCookie,
		Path:     authPath,
		Expires:  time.Unix(0, 0),
		Secure:   n.auth.secure,
		HTTPOnly: true,
		SameSite: fiber.CookieSameSiteLaxMode,
	})
	// The callback URL carries the code: keep it out of caches and
	// Referer headers of what the login answers.
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")

	// Copies: Fiber's strings point into buffers it reuses.
	cb := auth.Callback{
		Provider: strings.Clone(c.Params("provider")),
		State:    strings.Clone(c.Query("state")),
		Code:     strings.Clone(c.Query("code")),
		Error:    strings.Clone(c.Query("error")),
		Cookie:   strings.Clone(c.Cookies(loginCookie)),
	}
	u, returnTo, err := n.auth.login.Finish(c.UserContext(), cb)
	if err != nil {
		msg := "internal error" // the token store failed
		c.Status(fiber.StatusInternalServerError)
		var le *auth.LoginError
		if errors.As(err, &le) {
			msg = le.Message
			c.Status(loginStatus(le))
		}
		n.auditRequest(c, auditEvent{Event: "login_failed",
			Reason: cb.Provider + ": " + err.Error(), Code: c.Response().StatusCode(), Offense: true})
		return c.JSON(fiber.Map{"error": msg})
	}
	return n.onLogin(c, u, returnTo)
}

// loginStatus is the HTTP status of a refused login.
func loginStatus(err error) int {
	switch {
	case errors.Is(err, auth.ErrUnknownProvider):
		return fiber.StatusNotFound
	case errors.Is(err, auth.ErrProviderRefused), errors.Is(err, auth.ErrCodeExchange),
		errors.Is(err, auth.ErrIDToken), errors.Is(err, auth.ErrProviderUser):
		return fiber.StatusUnauthorized
	default: // no or bad login cookie, wrong provider, state, replay, no code
		return fiber.StatusBadRequest
	}
}

// onLogin runs after a provider vouched for u: a new login session, its
// tokens in cookies, and back to where the user started.
func (n *Node) onLogin(c *fiber.Ctx, u auth.User, returnTo string) error {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	p, err := n.auth.tokens.Login(ctx, u.ID)
	if err != nil {
		n.log.Error("failed to start a login session", "err", err)
		return fiber.NewError(fiber.StatusServiceUnavailable, "failed to start a login session; retry")
	}
	n.auditRequest(c, auditEvent{Event: "login", User: u.ID, Reason: "provider " + u.Provider})
	n.setTokenCookies(c, p)
	return c.Redirect(returnTo, fiber.StatusFound)
}

func (n *Node) setTokenCookies(c *fiber.Ctx, p auth.Pair) {
	c.Cookie(&fiber.Cookie{Name: accessCookie, Value: p.Access, Path: "/", Expires: p.AccessExpires,
		HTTPOnly: true, Secure: n.auth.secure, SameSite: fiber.CookieSameSiteStrictMode})
	c.Cookie(&fiber.Cookie{Name: refreshCookie, Value: p.Refresh, Path: authPath, Expires: p.RefreshExpires,
		HTTPOnly: true, Secure: n.auth.secure, SameSite: fiber.CookieSameSiteStrictMode})
}

func (n *Node) clearTokenCookies(c *fiber.Ctx) {
	for _, ck := range []struct{ name, path string }{{accessCookie, "/"}, {refreshCookie, authPath}} {
		c.Cookie(&fiber.Cookie{Name: ck.name, Value: "", Path: ck.path, Expires: time.Unix(1, 0),
			HTTPOnly: true, Secure: n.auth.secure, SameSite: fiber.CookieSameSiteStrictMode})
	}
}

// tokenJSON is what /auth/refresh answers.
type tokenJSON struct {
	User           string    `json:"user"`
	AccessToken    string    `json:"access_token"`
	AccessExpires  time.Time `json:"access_expires_at"`
	RefreshToken   string    `json:"refresh_token,omitempty"`
	RefreshExpires time.Time `json:"refresh_expires_at"`
}

// refreshToken reads the refresh token from a JSON body or the cookie.
func refreshToken(c *fiber.Ctx) (tok string, fromCookie bool) {
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if len(c.Body()) > 0 && c.BodyParser(&body) == nil && body.RefreshToken != "" {
		return body.RefreshToken, false
	}
	return c.Cookies(refreshCookie), true
}

// handleRefresh spends a refresh token for a new pair. Reusing a spent
// token revokes its whole login session, on every node.
func (n *Node) handleRefresh(c *fiber.Ctx) error {
	if err := n.checkSameSite(c); err != nil {
		return err
	}
	tok, fromCookie := refreshToken(c)
	if tok == "" {
		return fiber.NewError(fiber.StatusUnauthorized, "no refresh token (JSON {\"refresh_token\": ...} or the plait_refresh cookie)")
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	p, err := n.auth.tokens.Refresh(ctx, tok)
	if err != nil {
		ev := auditEvent{Event: "refresh_failed", Code: fiber.StatusUnauthorized, Reason: err.Error(), Offense: true}
		if errors.Is(err, auth.ErrTokenReused) {
			ev.Event = "token_reuse"
			if fam, ferr := n.auth.tokens.Family(tok); ferr == nil {
				if f, ferr := n.auth.store.Family(ctx, fam); ferr == nil {
					ev.User = f.User
				}
				_ = n.publish(ctx, auth.Event{Kind: auth.EventRevokeFamily, Family: fam})
			}
		}
		n.auditRequest(c, ev)
		if fromCookie {
			n.clearTokenCookies(c)
		}
		switch {
		case errors.Is(err, auth.ErrTokenReused):
			return fiber.NewError(fiber.StatusUnauthorized, "this refresh token was already used: the login session is revoked; log in again")
		case errors.Is(err, auth.ErrInvalidToken), errors.Is(err, auth.ErrRevoked), errors.Is(err, auth.ErrExpired), errors.Is(err, auth.ErrNotFound):
			return fiber.NewError(fiber.StatusUnauthorized, "refresh token invalid, expired or revoked: log in again")
		}
		n.log.Error("failed to refresh a token", "err", err)
		return fiber.NewError(fiber.StatusServiceUnavailable, "cannot refresh right now; retry")
	}
	n.auditRequest(c, auditEvent{Event: "token_refresh", User: p.User})
	if fromCookie {
		n.setTokenCookies(c, p)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	out := tokenJSON{User: p.User, AccessToken: p.Access, AccessExpires: p.AccessExpires, RefreshToken: p.Refresh, RefreshExpires: p.RefreshExpires}
	if fromCookie {
		// The refresh token stays in its HttpOnly cookie: a script on the
		// page must not be able to read a 30-day credential.
		out.RefreshToken = ""
	}
	return c.JSON(out)
}

// handleLogout revokes the login session of the refresh token (or of the
// access token) and closes its sockets on every node.
func (n *Node) handleLogout(c *fiber.Ctx) error {
	if err := n.checkSameSite(c); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	var fam string
	if tok, _ := refreshToken(c); tok != "" {
		f, err := n.auth.tokens.Family(tok)
		if err != nil {
			return fiber.NewError(fiber.StatusUnauthorized, "invalid refresh token")
		}
		fam = f
	} else if tok := credential(c); tok != "" {
		a, err := n.auth.tokens.ParseAccess(tok)
		if err != nil && !errors.Is(err, auth.ErrAccessExpired) {
			return fiber.NewError(fiber.StatusUnauthorized, "invalid access token")
		}
		fam = a.Family
	} else {
		return fiber.NewError(fiber.StatusUnauthorized, "no token to log out")
	}
	f, err := n.auth.store.Family(ctx, fam)
	if err != nil && !errors.Is(err, auth.ErrNotFound) {
		return fiber.NewError(fiber.StatusServiceUnavailable, "cannot log out right now; retry")
	}
	if err == nil {
		if err := n.auth.store.RevokeFamily(ctx, fam); err != nil {
			return fiber.NewError(fiber.StatusServiceUnavailable, "cannot log out right now; retry")
		}
		if err := n.publish(ctx, auth.Event{Kind: auth.EventRevokeFamily, Family: fam, User: f.User}); err != nil {
			return fiber.NewError(fiber.StatusServiceUnavailable, err.Error())
		}
		n.auditRequest(c, auditEvent{Event: "logout", User: f.User})
	}
	n.clearTokenCookies(c)
	return c.SendStatus(fiber.StatusNoContent)
}
