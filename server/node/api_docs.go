package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/gofiber/fiber/v2"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/jsonpatch"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/content"
	"github.com/plaithub/plait/server/webhook"
)

// The documents API beyond sync (docs/api.md): a document's content as
// JSON, its history, server-side changes as JSON Patch, export and import
// of the compacted binary. Under the same authentication, roles and audit
// as api.go; on an anonymous node (loopback only) they need no token, as
// the WebSocket needs none there.
//
// Reads and edits build an automerge-go document from the changes the
// hub's owner hands out (checked by the sync engine when they arrived),
// off the owner goroutine; at most docAPIConcurrency of them at once per
// node, each bounded by docAPIMaxBytes, so that the API's memory is
// bounded whatever the callers do.
const (
	// docAPIMaxBytes bounds the documents (their changes, uncompressed)
	// the API reads, edits or exports: 413 past it.
	docAPIMaxBytes = 32 << 20
	// docAPIMaxJSON bounds the JSON of GET content: 413 past it.
	docAPIMaxJSON = 64 << 20
	// docAPIConcurrency bounds the documents the API holds in memory at
	// once; a request waits for its turn up to its deadline (then 503).
	docAPIConcurrency = 4
	// maxChangeMessage bounds the message of a server-side change.
	maxChangeMessage = 1024
	// historyPage is the default and historyMaxPage the largest page of
	// GET history.
	historyPage, historyMaxPage = 100, 1000
	// docAPITimeout bounds each request's work.
	docAPITimeout = 20 * time.Second
)

type docAPI struct {
	n         *Node
	sema      chan struct{}
	gcPending atomic.Bool
	authors   *auth.Sealer // seals the user into API changes (api_authors.go); nil: anonymous
}

func newDocAPI(n *Node) *docAPI {
	return &docAPI{n: n, sema: make(chan struct{}, docAPIConcurrency), authors: newAuthorSealer(n)}
}

func (d *docAPI) routes(app *fiber.App) {
	app.Get("/api/docs/:id/content", d.handler(d.getContent))
	app.Get("/api/docs/:id/history", d.handler(d.getHistory))
	app.Post("/api/docs/:id/changes", d.handler(d.postChanges))
	app.Get("/api/docs/:id/export", d.handler(d.getExport))
	app.Post("/api/docs/import", d.handler(d.postImport))
}

// handler authenticates as api.go does, or on an anonymous node lets
// everyone in (a cross-site change is still refused).
func (d *docAPI) handler(h func(*fiber.Ctx, auth.Access) error) fiber.Handler {
	if d.n.auth != nil {
		return d.n.withUser(h)
	}
	return func(c *fiber.Ctx) error {
		if c.Method() != fiber.MethodGet {
			if err := d.n.checkSameSite(c); err != nil {
				return err
			}
		}
		return h(c, auth.Access{})
	}
}

// doc resolves the route's document and the caller's role: a document the
// caller may not read is 404; on an anonymous node everyone owns every
// document.
func (d *docAPI) doc(c *fiber.Ctx, a auth.Access) (protocol.DocumentID, hub.Role, error) {
	if d.n.auth != nil {
		id, _, r, err := d.n.access(c, a)
		return id, r, err
	}
	raw, _ := url.PathUnescape(c.Params("id"))
	id, err := protocol.ParseDocumentID(raw)
	if err != nil {
		return "", hub.RoleNone, fiber.NewError(fiber.StatusNotFound, "no such document")
	}
	return id, hub.RoleOwner, nil
}

// read returns the document's changes; an anonymous node's document that
// nobody stored is 404 (with login, the ACL said it exists: it is empty).
func (d *docAPI) read(ctx context.Context, id protocol.DocumentID) (*hub.DocChanges, error) {
	dc, err := d.n.hub.ReadChanges(ctx, id, docAPIMaxBytes)
	if err != nil {
		return nil, hubError(err)
	}
	if !dc.Exists && d.n.auth == nil {
		return nil, fiber.NewError(fiber.StatusNotFound, "no such document")
	}
	return dc, nil
}

// hubError maps an error of the hub to a status and a message.
func hubError(err error) error {
	switch {
	case errors.Is(err, hub.ErrTooLargeToRead):
		return fiber.NewError(fiber.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, syncengine.ErrLimitExceeded): // the change's own size
		return fiber.NewError(fiber.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, hub.ErrLimitExceeded): // the node's (documents open)
		return fiber.NewError(fiber.StatusServiceUnavailable, err.Error()+"; retry later")
	case errors.Is(err, hub.ErrMissingDeps):
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	case errors.Is(err, syncengine.ErrInvalidChange), errors.Is(err, syncengine.ErrInvalidMessage):
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fiber.NewError(fiber.StatusServiceUnavailable, "the document did not answer in time; retry")
	}
	return fiber.NewError(fiber.StatusServiceUnavailable, err.Error())
}

