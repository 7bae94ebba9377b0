package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// Event tells a subscriber that changes arrived from the server.
type Event struct {
	// Heads are the document's heads after the changes.
	Heads []Hash
	// Changes is how many changes were applied.
	Changes int
	// Applied describes each change, in the order applied.
	Applied []ChangeInfo
}

// ChangeInfo describes one change.
type ChangeInfo struct {
	Hash    Hash
	Actor   []byte
	Seq     uint64
	Time    int64 // as its author set it: milliseconds since 1970 by convention
	Message string
}

// Handle is one document of a Client.
type Handle struct {
	c  *Client
	id protocol.DocumentID

	mu      sync.Mutex
	doc     *automerge.Doc
	eng     *syncengine.Doc
	st      *syncengine.State // sync state on cn; nil while offline
	cn      *conn
	created bool          // made here: nothing to ask the server for
	sent    string        // type of the last sync message sent on cn
	ready   chan struct{} // closed once the document has content (or was created here)
	unavail chan struct{} // closed when the server said it has no such document
	subs    map[int]func(Event)
	ephs    map[int]func(from string, data []byte)
	nextSub int
}

// local is the engine origin of this client's own changes.
var local = new(int)

func newHandle(c *Client, id protocol.DocumentID, created bool) (*Handle, error) {
	h := &Handle{
		c: c, id: id, created: created,
		doc:     automerge.New(),
		eng:     syncengine.New(syncengine.Options{}),
		ready:   make(chan struct{}),
		unavail: make(chan struct{}),
		subs:    map[int]func(Event){},
		ephs:    map[int]func(string, []byte){},
	}
	if c.store != nil && !created {
		if err := h.load(); err != nil {
			return nil, err
		}
	}
	if created || h.eng.Len() > 0 {
		close(h.ready)
	}
	return h, nil
}

// load reads the document kept on disk (a snapshot and the changes
// appended after it) into the sync engine and the automerge-go document.
func (h *Handle) load() error {
	snapshot, raws, err := h.c.store.loadChanges(h.id)
	if err != nil {
		return err
	}
	if snapshot != nil {
		doc, err := automerge.Load(snapshot)
		if err != nil {
			return fmt.Errorf("failed to load the kept snapshot of %s: %w", h.id, err)
		}
		chs, err := doc.Changes()
		if err != nil {
			return fmt.Errorf("failed to read the kept snapshot of %s: %w", h.id, err)
		}
		saved := make([][]byte, 0, len(chs)+len(raws))
		for _, ch := range chs {
			saved = append(saved, ch.Save())
		}
		raws = append(saved, raws...)
	}
	if len(raws) == 0 {
		return nil
	}
	if _, err := h.eng.AddChanges(local, raws...); err != nil {
		return fmt.Errorf("failed to read the kept changes of %s: %w", h.id, err)
	}
	doc, err := automerge.Load(h.allLocked())
	if err != nil {
		return fmt.Errorf("failed to load the kept document %s: %w", h.id, err)
	}
	h.doc = doc
	return nil
}

// allLocked returns every change of the sync engine, concatenated.
func (h *Handle) allLocked() []byte {
	var all []byte
	h.eng.All(func(raw []byte) bool { all = append(all, raw...); return true })
	return all
}

// ID returns the document id.
func (h *Handle) ID() protocol.DocumentID { return h.id }

// URL returns the automerge: URL of the document.
func (h *Handle) URL() string { return h.id.URL() }

// Heads returns the document's heads, sorted.
func (h *Handle) Heads() []Hash {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.eng.Heads())
}

// View runs fn with the document under the handle's lock. fn must not
// change the document (use Change) nor keep it.
func (h *Handle) View(fn func(d *automerge.Doc) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return fn(h.doc)
}

// Change runs fn on the document under the handle's lock, commits what it
// did as one change, keeps it (with Dir) and syncs it. automerge-go has no
// rollback: if fn fails after changing the document, what it changed is
// committed all the same, and its error is returned.
func (h *Handle) Change(fn func(d *automerge.Doc) error) error {
	return h.change("", fn, false)
}

// ChangeMessage is Change with a commit message, which every peer sees
// (ChangeInfo.Message).
func (h *Handle) ChangeMessage(msg string, fn func(d *automerge.Doc) error) error {
	return h.change(msg, fn, false)
}

