package node

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/auth/boltauth"
	"github.com/plaithub/plait/server/auth/redisauth"
)

// authState is a node's login, tokens and permissions; nil on an anonymous
// node.
type authState struct {
	tokens *auth.Tokens
	store  auth.TokenStore
	acl    access.ACL
	events auth.Events
	login  *auth.Login
	live   *liveConns
	users  *connLimiter[string] // WebSockets per user
	secure bool                 // cookies only over HTTPS
	admins []string
	close  func() error
}

// storeBackend is what both auth stores implement.
type storeBackend interface {
	auth.TokenStore
	access.ACL
}

// openAuth builds the node's auth from cfg: the token and permission store
// next to the documents (bbolt in data-dir, or Redis), the events that
// carry revocations and permission changes to every node, and the login
// providers.
func (n *Node) openAuth(ctx context.Context) (*authState, error) {
	cfg := n.cfg
	keys, err := readAuthKeys(cfg.AuthKeyFile)
	if err != nil {
		return nil, err
	}
	a := &authState{live: newLiveConns(), users: newConnLimiter[string](cfg.MaxConnsPerUser),
		secure: strings.EqualFold(publicScheme(cfg.PublicURL), "https"), admins: cfg.AdminUsers}
	var st storeBackend
	if n.be.redis == nil {
		bs, err := boltauth.Open(filepath.Join(cfg.DataDir, "auth.db"))
		if err != nil {
			return nil, fmt.Errorf("failed to open the auth store: %w", err)
		}
		st, a.events, a.close = bs, auth.NewLocalEvents(), bs.Close
	} else {
		rs, err := redisauth.New(ctx, n.be.redis, cfg.RedisPrefix)
		if err != nil {
			return nil, fmt.Errorf("failed to open the auth store: %w", err)
		}
		st, a.events, a.close = rs, redisauth.NewEvents(n.be.redis, cfg.RedisPrefix, n.log), func() error { return nil }
	}
	a.store, a.acl = st, st
	a.tokens, err = auth.NewTokens(auth.TokenOptions{Keys: keys, Store: st, AccessTTL: cfg.AccessTTL, RefreshTTL: cfg.RefreshTTL})
	if err != nil {
		_ = a.close()
		return nil, err
	}
	var providers []auth.ProviderConfig
	if cfg.GitHubClientID != "" {
		providers = append(providers, auth.ProviderConfig{Name: "github", ClientID: cfg.GitHubClientID, ClientSecret: cfg.GitHubClientSecret})
	}
	if cfg.GoogleClientID != "" {
		providers = append(providers, auth.ProviderConfig{Name: "google", ClientID: cfg.GoogleClientID, ClientSecret: cfg.GoogleClientSecret})
	}
	if cfg.OIDCIssuer != "" {
		providers = append(providers, auth.ProviderConfig{Name: "oidc", ClientID: cfg.OIDCClientID, ClientSecret: cfg.OIDCClientSecret, Issuer: cfg.OIDCIssuer})
	}
	a.login, err = auth.NewLogin(ctx, auth.LoginOptions{
		PublicURL: strings.TrimSuffix(cfg.PublicURL, "/"),
		Providers: providers,
		Keys:      keys,
		Store:     st,
	})
	if err != nil {
		_ = a.close()
		return nil, err
	}
	return a, nil
}

func publicScheme(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Scheme
}

// authorizer is the hub's Authorizer over the node's ACL: a document
// nobody claimed is unavailable to everyone.
type authorizer struct{ acl access.ACL }

func (z authorizer) Role(ctx context.Context, who hub.Identity, id protocol.DocumentID) (hub.Role, error) {
	acc, err := z.acl.Access(ctx, id)
	if errors.Is(err, access.ErrNotFound) {
		return hub.RoleNone, nil
	}
	if err != nil {
		return hub.RoleNone, err
	}
	return acc.Role(who.User), nil
}