// turn waits for one of the API's document slots; release with done.
// Each turn builds an automerge-go document, whose C memory only Go
// finalizers free: done schedules a collection (one a second at most),
// else a stream of reads grows the node's memory while its Go heap stays
// small.
func (d *docAPI) turn(ctx context.Context) (done func(), err error) {
	select {
	case d.sema <- struct{}{}:
		return func() { <-d.sema; d.gcSoon() }, nil
	case <-ctx.Done():
		return nil, fiber.NewError(fiber.StatusServiceUnavailable, "the node is busy with other documents; retry")
	}
}

func (d *docAPI) gcSoon() {
	if !d.gcPending.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(time.Second, func() {
		d.gcPending.Store(false)
		runtime.GC()
		releaseFreedMemory()
	})
}

func (d *docAPI) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.n.ctx, docAPITimeout)
}

// hexHeads returns heads as hex strings, sorted.
func hexHeads[H ~[32]byte](hs []H) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h[:])
	}
	slices.Sort(out)
	return out
}

// etag is the ETag of a document at heads: they identify its content.
func etag(heads []string) string {
	if len(heads) == 0 {
		return `"empty"`
	}
	return `"` + strings.Join(heads, ".") + `"`
}

// notModified reports whether If-None-Match names tag (or is *).
func notModified(c *fiber.Ctx, tag string) bool {
	inm := c.Get(fiber.HeaderIfNoneMatch)
	if inm == "" {
		return false
	}
	for _, t := range strings.Split(inm, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == tag {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// getContent: GET /api/docs/{id}/content[?heads=h1,h2]: the document as
// JSON, its heads as the ETag.
func (d *docAPI) getContent(c *fiber.Ctx, a auth.Access) error {
	id, _, err := d.doc(c, a)
	if err != nil {
		return err
	}
	var at []automerge.ChangeHash
	if q := c.Query("heads"); q != "" {
		if at, err = content.ParseHeads(q); err != nil {
			return fiber.NewError(fiber.StatusBadRequest, "heads: "+err.Error())
		}
	}
	ctx, cancel := d.ctx()
	defer cancel()
	dc, err := d.read(ctx, id)
	if err != nil {
		return err
	}
	tag := etag(hexHeads(dc.Heads))
	if len(at) > 0 {
		tag = etag(hexHeads(at))
	}
	c.Set(fiber.HeaderETag, tag)
	c.Set(fiber.HeaderCacheControl, "private, no-cache")
	if notModified(c, tag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	done, err := d.turn(ctx)
	if err != nil {
		return err
	}
	defer done()
	doc, err := content.Load(dc.Changes, at...)
	if errors.Is(err, content.ErrUnknownHeads) {
		return fiber.NewError(fiber.StatusNotFound, "heads: "+err.Error())
	}
	if err != nil {
		return err
	}
	body, err := content.ToJSON(doc, docAPIMaxJSON)
	if errors.Is(err, content.ErrTooLarge) {
		return fiber.NewError(fiber.StatusRequestEntityTooLarge, err.Error())
	}
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}

// postChanges: POST /api/docs/{id}/changes[?message=...] with a JSON
// Patch: applied as one change, stored, then synced to every client.
func (d *docAPI) postChanges(c *fiber.Ctx, a auth.Access) error {
	id, r, err := d.doc(c, a)
	if err != nil {
		return err
	}
	if r < hub.RoleEditor {
		return fiber.NewError(fiber.StatusForbidden, "viewers may not change this document")
	}
	ct := strings.TrimSpace(strings.Split(c.Get(fiber.HeaderContentType), ";")[0])
	if ct != "application/json-patch+json" && ct != fiber.MIMEApplicationJSON {
		return fiber.NewError(fiber.StatusUnsupportedMediaType, "send a JSON Patch as application/json-patch+json")
	}
	msg := c.Query("message")
	if len(msg) > maxChangeMessage {
		return fiber.NewError(fiber.StatusBadRequest, fmt.Sprintf("message: at most %d bytes", maxChangeMessage))
	}
	ops, err := jsonpatch.Parse(c.Body(), jsonpatch.Limits{})
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	ctx, cancel := d.ctx()
	defer cancel()
	dc, err := d.read(ctx, id)
	if err != nil {
		return err
	}
	done, err := d.turn(ctx)
	if err != nil {
		return err
	}
	chunk, hash, err := content.Edit(dc.Changes, ops, msg, time.Now())
	done()
	var pe *content.PatchError
	if errors.As(err, &pe) {
		if pe.Conflict {
			return fiber.NewError(fiber.StatusConflict, pe.Error())
		}
		return fiber.NewError(fiber.StatusBadRequest, pe.Error())
	}
	if err != nil {
		return err
	}
	if chunk != nil {
		if chunk, hash, err = d.attribute(string(id), a.User, chunk, hash); err != nil {
			return err
		}
	}
	if chunk == nil { // only tests, or nothing
		heads := hexHeads(dc.Heads)
		c.Set(fiber.HeaderETag, etag(heads))
		return c.JSON(fiber.Map{"changed": false, "heads": heads})
	}
	heads, err := d.n.hub.SubmitChanges(ctx, id, a.User, [][]byte{chunk})
	if err != nil {
		return hubError(err)
	}
	hh := hexHeads(heads)
	d.n.auditRequest(c, auditEvent{Event: "doc_change", User: a.User, Doc: string(id),
		Reason: fmt.Sprintf("JSON patch of %d operations: change %s", len(ops), hash)})
	c.Set(fiber.HeaderETag, etag(hh))
	return c.JSON(fiber.Map{"changed": true, "hash": hash.String(), "heads": hh})
}

// getExport: GET /api/docs/{id}/export: the compacted Automerge binary.
func (d *docAPI) getExport(c *fiber.Ctx, a auth.Access) error {
	id, _, err := d.doc(c, a)
	if err != nil {
		return err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	dc, err := d.read(ctx, id)
	if err != nil {
		return err
	}
	tag := etag(hexHeads(dc.Heads))
	c.Set(fiber.HeaderETag, tag)
	if notModified(c, tag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	done, err := d.turn(ctx)
	if err != nil {
		return err
	}
	defer done()
	bin, err := content.Save(dc.Changes)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEOctetStream)
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+string(id)+`.automerge"`)
	return c.Send(bin)
}

// importChanges returns the change chunks of an imported binary:
// concatenated change chunks as they are, or the changes of a document
// chunk (Automerge.save), read by the isolated loader (content.Split).
// Either way the sync engine checks every change, alone, before anything
// is stored: a change it refuses, or one whose dependencies are missing,
// refuses the import.
func importChanges(ctx context.Context, body []byte) ([][]byte, error) {
	chunks, err := amsync.SplitChunks(body)
	if err != nil || len(chunks) == 0 {
		return nil, fiber.NewError(fiber.StatusBadRequest, "not an Automerge binary: "+errString(err, "empty body"))
	}
	if isDocChunk(chunks[0]) {
		if len(chunks) > 1 {
			return nil, fiber.NewError(fiber.StatusBadRequest, "send one document chunk (Automerge.save) or change chunks, not both")
		}
		if chunks, err = content.Split(ctx, body, docAPIMaxBytes); err != nil {
			return nil, fiber.NewError(fiber.StatusBadRequest, "cannot read the document: "+err.Error())
		}
	}
	eng := syncengine.New(syncengine.Options{})
	if _, err := eng.AddChanges(nil, chunks...); err != nil {
		return nil, fiber.NewError(fiber.StatusBadRequest, "refused: "+err.Error())
	}
	if eng.Queued() > 0 {
		return nil, fiber.NewError(fiber.StatusBadRequest, fmt.Sprintf("refused: %d changes depend on changes that are not in the binary", eng.Queued()))
	}
	if eng.Bytes() > docAPIMaxBytes {
		return nil, fiber.NewError(fiber.StatusRequestEntityTooLarge, fmt.Sprintf("the document holds %d bytes of changes; at most %d can be imported", eng.Bytes(), docAPIMaxBytes))
	}
	return chunks, nil
}

func errString(err error, def string) string {
	if err == nil {
		return def
	}
	return err.Error()
}

// isDocChunk reports whether chunk is a document chunk (type 0).
func isDocChunk(chunk []byte) bool { return len(chunk) > 8 && chunk[8] == 0 }

// postImport: POST /api/docs/import[?documentId=automerge:...] with an
// Automerge binary: a new document owned by the caller.
func (d *docAPI) postImport(c *fiber.Ctx, a auth.Access) error {
	id := protocol.NewDocumentID()
	if q := c.Query("documentId"); q != "" {
		var err error
		if id, err = protocol.ParseDocumentID(q); err != nil {
			return fiber.NewError(fiber.StatusBadRequest, "documentId: "+err.Error())
		}
	}
	ctx, cancel := d.ctx()
	defer cancel()
	done, err := d.turn(ctx)
	if err != nil {
		return err
	}
	chunks, err := importChanges(ctx, c.Body())
	done()
	if err != nil {
		return err
	}
	if d.n.auth != nil {
		// An import is a new document of the caller's: it counts against
		// their documents (--max-docs-per-user, --quota-file).
		if err := d.n.checkDocQuota(ctx, c, a.User); err != nil {
			return err
		}
		if err := d.n.auth.acl.Claim(ctx, id, a.User, time.Now()); err != nil {
			if errors.Is(err, access.ErrClaimed) {
				return fiber.NewError(fiber.StatusConflict, "this document already exists")
			}
			return errUnavailable
		}
		d.n.auditRequest(c, auditEvent{Event: "access_change", User: a.User, Doc: string(id), Reason: "created by import"})
		_ = d.n.publish(ctx, auth.Event{Kind: auth.EventAccess, Doc: id})
	}
	heads, err := d.n.hub.CreateDocument(ctx, id, a.User, chunks)
	if errors.Is(err, hub.ErrDocExists) {
		return fiber.NewError(fiber.StatusConflict, "this document already exists")
	}
	if err != nil {
		e := hubError(err)
		var fe *fiber.Error
		if errors.As(e, &fe) && d.n.auth != nil {
			fe.Message += " (the document was created empty: sync its changes or import into another id)"
		}
		return e
	}
	d.n.auditRequest(c, auditEvent{Event: "doc_import", User: a.User, Doc: string(id),
		Reason: strconv.Itoa(len(chunks)) + " changes imported"})
	if d.n.auth != nil {
		// Without login the hub's first store write announces it (onStored).
		d.n.emit(webhook.DocumentCreated, id, a.User)
	}
	hh := hexHeads(heads)
	c.Set(fiber.HeaderETag, etag(hh))
	return c.Status(fiber.StatusCreated).JSON(fiber.Map{
		"documentId": string(id), "url": id.URL(), "role": hub.RoleOwner.String(), "heads": hh, "changes": len(chunks),
	})
}

// historyEntry is one change in GET history.
type historyEntry struct {
	Hash    string   `json:"hash"`
	Actor   string   `json:"actor"`
	Seq     uint64   `json:"seq"`
	Time    string   `json:"time,omitempty"` // RFC 3339; absent if the change has none
	Message string   `json:"message,omitempty"`
	Deps    []string `json:"deps"`
	// User made the change through POST changes (owners see it; see
	// api_authors.go).
	User string `json:"user,omitempty"`
}

// getHistory: GET /api/docs/{id}/history[?limit=N][&before=hash]: the
// changes, newest first (the reverse of an order in which each change
// follows its dependencies), a page at a time; for owners, the user who
// made each change through the API.
func (d *docAPI) getHistory(c *fiber.Ctx, a auth.Access) error {
	id, role, err := d.doc(c, a)
	if err != nil {
		return err
	}
	limit := historyPage
	if q := c.Query("limit"); q != "" {
		if limit, err = strconv.Atoi(q); err != nil || limit < 1 || limit > historyMaxPage {
			return fiber.NewError(fiber.StatusBadRequest, fmt.Sprintf("limit: an integer from 1 to %d", historyMaxPage))
		}
	}
	var before *syncengine.Hash
	if q := c.Query("before"); q != "" {
		b, err := hex.DecodeString(q)
		if err != nil || len(b) != 32 {
			return fiber.NewError(fiber.StatusBadRequest, "before: a change hash, 64 hex digits")
		}
		before = new(syncengine.Hash)
		copy(before[:], b)
	}
	ctx, cancel := d.ctx()
	defer cancel()
	dc, err := d.read(ctx, id)
	if err != nil {
		return err
	}
	out := make([]historyEntry, 0, min(limit, len(dc.Changes)))
	found := before == nil
	more := false
	for i := len(dc.Changes) - 1; i >= 0; i-- {
		ch, err := amsync.ParseChange(dc.Changes[i])
		if err != nil {
			return fmt.Errorf("failed to read change %d: %w", i, err)
		}
		if !found {
			found = ch.Hash == *before
			continue
		}
		if len(out) == limit {
			more = true
			break
		}
		e := historyEntry{Hash: ch.Hash.String(), Actor: hex.EncodeToString(ch.Actor), Seq: ch.Seq, Message: ch.Message, Deps: hexHeads(ch.Deps)}
		if ch.Time != 0 {
			e.Time = time.UnixMilli(ch.Time).UTC().Format(time.RFC3339Nano)
		}
		if role == hub.RoleOwner {
			e.User = d.authorOf(string(id), ch)
		}
		out = append(out, e)
	}
	if !found {
		return fiber.NewError(fiber.StatusBadRequest, "before: not a change of this document")
	}
	res := fiber.Map{"changes": out, "total": len(dc.Changes), "heads": hexHeads(dc.Heads)}
	if more {
		res["next"] = out[len(out)-1].Hash
	}
	return c.JSON(res)
}
