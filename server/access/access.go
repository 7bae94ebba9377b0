package access

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

// Errors of an ACL. What a client sees is decided by the HTTP layer.
var (
	// ErrNotFound means the document was never claimed.
	ErrNotFound = errors.New("not found")
	// ErrClaimed means the document already has owners.
	ErrClaimed = errors.New("document already exists")
	// ErrLastOwner refuses a change that would leave a document without an
	// owner.
	ErrLastOwner = errors.New("a document must keep at least one owner")
	// ErrInvalidRole refuses a role that cannot be given that way (a link
	// cannot make owners).
	ErrInvalidRole = errors.New("invalid role")
)

// ParseRole reads a role by its name (hub.Role's String: "none",
// "viewer", "editor", "owner"), as stores keep it and clients send it.
func ParseRole(name string) (hub.Role, error) {
	for _, r := range []hub.Role{hub.RoleNone, hub.RoleViewer, hub.RoleEditor, hub.RoleOwner} {
		if r.String() == name {
			return r, nil
		}
	}
	return hub.RoleNone, fmt.Errorf("unknown role %q", name)
}

// DocAccess is who may use one document.
type DocAccess struct {
	Users   map[string]hub.Role // explicit roles (never RoleNone)
	Link    hub.Role            // role of any logged-in user who has the link; RoleNone: link sharing off
	Created time.Time
}

// Role is user's role: the explicit one, else the link's.
func (a DocAccess) Role(user string) hub.Role {
	if r, ok := a.Users[user]; ok {
		return r
	}
	if user == "" {
		return hub.RoleNone
	}
	return a.Link
}

// UserDoc is one document a user has an explicit role on.
type UserDoc struct {
	ID   protocol.DocumentID
	Role hub.Role
}

// ACL keeps each document's owners, editors, viewers and link role. Nodes
// of one cluster share it.
//
// Contract: every method is safe for concurrent use; a write is durable
// (as durable as the backend) before the method returns; ctx bounds the
// call. A document that was never claimed has no access at all (Access
// returns ErrNotFound).
type ACL interface {
	// Claim makes user the first owner of doc; ErrClaimed if it has one.
	Claim(ctx context.Context, doc protocol.DocumentID, user string, at time.Time) error
	// Share gives user role on doc; RoleNone removes the user's role.
	// ErrNotFound if doc was never claimed; ErrLastOwner if the change
	// would leave doc without an owner.
	Share(ctx context.Context, doc protocol.DocumentID, user string, role hub.Role) error
	// SetLink sets the role of anyone with the link (RoleNone, RoleViewer
	// or RoleEditor; ErrInvalidRole otherwise); ErrNotFound if unclaimed.
	SetLink(ctx context.Context, doc protocol.DocumentID, role hub.Role) error
	// Access returns doc's access, or ErrNotFound.
	Access(ctx context.Context, doc protocol.DocumentID) (DocAccess, error)
	// DocsOf lists the documents user has an explicit role on, sorted by id.
	DocsOf(ctx context.Context, user string) ([]UserDoc, error)
	// Delete removes doc's access (every user's role, the link role) and
	// the users' index entries: afterwards doc is unclaimed (Access
	// returns ErrNotFound) and may be claimed again. ErrNotFound if doc
	// was never claimed.
	Delete(ctx context.Context, doc protocol.DocumentID) error
}
