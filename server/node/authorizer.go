package node

import (
	"context"
	"errors"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
)

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
