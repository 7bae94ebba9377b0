package hub

import (
	"context"
	"errors"

	"github.com/plaithub/plait/pkg/protocol"
)

// Role is what a peer may do with a document.
type Role int

const (
	// RoleNone may not read the document: it is unavailable to the peer,
	// exactly as a document that does not exist.
	RoleNone Role = iota
	// RoleViewer reads the document; its changes are refused.
	RoleViewer
	// RoleEditor reads and changes the document.
	RoleEditor
	// RoleOwner is an editor who also manages who else may use the
	// document (the REST API's business, not the hub's).
	RoleOwner
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleEditor:
		return "editor"
	case RoleOwner:
		return "owner"
	}
	return "none"
}

// Identity is who is on a connection, as the transport authenticated it.
type Identity struct {
	// User is the authenticated user's id; "" for an anonymous peer.
	User string
}

// ErrReadOnly refuses a change from a peer that may only read the
// document. The peer is told once (an error message) and closed with
// protocol.CloseReadOnly; the change is neither applied, stored nor
// relayed.
var ErrReadOnly = errors.New("read-only: you may view this document but not change it")

// Authorizer decides each peer's role on each document.
//
// Contract: the hub calls Role from the document's owner goroutine the
// first time a peer syncs the document, and keeps the answer while the
// peer stays; ctx is bounded by Options.StoreTimeout. An error counts as
// RoleNone (fail closed) and is logged. Implementations must be safe for
// concurrent use (many documents ask at once).
type Authorizer interface {
	Role(ctx context.Context, who Identity, id protocol.DocumentID) (Role, error)
}
