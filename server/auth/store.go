package auth

import (
	"context"
	"errors"
	"time"

	"github.com/plaithub/plait/pkg/protocol"
)

// Errors of the stores. What a client sees is decided by the HTTP layer.
var (
	// ErrNotFound means the family is unknown.
	ErrNotFound = errors.New("not found")
	// ErrRevoked means the login session (token family) was revoked.
	ErrRevoked = errors.New("revoked")
	// ErrExpired means the refresh token's family expired.
	ErrExpired = errors.New("expired")
	// ErrTokenReused means a refresh token that was already rotated was
	// presented again: somebody kept a copy. The whole family is revoked.
	ErrTokenReused = errors.New("refresh token reused: the login session is revoked")
)

// Family is one login session: the chain of refresh tokens issued since one
// login. Each refresh rotates the family to its next generation; the token
// of an older generation presented again is a reuse, and revokes the
// family.
type Family struct {
	ID      string    // random, URL-safe
	User    string    // the user the family was issued to
	Gen     uint64    // generation of the one refresh token that is valid now
	Created time.Time // the login
	Expires time.Time // the family ends then unless rotated before
	Revoked bool
}

// TokenStore keeps login sessions and revocations. Nodes of one cluster
// share it, so a revocation on one node holds on all of them.
//
// Contract: every method is safe for concurrent use; a write is durable
// (as durable as the backend) before the method returns; ctx bounds the
// call.
type TokenStore interface {
	// CreateFamily stores a new family (Gen as given, usually 0).
	CreateFamily(ctx context.Context, f Family) error
	// Rotate moves family id from generation gen to gen+1 and sets its
	// expiry to exp, atomically: of two concurrent rotations of the same
	// generation exactly one succeeds, and the other is a reuse. Errors:
	// ErrNotFound (unknown family), ErrRevoked, ErrExpired (Expires has
	// passed), ErrTokenReused (gen is older than the current generation:
	// the family is revoked before the error returns). A gen newer than the
	// current one (the store lost data) is ErrRevoked too.
	Rotate(ctx context.Context, id string, gen uint64, exp time.Time) (Family, error)
	// Family returns family id (revoked ones too), or ErrNotFound.
	Family(ctx context.Context, id string) (Family, error)
	// RevokeFamily revokes family id (idempotent); ErrNotFound if unknown.
	RevokeFamily(ctx context.Context, id string) error
	// RevokeUser revokes every token issued to user before at: a later
	// call with an earlier at does not move the cut-off back.
	RevokeUser(ctx context.Context, user string, at time.Time) error
	// Revoked reports whether a token of family, issued to user at
	// issuedAt, is revoked: its family was revoked or is unknown, or the
	// user was revoked at or after issuedAt.
	Revoked(ctx context.Context, user, family string, issuedAt time.Time) (bool, error)
	// ConsumeOnce records key as used for ttl and reports true; if key is
	// already recorded (a replay) it reports false. Atomic across nodes.
	ConsumeOnce(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// EventKind says what an Event changed.
type EventKind string

// Event kinds.
const (
	// EventRevokeFamily: the sockets of Family close with CloseRevoked.
	EventRevokeFamily EventKind = "revoke-family"
	// EventRevokeUser: the sockets of User opened with tokens issued
	// before At close with CloseRevoked.
	EventRevokeUser EventKind = "revoke-user"
	// EventAccess: Doc's access changed; open sessions ask again.
	EventAccess EventKind = "access"
)

// Event is a change every node must apply to its open sockets.
type Event struct {
	Kind   EventKind           `json:"kind"`
	User   string              `json:"user,omitempty"`
	Family string              `json:"family,omitempty"`
	Doc    protocol.DocumentID `json:"doc,omitempty"`
	At     time.Time           `json:"at"`
}

// Events carries Events to every node of a cluster.
//
// Contract: Publish returns once the event is stored for delivery; every
// node whose Watch is running then receives it, this node included, within
// a second or two, even across a short outage of the backend (at least
// once: an event may arrive twice). Watch calls fn on one goroutine, in
// publication order, for the events published after Watch started; it
// retries backend failures itself and returns only when ctx is done.
type Events interface {
	Publish(ctx context.Context, ev Event) error
	Watch(ctx context.Context, fn func(Event)) error
}
