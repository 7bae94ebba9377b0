package hub

import (
	"context"
	"fmt"
	"time"

	"github.com/plaithub/plait/pkg/protocol"
)

// Deleting a document. Hub.DeleteDocument hands the document's owner a
// kindDelete message; the owner (startDelete) tells every peer the
// document is unavailable and detaches it, forgets the changes it had not
// stored, and then (finishDelete) waits for a running compaction, removes
// the document from the store, removes its stream from the broker and
// tells the other nodes (a PubDeleted publication), and exits. A node
// that receives the publication does the same, except publishing: its
// owner detaches its peers and deletes from the store again, which
// removes a batch it stored in the moments before it heard of the
// deletion. A message that reaches the owner after the deletion began is
// answered as for a document that does not exist.
//
// The PubDeleted notice is at most once, like every pub/sub delivery: a
// node that misses it (its Redis connection was down at that moment)
// keeps serving its open copy to its connected peers until they leave.
// With an Authorizer the caller removes the document's permissions first
// and calls Reauthorize on every node, which detaches those peers too.

// deleteOutcome is what DeleteDocument learns from the owner.
type deleteOutcome struct {
	existed bool
	err     error
}

// deletion is a deletion in progress in a document's owner.
type deletion struct {
	local   bool                 // asked on this node (publish to the others)
	existed bool                 // the document existed when it began
	replies []chan deleteOutcome // DeleteDocument calls waiting
}

// DeleteDocument deletes document id on every node: peers connected to it
// (here and, through the broker, on the other nodes that have it open) are
// told it is unavailable and detached; its snapshot, batches, sync states
// and broker stream are removed. It reports whether the document existed
// (was stored or being stored). It returns once the store has deleted it,
// or when ctx is done. A peer that syncs the document's changes again
// later creates it anew, as for any document that does not exist: with an
// Authorizer, the caller removes the permissions first.
func (h *Hub) DeleteDocument(ctx context.Context, id protocol.DocumentID) (existed bool, err error) {
	d := h.document(id, true)
	if d == nil {
		return false, ErrHubClosed
	}
	reply := make(chan deleteOutcome, 1)
	if err := d.post(ctx, docMsg{kind: kindDelete, deleted: reply}); err != nil {
		return false, fmt.Errorf("failed to delete document %s: %w", id, err)
	}
	select {
	case o := <-reply:
		return o.existed, o.err
	case <-ctx.Done():
		return false, fmt.Errorf("failed to delete document %s: %w", id, ctx.Err())
	}
}

// detachDeleted hands another node's PubDeleted notice to the open
// document id, waiting for room in its inbox (bounded by BrokerTimeout).
func (h *Hub) detachDeleted(id protocol.DocumentID, p Publication) {
	d := h.document(id, false)
	if d == nil {
		return // not open here: nothing to detach
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.opts.BrokerTimeout)
	defer cancel()
	if err := d.post(ctx, docMsg{kind: kindRemote, pub: &p}); err != nil {
		h.m.BrokerErrors.WithLabelValues("deleted_notice").Inc()
		h.log.Warn("failed to hand a deletion to its document", "doc", string(id), "err", err)
	}
}

// startDelete detaches every peer (told doc-unavailable) and drops what
// the document holds in memory; finishDelete does the rest once the
// inbox's current batch is handled. local is true for a DeleteDocument
// call, false for another node's notice.
func (d *document) startDelete(reply chan deleteOutcome, local bool) {
	d.deletion = &deletion{local: local, existed: d.exists || d.stored}
	if reply != nil {
		d.deletion.replies = append(d.deletion.replies, reply)
	}
	for s := range d.peers {
		d.removePeer(s)
		s.dropDoc(d.id)
		d.sendUnavailable(s)
	}
	clear(d.denied)
	clear(d.unsaved)
	d.unsaved = d.unsaved[:0]
	d.stream.unpublished = nil
	d.exists, d.stored = false, false
}

// handleDeleted answers a message that reached the owner after the
// deletion began.
func (d *document) handleDeleted(m docMsg) {
	switch m.kind {
	case kindDelete:
		if m.deleted != nil {
			d.deletion.replies = append(d.deletion.replies, m.deleted)
		}
	case kindSync:
		if !m.s.closed.Load() {
			m.s.dropDoc(d.id)
			d.sendUnavailable(m.s)
		}
	}
}

// finishDelete removes the document from the store and the broker, tells
// the callers, and takes the document out of the hub. The owner exits
// after it.
func (d *document) finishDelete() {
	del := d.deletion
	d.abandonWrite()   // its batch would land after the delete
	d.waitCompaction() // its snapshot would land after the delete
	ctx, cancel := d.storeCtx()
	err := d.h.opts.Store.DeleteDoc(ctx, d.id)
	cancel()
	if err != nil {
		d.h.m.StoreErrors.WithLabelValues("delete").Inc()
		err = fmt.Errorf("failed to delete document %s from the store: %w", d.id, err)
	} else if del.local && d.h.opts.Broker != nil {
		bctx, bcancel := d.brokerCtx()
		_, perr := d.h.opts.Broker.Publish(bctx, d.id, Publication{Kind: PubDeleted, Origin: d.h.opts.PeerID})
		bcancel()
		if perr != nil {
			d.h.m.BrokerErrors.WithLabelValues("publish").Inc()
			err = fmt.Errorf("deleted document %s from the store, but failed to tell the other nodes: %w", d.id, perr)
		}
	}
	origin := "remote"
	if del.local {
		origin = "local"
	}
	d.h.m.DocumentsDeleted.WithLabelValues(origin).Inc()
	d.log.Info("document deleted", "origin", origin, "existed", del.existed, "err", err)
	d.unsubscribe()
	d.eng = nil
	d.peers = nil
	for !d.h.tryRemove(d) {
		select {
		case m := <-d.inbox: // a sender still held us: answer it too
			d.handleDeleted(m)
			m.done()
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, r := range del.replies {
		r <- deleteOutcome{existed: del.existed, err: err}
	}
	d.drop()
	d.h.gcSoon()
}
