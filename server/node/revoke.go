package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/auth"
)

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
}

func newLiveConns() *liveConns {
	return &liveConns{conns: make(map[*liveConn]struct{})}
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