func (h *Handle) change(msg string, fn func(d *automerge.Doc) error, allowEmpty bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ferr error
	if fn != nil {
		ferr = fn(h.doc)
	}
	hash, err := h.doc.Commit(msg, automerge.CommitOptions{AllowEmpty: allowEmpty})
	if err != nil {
		if hash == (automerge.ChangeHash{}) && err.Error() == "Commit is empty" {
			return ferr // fn changed nothing: nothing to sync
		}
		return fmt.Errorf("failed to commit: %w", err)
	}
	if hash != (automerge.ChangeHash{}) && !h.eng.Has(Hash(hash)) {
		ch, err := h.doc.Change(hash)
		if err != nil {
			return fmt.Errorf("failed to read the new change: %w", err)
		}
		raw := ch.Save()
		if _, err := h.eng.AddChanges(local, raw); err != nil {
			return fmt.Errorf("the new change does not pass the sync engine's checks: %w", err)
		}
		if err := h.keep(raw, true); err != nil {
			return err
		}
		h.markReady()
		h.syncLocked()
	}
	return ferr
}

// Subscribe calls fn after every batch of changes that arrives from the
// server, on the client's reader goroutine. It returns a function that
// ends the subscription. fn must not block: while it runs the client
// reads nothing else, for any document, so one that waits (for room in a
// full channel, say) stops the client from syncing. How many batches a
// run of remote edits arrives in depends on the server's timing (one per
// change, at worst).
func (h *Handle) Subscribe(fn func(Event)) (cancel func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := h.nextSub
	h.nextSub++
	h.subs[k] = fn
	return func() {
		h.mu.Lock()
		delete(h.subs, k)
		h.mu.Unlock()
	}
}

// OnEphemeral calls fn for every ephemeral message another peer broadcasts
// on this document.
func (h *Handle) OnEphemeral(fn func(from string, data []byte)) (cancel func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := h.nextSub
	h.nextSub++
	h.ephs[k] = fn
	return func() {
		h.mu.Lock()
		delete(h.ephs, k)
		h.mu.Unlock()
	}
}

// Broadcast sends data to the other peers of this document, at most once
// (presence, cursors). It fails while offline.
func (h *Handle) Broadcast(data []byte) error {
	cn := h.c.current()
	if cn == nil {
		return errors.New("not connected")
	}
	return h.c.write(cn, &protocol.Message{
		Type: protocol.TypeEphemeral, SenderID: h.c.opts.PeerID, TargetID: cn.server, DocumentID: h.id,
		SessionID: h.c.session, Count: h.c.ephCount.Add(1), Data: data,
	})
}

// InSync reports whether the server, on the current connection, has
// acknowledged exactly this client's heads.
func (h *Handle) InSync() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.st == nil {
		return false
	}
	theirs, ok := h.st.TheirHeads()
	return ok && slices.Equal(theirs, h.eng.Heads())
}

func (h *Handle) isReady() bool {
	select {
	case <-h.ready:
		return true
	default:
		return false
	}
}

func (h *Handle) markReady() {
	select {
	case <-h.ready:
	default:
		close(h.ready)
	}
}

func (h *Handle) markUnavailable(cn *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cn != cn {
		return
	}
	// The server has nothing: start over, so that what we have (now or
	// later) is offered from scratch rather than waiting for an answer
	// that will not come. If we asked with a request but have content
	// now, offer it at once. If we offered content and still got
	// doc-unavailable, the server refuses us the document (no permission):
	// offering again would only ping-pong, so wait for the next local
	// change, a message from the server (it sends one if we are let in
	// later) or the next connection.
	h.st = syncengine.NewState()
	if h.eng.Len() > 0 {
		if h.sent == protocol.TypeRequest {
			h.syncLocked()
		}
		return
	}
	select {
	case <-h.unavail:
	default:
		close(h.unavail)
	}
}

func (h *Handle) waitReady(ctx context.Context) error {
	select {
	case <-h.ready:
		return nil
	case <-h.unavail:
		return fmt.Errorf("%w: %s", ErrUnavailable, h.id)
	case <-ctx.Done():
		return fmt.Errorf("failed to find %s: %w", h.id, ctx.Err())
	case <-h.c.done:
		return ErrClosed
	}
}

// keep appends raw to the document's changes on disk (with Dir); with
// durable set (a local change) it returns once they are fsynced, unless
// Options.NoSync. Then it compacts the document's file if it has outgrown
// the document: a failed compaction is logged, the file stays as it was.
func (h *Handle) keep(raw []byte, durable bool) error {
	if h.c.store == nil {
		return nil
	}
	compact, err := h.c.store.appendChanges(h.id, raw, durable)
	if err != nil {
		return fmt.Errorf("failed to keep the change on disk: %w", err)
	}
	if compact {
		if err := h.compactLocked(); err != nil {
			h.c.log.Warn("failed to compact the kept document", "doc", string(h.id), "err", err)
		}
	}
	return nil
}

