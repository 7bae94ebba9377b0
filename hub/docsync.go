package hub

import (
	"errors"
	"fmt"
	"time"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// accept is the engine's check of every change before it is applied: a
// viewer's changes are refused. Changes from other nodes and the store
// were checked where they came from.
func (d *document) accept(_ *amsync.Change, origin any) error {
	if s, ok := origin.(*session); ok {
		if ps := d.peers[s]; ps == nil || ps.role < RoleEditor {
			return ErrReadOnly
		}
	}
	return nil
}

// nothingNew reports whether a sync message carries no change this
// document lacks (a viewer may send changes the document already has, for
// example after losing its sync state); an unreadable message counts as
// new.
func (d *document) nothingNew(data []byte) bool {
	m, err := amsync.ParseMessageLimits(data, syncBounds)
	if err != nil {
		return false
	}
	budget := d.h.opts.MaxInflatedBytes // as for any sync message: a viewer cannot inflate more
	for _, entry := range m.Changes {
		chunks, err := amsync.SplitChunks(entry)
		if err != nil {
			return false
		}
		for _, chunk := range chunks {
			c, err := amsync.ParseChangeLimit(chunk, budget)
			if err != nil || !d.eng.Has(c.Hash) {
				return false
			}
			budget -= c.InflatedLen()
		}
	}
	return true
}

// syncBounds are the engine's default bounds of a sync message, for the
// hub's own looks into messages before the engine sees them.
var syncBounds = amsync.MessageLimits{
	MaxHashes:     syncengine.DefaultMaxHashes,
	MaxHaves:      syncengine.DefaultMaxHaves,
	MaxBloomBytes: syncengine.DefaultMaxBloomBytes,
}

func (d *document) receiveSync(s *session, msg *protocol.Message) {
	if s.closed.Load() {
		return // queued before its connection failed
	}
	ps := d.peer(s)
	if ps == nil {
		// Exactly what a document that does not exist gets.
		if !d.exists {
			// Nor is it kept open for the refused peer: it waits as a
			// requester does (below), and is asked again if the document
			// appears.
			delete(d.denied, s)
			d.wait(s)
		}
		d.sendUnavailable(s)
		return
	}
	if ps.role < RoleEditor && !d.nothingNew(msg.Data) {
		// Refused here, not only by accept: a change whose dependencies
		// are missing would be queued before accept ever saw it.
		d.removePeer(s)
		d.h.m.Denials.Inc()
		s.fail(protocol.CloseReadOnly, fmt.Errorf("%w (document %s)", ErrReadOnly, d.id))
		return
	}
	applied, err := d.eng.ReceiveMessage(ps.st, msg.Data, s)
	if err != nil {
		d.removePeer(s)
		switch {
		case errors.Is(err, ErrReadOnly):
			s.fail(protocol.CloseReadOnly, fmt.Errorf("%w (document %s)", ErrReadOnly, d.id))
		case errors.Is(err, syncengine.ErrLimitExceeded):
			d.h.m.LimitHits.WithLabelValues(limitOf(err)).Inc()
			s.fail(protocol.CloseLimitExceeded, fmt.Errorf("sync message for %s refused: %w", d.id, err))
		default:
			s.fail(protocol.CloseInvalidSyncData, fmt.Errorf("invalid sync data for %s: %w", d.id, err))
		}
		return
	}
	grew, n, all := d.trackState(s, ps)
	if n > int64(d.h.opts.MaxConnBytes) {
		d.removePeer(s)
		d.h.m.LimitHits.WithLabelValues(LimitConnBytes).Inc()
		s.fail(protocol.CloseLimitExceeded, fmt.Errorf("%w: this connection's sync state holds %d bytes (at most %d)", ErrLimitExceeded, n, d.h.opts.MaxConnBytes))
		return
	}
	if grew && all > int64(d.h.opts.MaxStateBytes) {
		// The node is full of peers' sync state: whoever adds to it now
		// is asked to come back later (honest states are small).
		d.removePeer(s)
		d.h.m.LimitHits.WithLabelValues(LimitStateBytes).Inc()
		s.fail(protocol.CloseTryAgainLater, fmt.Errorf("%w: the node holds %d bytes of sync state (at most %d); try again later", ErrLimitExceeded, all, d.h.opts.MaxStateBytes))
		return
	}
	for _, c := range applied {
		d.unsaved = append(d.unsaved, c.Stored)
	}
	d.h.m.ChangesAccepted.Add(float64(len(applied)))
	ps.dirty = true
	if msg.Type == protocol.TypeSync {
		d.exists = true // a peer that syncs a document we lack creates it
	}
	if !d.exists {
		// Nobody has it yet. Its creator's first changes may be on their
		// way (on another connection, through another node): the
		// requester waits Options.PendingWait for them as a peer, and is
		// sent the document as soon as it exists (flush); after that it
		// is told the document is unavailable (expirePending).
		if ps.pendingUntil.IsZero() {
			ps.pendingUntil = time.Now().Add(d.h.opts.PendingWait)
		}
		d.armPending(ps.pendingUntil)
		return
	}
	if heads, ok := ps.st.TheirHeads(); ok && !s.ephemeral {
		d.learnHeads(s, s.storageID, knownHeads{raw: heads, timestamp: uint64(time.Now().UnixMilli())})
	}
	// Answer now, not after the rest of the batch: a later message from the
	// same peer can make the engine believe the peer already knows our
	// heads and skip the acknowledgement the peer waits for. The answer is
	// sent once the store write holding its changes is confirmed (sendOut).
	d.generate(ps)
}

// limitOf names the bound an engine error hit, for plait_limit_hits_total.
func limitOf(err error) string {
	switch {
	case errors.Is(err, syncengine.ErrDocTooLarge):
		return LimitDocBytes
	case errors.Is(err, syncengine.ErrInflateBudget):
		return LimitInflatedBytes
	}
	return LimitSyncBounds
}

// generate queues the next sync message for a peer, if one is due, with
// the store write it waits for (needs): it goes out once the store has
// confirmed every change whose heads it carries. It always runs when the
// engine expects it (after each received message, after new heads):
// skipping one can make the engine skip an acknowledgement the peer
// waits for. The engine counts the message as sent when it is generated;
// holding it back is no different, for the peer and the engine, from a
// slower network: the peer gets every message, in order.
func (d *document) generate(ps *peerState) {
	if data := d.eng.GenerateMessage(ps.st); data != nil {
		ps.out = append(ps.out, outMsg{data: data, needs: d.needs()})
		ps.sentAt = time.Now()
	}
}

// answerWait is how long new changes wait for a peer that has not
// answered the last changes sent to it (holding). Honest peers answer at
// once; the wait only bounds what a peer that never answers costs itself.
const answerWait = time.Second

// holding reports whether new changes for a peer wait for its answer to
// the last changes sent to it: at most one message of changes per peer
// per round trip. A peer that keeps up answers within a round trip and
// gets every change as soon as before, a little batched; a peer that
// falls behind (a slow browser, a busy client) gets the changes that
// arrived meanwhile in one message when it answers, instead of a queue
// of small messages that costs it, and the node, per message. Its
// answer is handled by receiveSync, which always generates the reply.
// If no answer comes within answerWait, the changes go anyway.
func (d *document) holding(ps *peerState, now time.Time) bool {
	if !ps.st.Unanswered() {
		return false
	}
	until := ps.sentAt.Add(answerWait)
	if !now.Before(until) {
		return false
	}
	if !d.answerArmed || until.Before(d.answerAt) {
		d.answerArmed, d.answerAt = true, until
		d.answerTimer.Reset(until.Sub(now))
	}
	return true
}

// sendOut sends the sync messages generated for s, in order, as far as
// their changes are durable and its write queue has room. Those that wait
// for a store write go when it is confirmed (the owner flushes then);
// those that wait for room, after backlogDelay. So documents take turns at a busy
// connection: a client that opens several large documents at once gets
// their pieces as it reads them, instead of overflowing its queue (4429)
// and starting over on every reconnect. A peer whose waiting messages
// pass twice MaxSendBytes keeps asking without reading: it is closed as
// a slow consumer, as the transport would.
func (d *document) sendOut(s *session, ps *peerState) {
	k, storing := 0, false
	for ; k < len(ps.out); k++ {
		if d.exists && ps.out[k].needs > d.durable {
			storing = true // the write holding its changes is in flight (or next)
			break
		}
		if !s.trySend(&protocol.Message{Type: protocol.TypeSync, SenderID: d.h.opts.PeerID, TargetID: s.peerID, DocumentID: d.id, Data: ps.out[k].data}) {
			break
		}
	}
	rest := copy(ps.out, ps.out[k:])
	clear(ps.out[rest:])
	ps.out = ps.out[:rest]
	if rest == 0 || storing {
		return
	}
	waiting := 0
	for _, o := range ps.out {
		waiting += len(o.data)
	}
	if rest > 2 && waiting > 2*d.h.opts.MaxSendBytes {
		d.removePeer(s)
		d.h.m.Disconnects.WithLabelValues(protocol.CloseSlowConsumer.String()).Inc()
		s.conn.Close(protocol.CloseSlowConsumer, "slow consumer: sync messages wait unread")
		return
	}
	if !d.backlogged {
		d.backlogged = true
		d.backlog.Reset(backlogDelay)
	}
}

// backlogDelay is how soon a document looks again at peers whose write
// queues were too full for a sync message.
const backlogDelay = 50 * time.Millisecond