// watchEvents applies revocations and permission changes published by any
// node to this node's sockets and open documents, until the node stops.
func (n *Node) watchEvents() {
	a := n.auth
	_ = a.events.Watch(n.ctx, func(ev auth.Event) {
		switch ev.Kind {
		case auth.EventRevokeFamily:
			a.live.revoke(func(l *liveConn) bool { return l.family == ev.Family }, "the login session was revoked: log in again")
		case auth.EventRevokeUser:
			a.live.revoke(func(l *liveConn) bool { return l.user == ev.User && l.issued.Before(ev.At) }, "your access was revoked: log in again")
		case auth.EventAccess:
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			if err := n.hub.Reauthorize(ctx, ev.Doc); err != nil {
				n.log.Warn("failed to apply a permission change", "doc", string(ev.Doc), "err", err)
			}
			cancel()
		}
	})
}

// recheckRevoked closes l if a revocation was applied between its token
// check and its registration and it revoked l's token (a revocation after
// the registration finds l itself; one before the check was in the store).
func (n *Node) recheckRevoked(l *liveConn) {
	if n.auth.live.revocations.Load() == l.revocations {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if _, err := n.auth.tokens.VerifyAccess(ctx, l.token); errors.Is(err, auth.ErrRevoked) {
		closeWithError(l.conn, protocol.CloseRevoked, "your access was revoked: log in again")
	}
}

// publish tells every node (this one too) of ev.
func (n *Node) publish(ctx context.Context, ev auth.Event) error {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	if err := n.auth.events.Publish(ctx, ev); err != nil {
		n.log.Error("failed to publish an auth event", "kind", ev.Kind, "err", err)
		return fmt.Errorf("failed to publish the change to the other nodes: %w", err)
	}
	return nil
}

// liveConn is one authenticated WebSocket.
type liveConn struct {
	user, family string
	issued       time.Time // the login: a user revocation after it closes the socket
	expires      time.Time
	token        string // checked again if a revocation came during registration
	revocations  uint64 // liveConns.revocations when the token was checked
	conn         interface {
		Send([]byte) error
		Close(protocol.CloseCode, string)
	}
	timer *time.Timer // closes the socket once its token expired (plus grace)
}

// liveConns are this node's authenticated sockets, for revocation.
type liveConns struct {
	// revocations counts the revocations applied here: a socket whose
	// token was checked before one and registered after it is checked
	// again.
	revocations atomic.Uint64

	mu    sync.Mutex
	conns map[*liveConn]struct{}
	rates map[string]*userRate
}

type userRate struct {
	lim  *rate.Limiter
	refs int
}

func newLiveConns() *liveConns {
	return &liveConns{conns: make(map[*liveConn]struct{}), rates: make(map[string]*userRate)}
}

func (lc *liveConns) add(l *liveConn) {
	lc.mu.Lock()
	lc.conns[l] = struct{}{}
	lc.mu.Unlock()
}

func (lc *liveConns) remove(l *liveConn) {
	lc.mu.Lock()
	delete(lc.conns, l)
	lc.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
	}
}