// compactLocked offers the store a snapshot of everything kept: the
// automerge-go document, or with IndexOnly (whose document may lack
// changes the engine has) one built from the engine's changes.
func (h *Handle) compactLocked() error {
	doc := h.doc
	if h.c.opts.IndexOnly {
		var err error
		if doc, err = automerge.Load(h.allLocked()); err != nil {
			return err
		}
	}
	_, err := h.c.store.compact(h.id, doc.Save())
	return err
}

// connect starts the document's sync on cn: with the sync state kept for
// the server's storage, or a fresh one.
func (h *Handle) connect(cn *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cn = cn
	h.st = nil
	if h.c.store != nil && cn.serverStorage != "" {
		if b, err := h.c.store.loadSyncState(h.id, cn.serverStorage); err == nil && b != nil {
			if st, err := syncengine.DecodeState(b); err == nil {
				h.st = st
			}
		}
	}
	if h.st == nil {
		h.st = syncengine.NewState()
	}
	h.syncLocked()
}

// disconnect ends the sync on cn and keeps its state (with Dir).
func (h *Handle) disconnect(cn *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cn != cn {
		return
	}
	h.saveStateLocked()
	h.cn, h.st = nil, nil
}

func (h *Handle) saveStateLocked() {
	if h.c.store == nil || h.cn == nil || h.cn.serverStorage == "" || h.st == nil {
		return
	}
	if err := h.c.store.saveSyncState(h.id, h.cn.serverStorage, h.st.Encode()); err != nil {
		h.c.log.Warn("failed to keep a sync state", "doc", string(h.id), "err", err)
	}
}

// syncLocked sends the next sync message, if one is due. A document with
// nothing yet asks with a request (the server answers doc-unavailable if it
// lacks it too).
func (h *Handle) syncLocked() {
	if h.cn == nil || h.st == nil || (h.created && h.eng.Len() == 0) {
		return
	}
	data := h.eng.GenerateMessage(h.st)
	if data == nil {
		return
	}
	typ := protocol.TypeSync
	if h.eng.Len() == 0 {
		typ = protocol.TypeRequest
	}
	h.sent = typ
	if err := h.c.write(h.cn, &protocol.Message{Type: typ, SenderID: h.c.opts.PeerID, TargetID: h.cn.server, DocumentID: h.id, Data: data}); err != nil {
		h.c.log.Debug("failed to send", "doc", string(h.id), "err", err)
		h.cn.ws.CloseNow() // the reader sees it and the client reconnects
	}
}

// receive takes a sync message from the server.
func (h *Handle) receive(cn *conn, data []byte) error {
	h.mu.Lock()
	if h.cn != cn || h.st == nil {
		h.mu.Unlock()
		return nil
	}
	applied, err := h.eng.ReceiveMessage(h.st, data, cn)
	if err != nil {
		h.mu.Unlock()
		return fmt.Errorf("invalid sync message for %s: %w", h.id, err)
	}
	var ev Event
	var subs []func(Event)
	if len(applied) > 0 {
		var all []byte
		for _, ch := range applied {
			all = append(all, ch.Raw...)
		}
		// IndexOnly: only what arrives before the document is ready
		// (its content when found) reaches the automerge-go document.
		if !h.c.opts.IndexOnly || !h.isReady() {
			if err := h.doc.LoadIncremental(all); err != nil {
				h.mu.Unlock()
				return fmt.Errorf("failed to apply changes to %s: %w", h.id, err)
			}
		}
		if err := h.keep(all, false); err != nil {
			h.c.log.Warn("failed to keep changes on disk", "doc", string(h.id), "err", err)
		}
		h.markReady()
		ev = Event{Heads: slices.Clone(h.eng.Heads()), Changes: len(applied), Applied: make([]ChangeInfo, len(applied))}
		for i, ch := range applied {
			ev.Applied[i] = ChangeInfo{Hash: ch.Hash, Actor: ch.Actor, Seq: ch.Seq, Time: ch.Time, Message: ch.Message}
		}
		for _, fn := range h.subs {
			subs = append(subs, fn)
		}
	}
	h.syncLocked()
	h.mu.Unlock()
	for _, fn := range subs {
		fn(ev)
	}
	return nil
}

func (h *Handle) deliverEphemeral(from string, data []byte) {
	h.mu.Lock()
	fns := make([]func(string, []byte), 0, len(h.ephs))
	for _, fn := range h.ephs {
		fns = append(fns, fn)
	}
	h.mu.Unlock()
	for _, fn := range fns {
		fn(from, data)
	}
}
