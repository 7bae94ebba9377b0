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

// The REST API of documents and their sharing. Every call needs an access
// token. A document the caller may not read is 404, exactly like one that
// does not exist; managing who may use a document needs the owner role.

type docJSON struct {
	DocumentID string            `json:"documentId"`
	URL        string            `json:"url"`
	Role       string            `json:"role"`           // the caller's
	Link       string            `json:"link,omitempty"` // owners only: the link role ("none" = off)
	Users      map[string]string `json:"users,omitempty"`
}

// withUser authenticates the request and, for a change, checks it did not
// come from another site.
func (n *Node) withUser(h func(*fiber.Ctx, auth.Access) error) fiber.Handler {
	return func(c *fiber.Ctx) error {
		a, err := n.authenticate(c)
		if err != nil {
			return err
		}
		if c.Method() != fiber.MethodGet {
			if err := n.checkSameSite(c); err != nil {
				return err
			}
		}
		return h(c, a)
	}
}

func apiCtx(n *Node) (context.Context, context.CancelFunc) {
	return context.WithTimeout(n.ctx, 5*time.Second)
}

var errUnavailable = fiber.NewError(fiber.StatusServiceUnavailable, "the permission store is unavailable; retry")

// createDoc claims a document for the caller: the id a client made (JS:
// repo.create(), then POST its documentId) or a new one. The creator's
// open sockets are let in at once.
func (n *Node) createDoc(c *fiber.Ctx, a auth.Access) error {
	var body struct {
		DocumentID string `json:"documentId"`
	}
	if len(c.Body()) > 0 {
		if err := c.BodyParser(&body); err != nil {
			return fiber.NewError(fiber.StatusBadRequest, "want JSON {\"documentId\": \"automerge:...\"} or an empty body")
		}
	}
	id := protocol.NewDocumentID()
	if body.DocumentID != "" {
		var err error
		if id, err = protocol.ParseDocumentID(body.DocumentID); err != nil {
			return fiber.NewError(fiber.StatusBadRequest, err.Error())
		}
	}
	ctx, cancel := apiCtx(n)
	defer cancel()
	if err := n.checkDocQuota(ctx, c, a.User); err != nil {
		return err
	}
	if err := n.auth.acl.Claim(ctx, id, a.User, time.Now()); err != nil {
		if errors.Is(err, access.ErrClaimed) {
			return fiber.NewError(fiber.StatusConflict, "this document already exists")
		}
		return errUnavailable
	}
	n.auditRequest(c, auditEvent{Event: "access_change", User: a.User, Doc: string(id), Reason: "created"})
	n.emit(webhook.DocumentCreated, id, a.User)
	_ = n.publish(ctx, auth.Event{Kind: auth.EventAccess, Doc: id})
	return c.Status(fiber.StatusCreated).JSON(docJSON{DocumentID: string(id), URL: id.URL(), Role: hub.RoleOwner.String()})
}

func (n *Node) listDocs(c *fiber.Ctx, a auth.Access) error {
	ctx, cancel := apiCtx(n)
	defer cancel()
	docs, err := n.auth.acl.DocsOf(ctx, a.User)
	if err != nil {
		return errUnavailable
	}
	out := make([]docJSON, 0, len(docs))
	for _, d := range docs {
		out = append(out, docJSON{DocumentID: string(d.ID), URL: d.ID.URL(), Role: d.Role.String()})
	}
	return c.JSON(fiber.Map{"documents": out})
}

// access loads the document of the route and the caller's role on it; a
// document the caller may not read is 404.
func (n *Node) access(c *fiber.Ctx, a auth.Access) (protocol.DocumentID, access.DocAccess, hub.Role, error) {
	raw, _ := url.PathUnescape(c.Params("id"))
	id, err := protocol.ParseDocumentID(raw)
	if err != nil {
		return "", access.DocAccess{}, hub.RoleNone, fiber.NewError(fiber.StatusNotFound, "no such document")
	}
	ctx, cancel := apiCtx(n)
	defer cancel()
	acc, err := n.auth.acl.Access(ctx, id)
	if errors.Is(err, access.ErrNotFound) {
		return "", acc, hub.RoleNone, fiber.NewError(fiber.StatusNotFound, "no such document")
	}
	if err != nil {
		return "", acc, hub.RoleNone, errUnavailable
	}
	r := acc.Role(a.User)
	if r == hub.RoleNone {
		return "", acc, r, fiber.NewError(fiber.StatusNotFound, "no such document")
	}
	return id, acc, r, nil
}