// userLimit returns the message limiter shared by user's connections
// (nil without a limit); release it with dropUserLimit.
func (lc *liveConns) userLimit(user string, perSec float64, burst int) *rate.Limiter {
	if perSec <= 0 {
		return nil
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	r := lc.rates[user]
	if r == nil {
		r = &userRate{lim: rate.NewLimiter(rate.Limit(perSec), burst)}
		lc.rates[user] = r
	}
	r.refs++
	return r.lim
}

func (lc *liveConns) dropUserLimit(user string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if r := lc.rates[user]; r != nil {
		if r.refs--; r.refs <= 0 {
			delete(lc.rates, user)
		}
	}
}

// revoke closes every socket match selects with CloseRevoked.
func (lc *liveConns) revoke(match func(*liveConn) bool, reason string) int {
	lc.revocations.Add(1)
	lc.mu.Lock()
	var hit []*liveConn
	for l := range lc.conns {
		if match(l) {
			hit = append(hit, l)
		}
	}
	lc.mu.Unlock()
	for _, l := range hit {
		closeWithError(l.conn, protocol.CloseRevoked, reason)
	}
	return len(hit)
}

// closeWithError tells the client why (an error message), then closes.
func closeWithError(c interface {
	Send([]byte) error
	Close(protocol.CloseCode, string)
}, code protocol.CloseCode, reason string) {
	if frame, err := protocol.Encode(&protocol.Message{Type: protocol.TypeError, ErrorMessage: reason}); err == nil {
		_ = c.Send(frame)
	}
	c.Close(code, reason)
}

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

// handleRevokeUser lets an admin revoke every token of a user, on every
// node: sockets close with 4410 and refreshes fail.
func (n *Node) handleRevokeUser(c *fiber.Ctx) error {
	a, err := n.authenticate(c)
	if err != nil {
		return err
	}
	if err := n.checkSameSite(c); err != nil {
		return err
	}
	if !slices.Contains(n.auth.admins, a.User) {
		n.auditRequest(c, auditEvent{Event: "denied", User: a.User, Code: fiber.StatusForbidden, Reason: "revoke a user: not an admin"})
		return fiber.NewError(fiber.StatusForbidden, "only the admin users (--admin-users) may revoke users")
	}
	var body struct {
		User string `json:"user"`
	}
	if err := c.BodyParser(&body); err != nil || body.User == "" {
		return fiber.NewError(fiber.StatusBadRequest, "want JSON {\"user\": \"<user id>\"}")
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	now := time.Now()
	if err := n.auth.store.RevokeUser(ctx, body.User, now); err != nil {
		return fiber.NewError(fiber.StatusServiceUnavailable, "failed to revoke; retry")
	}
	if err := n.publish(ctx, auth.Event{Kind: auth.EventRevokeUser, User: body.User, At: now}); err != nil {
		return fiber.NewError(fiber.StatusServiceUnavailable, err.Error())
	}
	n.auditRequest(c, auditEvent{Event: "revoked", User: body.User, Reason: "by " + a.User})
	return c.SendStatus(fiber.StatusNoContent)
}

// checkSameSite refuses a state-changing request a browser sent from
// another site (cross-site request forgery): its Origin must be the node's
// own or an allowed one. Programs send no Origin.
func (n *Node) checkSameSite(c *fiber.Ctx) error {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		if c.Get("Sec-Fetch-Site") == "cross-site" {
			return fiber.NewError(fiber.StatusForbidden, "cross-site request refused")
		}
		return nil
	}
	if err := n.originAllowed(origin, string(c.Request().Host())); err != nil {
		n.auditRequest(c, auditEvent{Event: "origin_rejected", Code: fiber.StatusForbidden, Reason: err.Error(), Offense: true})
		return fiber.NewError(fiber.StatusForbidden, err.Error())
	}
	return nil
}

// auditRequest records ev for the HTTP request c: its request id and
// client address filled in.
func (n *Node) auditRequest(c *fiber.Ctx, ev auditEvent) {
	ev.RequestID, ev.Remote = requestID(c), c.Context().RemoteAddr().String()
	n.audit.record(ev)
}

func requestID(c *fiber.Ctx) string {
	id, _ := c.Locals("request_id").(string)
	return id
}

// logAuthMode says at start-up who may connect.
func (n *Node) logAuthMode(addr string) {
	if n.auth == nil {
		host, _, _ := strings.Cut(addr, ":")
		n.log.Warn("anonymous mode: no login provider is configured, every client may read and change every document",
			"addr", addr, "loopback_only", isLoopback(strings.Trim(host, "[]")))
		return
	}
	n.log.Info("login required", "providers", n.auth.login.Providers(), "public_url", n.cfg.PublicURL,
		"access_token_ttl", n.cfg.AccessTTL, "admins", len(n.auth.admins))
}
