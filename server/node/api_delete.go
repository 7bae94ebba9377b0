package node

import (
	"context"
	"errors"
	"net/url"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/webhook"
)

// Deleting documents and users (issue 17, items 5): DELETE
// /api/docs/{id} and DELETE /api/me. With login, deleting a document
// needs the owner role; a node without login (anonymous, loopback only)
// lets any local client delete, as it lets any change.

// deleteTimeout bounds one deletion: the document's owner may have to load
// it before detaching its peers and deleting it from the store.
const deleteTimeout = 30 * time.Second

// deleteRoutes declares the deletion routes (routes.go calls it).
func (n *Node) deleteRoutes(app *fiber.App) {
	if n.auth != nil {
		app.Delete("/api/docs/:id", n.withUser(n.handleDeleteDoc))
		app.Delete("/api/me", n.withUser(n.handleDeleteMe))
		return
	}
	app.Delete("/api/docs/:id", func(c *fiber.Ctx) error {
		if err := n.checkSameSite(c); err != nil {
			return err
		}
		raw, _ := url.PathUnescape(c.Params("id"))
		id, err := protocol.ParseDocumentID(raw)
		if err != nil {
			return fiber.NewError(fiber.StatusNotFound, "no such document")
		}
		ctx, cancel := context.WithTimeout(n.ctx, deleteTimeout)
		defer cancel()
		existed, err := n.hub.DeleteDocument(ctx, id)
		if err != nil {
			n.log.Error("failed to delete a document", "doc", string(id), "err", err)
			return fiber.NewError(fiber.StatusServiceUnavailable, "failed to delete the document; retry")
		}
		if !existed {
			return fiber.NewError(fiber.StatusNotFound, "no such document")
		}
		n.auditRequest(c, auditEvent{Event: "doc_deleted", Doc: string(id)})
		n.emit(webhook.DocumentDeleted, id, "")
		return c.SendStatus(fiber.StatusNoContent)
	})
}

// handleDeleteDoc deletes a document its caller owns, on every node.
func (n *Node) handleDeleteDoc(c *fiber.Ctx, a auth.Access) error {
	id, _, r, err := n.access(c, a)
	if err != nil {
		return err
	}
	if r != hub.RoleOwner {
		n.auditRequest(c, auditEvent{Event: "denied", User: a.User, Doc: string(id), Code: fiber.StatusForbidden, Reason: "delete: not an owner"})
		return fiber.NewError(fiber.StatusForbidden, "only an owner may delete this document")
	}
	if err := n.deleteDoc(id, a.User); err != nil {
		return err
	}
	n.auditRequest(c, auditEvent{Event: "doc_deleted", User: a.User, Doc: string(id)})
	return c.SendStatus(fiber.StatusNoContent)
}

// deleteDoc removes a document's access first (so that no connected
// client keeps the right to sync it, on any node: the permission change
// reaches every node and detaches them), then its data, on every node
// (hub.DeleteDocument).
func (n *Node) deleteDoc(id protocol.DocumentID, user string) error {
	ctx, cancel := context.WithTimeout(n.ctx, deleteTimeout)
	defer cancel()
	if err := n.auth.acl.Delete(ctx, id); err != nil {
		if errors.Is(err, access.ErrNotFound) {
			return fiber.NewError(fiber.StatusNotFound, "no such document")
		}
		return errUnavailable
	}
	if err := n.publish(ctx, auth.Event{Kind: auth.EventAccess, Doc: id}); err != nil {
		n.log.Warn("deleting a document: failed to tell the other nodes of its permissions", "doc", string(id), "err", err)
	}
	if _, err := n.hub.DeleteDocument(ctx, id); err != nil {
		n.log.Error("failed to delete a document's data", "doc", string(id), "err", err)
		return fiber.NewError(fiber.StatusServiceUnavailable, "the document's permissions are removed (nobody can open it), but deleting its data failed: "+err.Error())
	}
	n.emit(webhook.DocumentDeleted, id, user)
	return nil
}

// handleDeleteMe deletes the caller's account data: the documents only
// they own (on every node, as DELETE /api/docs/{id}), their roles on every
// other document, then every login session (tokens revoked, sockets
// closed on every node with 4410).
func (n *Node) handleDeleteMe(c *fiber.Ctx, a auth.Access) error {
	ctx, cancel := context.WithTimeout(n.ctx, deleteTimeout)
	defer cancel()
	docs, err := n.auth.acl.DocsOf(ctx, a.User)
	if err != nil {
		return errUnavailable
	}
	deleted, left := 0, 0
	for _, d := range docs {
		acc, err := n.auth.acl.Access(ctx, d.ID)
		if errors.Is(err, access.ErrNotFound) {
			continue
		}
		if err != nil {
			return errUnavailable
		}
		if soleOwner(acc, a.User) {
			if err := n.deleteDoc(d.ID, a.User); err != nil {
				var fe *fiber.Error
				if errors.As(err, &fe) && fe.Code == fiber.StatusNotFound {
					continue // deleted meanwhile
				}
				return err
			}
			n.auditRequest(c, auditEvent{Event: "doc_deleted", User: a.User, Doc: string(d.ID), Reason: "account deleted"})
			deleted++
			continue
		}
		err = n.auth.acl.Share(ctx, d.ID, a.User, hub.RoleNone)
		if errors.Is(err, access.ErrLastOwner) {
			// Another owner left meanwhile: the document is now the
			// caller's alone.
			if err = n.deleteDoc(d.ID, a.User); err == nil {
				n.auditRequest(c, auditEvent{Event: "doc_deleted", User: a.User, Doc: string(d.ID), Reason: "account deleted"})
				deleted++
				continue
			}
		}
		if err != nil && !errors.Is(err, access.ErrNotFound) {
			return errUnavailable
		}
		n.auditRequest(c, auditEvent{Event: "access_change", User: a.User, Doc: string(d.ID), Reason: "unshare " + a.User + " (account deleted)"})
		_ = n.publish(ctx, auth.Event{Kind: auth.EventAccess, Doc: d.ID})
		n.emit(webhook.AccessChanged, d.ID, a.User)
		left++
	}
	now := time.Now()
	if err := n.auth.store.RevokeUser(ctx, a.User, now); err != nil {
		return fiber.NewError(fiber.StatusServiceUnavailable, "documents removed, but failed to end the login sessions; retry")
	}
	if err := n.publish(ctx, auth.Event{Kind: auth.EventRevokeUser, User: a.User, At: now}); err != nil {
		return fiber.NewError(fiber.StatusServiceUnavailable, err.Error())
	}
	n.auditRequest(c, auditEvent{Event: "user_deleted", User: a.User})
	return c.JSON(fiber.Map{"deletedDocuments": deleted, "leftDocuments": left})
}

// soleOwner reports whether user is the only owner of a document.
func soleOwner(acc access.DocAccess, user string) bool {
	if acc.Users[user] != hub.RoleOwner {
		return false
	}
	for u, r := range acc.Users {
		if u != user && r == hub.RoleOwner {
			return false
		}
	}
	return true
}