func (n *Node) getDoc(c *fiber.Ctx, a auth.Access) error {
	id, acc, r, err := n.access(c, a)
	if err != nil {
		return err
	}
	out := docJSON{DocumentID: string(id), URL: id.URL(), Role: r.String()}
	if r == hub.RoleOwner {
		out.Link = acc.Link.String()
		out.Users = make(map[string]string, len(acc.Users))
		for u, ur := range acc.Users {
			out.Users[u] = ur.String()
		}
	}
	return c.JSON(out)
}

// changeAccess applies an owner's change and tells every node, so open
// sessions get the new roles at once.
func (n *Node) changeAccess(c *fiber.Ctx, a auth.Access, id protocol.DocumentID, what string, change func(context.Context) error) error {
	ctx, cancel := apiCtx(n)
	defer cancel()
	if err := change(ctx); err != nil {
		switch {
		case errors.Is(err, access.ErrLastOwner):
			return fiber.NewError(fiber.StatusConflict, access.ErrLastOwner.Error())
		case errors.Is(err, access.ErrInvalidRole):
			return fiber.NewError(fiber.StatusBadRequest, "a link can make viewers or editors, not owners")
		case errors.Is(err, access.ErrNotFound):
			return fiber.NewError(fiber.StatusNotFound, "no such document")
		}
		return errUnavailable
	}
	n.auditRequest(c, auditEvent{Event: "access_change", User: a.User, Doc: string(id), Reason: what})
	n.emit(webhook.AccessChanged, id, a.User)
	if err := n.publish(ctx, auth.Event{Kind: auth.EventAccess, Doc: id}); err != nil {
		return fiber.NewError(fiber.StatusServiceUnavailable, "saved, but open sessions may keep their old role until they reconnect: "+err.Error())
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (n *Node) shareDoc(c *fiber.Ctx, a auth.Access) error {
	id, _, r, err := n.access(c, a)
	if err != nil {
		return err
	}
	if r != hub.RoleOwner {
		return fiber.NewError(fiber.StatusForbidden, "only an owner may share this document")
	}
	user, _ := url.PathUnescape(c.Params("user"))
	var body struct {
		Role string `json:"role"`
	}
	if err := c.BodyParser(&body); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "want JSON {\"role\": \"owner|editor|viewer|none\"}")
	}
	role, err := access.ParseRole(body.Role)
	if err != nil || user == "" {
		return fiber.NewError(fiber.StatusBadRequest, "role must be owner, editor, viewer or none")
	}
	return n.changeAccess(c, a, id, "share "+user+" "+role.String(), func(ctx context.Context) error {
		return n.auth.acl.Share(ctx, id, user, role)
	})
}

// unshareDoc removes a user's role: an owner may remove anyone, anyone may
// remove themselves.
func (n *Node) unshareDoc(c *fiber.Ctx, a auth.Access) error {
	id, _, r, err := n.access(c, a)
	if err != nil {
		return err
	}
	user, _ := url.PathUnescape(c.Params("user"))
	if r != hub.RoleOwner && user != a.User {
		return fiber.NewError(fiber.StatusForbidden, "only an owner may remove others")
	}
	return n.changeAccess(c, a, id, "unshare "+user, func(ctx context.Context) error {
		return n.auth.acl.Share(ctx, id, user, hub.RoleNone)
	})
}

func (n *Node) setLink(c *fiber.Ctx, a auth.Access) error {
	id, _, r, err := n.access(c, a)
	if err != nil {
		return err
	}
	if r != hub.RoleOwner {
		return fiber.NewError(fiber.StatusForbidden, "only an owner may change link sharing")
	}
	var body struct {
		Role string `json:"role"`
	}
	if err := c.BodyParser(&body); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "want JSON {\"role\": \"viewer|editor|none\"}")
	}
	role, err := access.ParseRole(body.Role)
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "role must be viewer, editor or none")
	}
	return n.changeAccess(c, a, id, "link "+role.String(), func(ctx context.Context) error {
		return n.auth.acl.SetLink(ctx, id, role)
	})
}
