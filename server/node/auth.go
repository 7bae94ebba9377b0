package node

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/plaithub/plait/server/auth"
)

// credential is the access token of a request: the access_token query
// parameter (a WebSocket from a browser on another site, or a program), an
// Authorization: Bearer header (programs), or the access cookie (a
// browser on the node's own site).
func credential(c *fiber.Ctx) string {
	// Only the WebSocket takes a token in the URL (browsers cannot set its
	// headers): anywhere else it would end up in proxies' access logs.
	if t := c.Query("access_token"); t != "" && c.Path() == "/ws" {
		return t
	}
	if h := c.Get(fiber.HeaderAuthorization); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return c.Cookies(accessCookie)
}

// authenticate checks the request's access token. The error is what the
// client is told, with its HTTP status.
func (n *Node) authenticate(c *fiber.Ctx) (auth.Access, error) {
	tok := credential(c)
	if tok == "" {
		n.auditRequest(c, auditEvent{Event: "token_missing", Code: fiber.StatusUnauthorized, Reason: c.Method() + " " + c.Path()})
		return auth.Access{}, fiber.NewError(fiber.StatusUnauthorized, "authentication required: log in at /auth/<provider>/login, then send the access token (cookie plait_access, Authorization: Bearer, or ?access_token=)")
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	a, err := n.auth.tokens.VerifyAccess(ctx, tok)
	if err == nil {
		return a, nil
	}
	ev := auditEvent{Event: "token_invalid", User: a.User, Code: fiber.StatusUnauthorized, Reason: err.Error(), Offense: true}
	switch {
	case errors.Is(err, auth.ErrAccessExpired):
		ev.Event, ev.Offense = "token_expired", false
		err = fiber.NewError(fiber.StatusUnauthorized, "access token expired: refresh it (POST /auth/refresh) and reconnect")
	case errors.Is(err, auth.ErrRevoked):
		ev.Event = "token_revoked"
		err = fiber.NewError(fiber.StatusUnauthorized, "access revoked: log in again")
	case errors.Is(err, auth.ErrInvalidToken):
		err = fiber.NewError(fiber.StatusUnauthorized, "invalid access token")
	default:
		ev.Event, ev.Offense, ev.Code = "auth_error", false, fiber.StatusServiceUnavailable
		n.log.Error("failed to verify a token", "err", err)
		err = fiber.NewError(fiber.StatusServiceUnavailable, "cannot check tokens right now; retry")
	}
	n.auditRequest(c, ev)
	return auth.Access{}, err
}
