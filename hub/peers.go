package hub

import (
	"errors"
	"time"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// peerState is what a document knows of one connected peer.
type peerState struct {
	role       Role
	st         *syncengine.State
	dirty      bool      // a message may be due to this peer
	out        []outMsg  // generated sync messages, sent once the store has their changes
	stateBytes int       // st.RetainedBytes(), as counted in the session's stateBytes
	sentAt     time.Time // when the last sync message for the peer was generated
	// pendingUntil is when a requester of a document that does not exist
	// (yet) is told so (see expirePending); zero for other peers.
	pendingUntil time.Time
}

// outMsg is a generated sync message and the store write it waits for.
type outMsg struct {
	data  []byte
	needs uint64 // sent once document.durable reaches it (persist.go)
}

// sendUnavailable tells s the document is unavailable: unknown, denied or
// unreadable, all alike.
func (d *document) sendUnavailable(s *session) {
	s.send(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: d.h.opts.PeerID, TargetID: s.peerID, DocumentID: d.id})
}

// reauthorize asks the Authorizer again about every peer: a peer that lost
// its role is told the document is unavailable and dropped; the others get
// their new role (a viewer's next changes are refused). A peer refused
// before that may now read is let in and sent a sync message, so a client
// that created a document before claiming it syncs it once the claim lands.
func (d *document) reauthorize() {
	for s, ps := range d.peers {
		r := d.role(s)
		if r != RoleNone {
			ps.role = r
			continue
		}
		d.deny(s)
		d.removePeer(s)
		d.sendUnavailable(s)
	}
	for s := range d.denied {
		if s.closed.Load() {
			delete(d.denied, s)
			continue
		}
		r := d.role(s)
		if r == RoleNone {
			continue
		}
		delete(d.denied, s)
		d.letIn(s, r)
	}
	if d.exists {
		return
	}
	// Peers refused a document that does not exist wait in the hub, not
	// here (see receiveSync): ask again for them.
	for _, s := range d.h.takeWaiters(d.id) {
		if s.closed.Load() {
			continue
		}
		if r := d.role(s); r != RoleNone {
			d.letIn(s, r)
		} else {
			d.wait(s)
		}
	}
}

// letIn admits s, refused before, with role r, and offers it a sync
// message.
func (d *document) letIn(s *session, r Role) {
	ps := d.admit(s, r)
	if d.exists {
		ps.dirty = true // flush answers, once the store has every change
		return
	}
	// Nothing stored yet, so nothing to wait for: offer our (empty)
	// state at once, and the peer answers with what it has.
	d.generate(ps)
	d.sendOut(s, ps)
}

// deny counts a refused peer, reports it (once), and remembers it for
// Reauthorize.
func (d *document) deny(s *session) {
	d.h.m.Denials.Inc()
	if _, again := d.denied[s]; again {
		return // reported once per peer and document, not per message
	}
	d.denied[s] = struct{}{}
	s.report(SecurityEvent{Kind: EventDenied, Doc: d.id, Err: errDenied})
}

// role asks the Authorizer what s may do here (editor without one).
func (d *document) role(s *session) Role {
	a := d.h.opts.Authorizer
	if a == nil {
		return RoleEditor
	}
	ctx, cancel := d.storeCtx()
	defer cancel()
	r, err := a.Role(ctx, s.identity, d.id)
	if err != nil {
		d.log.Warn("authorizer failed; denying", "user", s.identity.User, "err", err)
		return RoleNone
	}
	return r
}

// peer returns s's state here, making it on its first message; nil if s
// may not read the document.
func (d *document) peer(s *session) *peerState {
	if ps, ok := d.peers[s]; ok {
		return ps
	}
	if _, denied := d.denied[s]; denied {
		d.h.m.Denials.Inc()
		return nil // asked again only on Reauthorize: a refused peer cannot make us ask the Authorizer per message
	}
	role := d.role(s)
	if role == RoleNone {
		d.deny(s)
		return nil
	}
	return d.admit(s, role)
}

// admit makes s a peer of the document with role, resuming the sync state
// stored for its storage.
func (d *document) admit(s *session, role Role) *peerState {
	ps := &peerState{role: role}
	if !s.ephemeral {
		ctx, cancel := d.storeCtx()
		start := time.Now()
		raw, err := d.h.opts.Store.LoadSyncState(ctx, d.id, s.storageID)
		cancel()
		d.h.m.observeStore("load_sync_state", start)
		if err == nil {
			if ps.st, err = syncengine.DecodeState(raw); err != nil {
				d.log.Warn("ignoring unreadable sync state", "storage_id", s.storageID, "err", err)
			}
		} else if !errors.Is(err, ErrNotFound) {
			d.log.Warn("failed to load sync state", "storage_id", s.storageID, "err", err)
		}
	}
	if ps.st == nil {
		ps.st = syncengine.NewState()
	}
	d.peers[s] = ps
	return ps
}

// wait makes s a waiter for the document (see receiveSync), or drops the
// document from s's if the node has too many waiters.
func (d *document) wait(s *session) {
	if !d.h.addWaiter(d.id, s) {
		s.dropDoc(d.id)
	}
}

// admitWaiters lets in the peers that were told the document did not
// exist and still wait for it: they get it in flush, once it is stored,
// as automerge-repo's own server pushes a document to its requesters.
func (d *document) admitWaiters() {
	for _, s := range d.h.takeWaiters(d.id) {
		if s.closed.Load() {
			continue
		}
		if ps := d.peer(s); ps != nil {
			ps.dirty = true
		}
	}
}

// removePeer drops s from the document's peers (if it is one), with the
// changes it left queued and its share of the connection's state budget.
func (d *document) removePeer(s *session) {
	if ps, ok := d.peers[s]; ok {
		s.stateBytes.Add(-int64(ps.stateBytes))
		d.h.stateBytes.Add(-int64(ps.stateBytes))
		delete(d.peers, s)
	}
	d.eng.Forget(s)
}

// trackState updates the session's and the node's counts of sync state
// bytes after ps's state took a message. It reports whether ps's state
// grew, and the session's and the node's new totals.
func (d *document) trackState(s *session, ps *peerState) (grew bool, conn, node int64) {
	n := ps.st.RetainedBytes()
	delta := int64(n - ps.stateBytes)
	ps.stateBytes = n
	return delta > 0, s.stateBytes.Add(delta), d.h.stateBytes.Add(delta)
}

// armPending makes the document look at its pending requesters at t, or
// sooner if it is armed for sooner.
func (d *document) armPending(t time.Time) {
	if d.reqArmed && !t.Before(d.reqAt) {
		return
	}
	d.reqArmed, d.reqAt = true, t
	d.reqTimer.Reset(time.Until(t))
}

// expirePending tells the requesters that waited Options.PendingWait for a
// document that still does not exist that it is unavailable. They stop
// being peers, so that a document only requesters wait for leaves memory
// (see run); each waits as a cheap entry in the hub instead, counted
// against its connection's documents, and is let in if the document
// appears while it is connected (admitWaiters).
func (d *document) expirePending() {
	d.reqArmed = false
	if d.exists {
		return // it appeared: they are peers like any other
	}
	now := time.Now()
	for s, ps := range d.peers {
		if ps.pendingUntil.IsZero() {
			continue
		}
		if now.Before(ps.pendingUntil) {
			d.armPending(ps.pendingUntil)
			continue
		}
		d.removePeer(s)
		d.wait(s)
		d.sendUnavailable(s)
	}
}
