package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/automerge/automerge-go"
	"golang.org/x/time/rate"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

type docMsgKind int

const (
	kindSync        docMsgKind = iota // sync or request from a peer
	kindEphemeral                     // relay to the other peers
	kindLeave                         // the peer's connection ended
	kindSubscribed                    // the peer subscribed to storageIDs
	kindRemoteHeads                   // the peer gossips heads of some storages
	kindRemote                        // a publication from the broker
	kindCatchUp                       // the broker re-made the subscription: catch up
	kindReauthorize                   // permissions changed: ask the Authorizer again
)

// maxBatchMessages bounds the messages an owner handles between two store
// writes: what is already queued, and what its peers' read loops queue
// while it drains (the inbox itself is small, to keep idle documents
// small). A hot document's acknowledgements then share one store write with
// the edits around them, instead of one write each inbox's worth; the
// bound keeps a flood from postponing the write and the answers.
const maxBatchMessages = 1024

// local reports whether a message comes from one of this node's peers
// (as opposed to the broker or a permission change): only those keep an
// idle document in memory.
func (k docMsgKind) local() bool {
	return k != kindRemote && k != kindCatchUp && k != kindReauthorize
}

// remoteOrigin is the origin, for the engine, of changes that come from
// other nodes (through the broker or the shared store).
var remoteOrigin = new(int)

type docMsg struct {
	kind       docMsgKind
	s          *session
	msg        *protocol.Message
	storageIDs []string
	pub        *Publication
	cost       int // bytes of s's and the hub's in-flight budgets it holds
}

// done returns the budget bytes m holds, once it is handled (or dropped).
func (m docMsg) done() {
	if m.cost > 0 {
		m.s.budget.release(m.cost)
		m.s.h.inflight.release(m.cost)
	}
}

// peerState is what a document knows of one connected peer.
type peerState struct {
	role       Role
	st         *syncengine.State
	dirty      bool     // a message may be due to this peer
	out        [][]byte // generated sync messages, sent once the store has their changes
	stateBytes int      // st.RetainedBytes(), as counted in the session's stateBytes
}

// knownHeads are the heads of one storage for this document, as last heard.
type knownHeads struct {
	heads     []string
	timestamp uint64
}

// document owns one open document: its change index (the sync engine),
// each peer's sync state, and the document's storage. Everything but
// inbox, pending and compacted is touched only by its run goroutine.
type document struct {
	h       *Hub
	id      protocol.DocumentID
	log     *slog.Logger
	inbox   chan docMsg
	pending atomic.Int64 // senders between Hub.document and post
	lagged  atomic.Bool  // a broker delivery was dropped: catch up

	eng     *syncengine.Doc
	exists  bool // stored (or being stored): a request gets it, not doc-unavailable
	created bool // a record exists in the store
	peers   map[*session]*peerState
	denied  map[*session]struct{} // peers refused: asked again on Reauthorize
	unsaved [][]byte              // raw chunks applied since the last store write
	heads   []syncengine.Hash     // heads as last stored
	remote  map[string]knownHeads // storage id -> heads, for remote-heads gossip

	lastSeq       uint64
	snapshotBytes int
	incBytes      int
	compacting    bool               // a compaction goroutine runs
	compacted     chan compactResult // its result

	// With a broker:
	subscribed  bool
	pos         StreamPosition    // the last publication applied (or known stored)
	recentTags  map[uint64]string // offset -> tag of the last publications applied
	unpublished [][]byte          // stored batches not yet published
	needCatchUp string            // a catch-up failed: its trigger, to retry
	retry       *time.Timer       // retries publications and catch-ups
	retrying    bool
	retryDelay  time.Duration // grows while retries fail
	settle      *time.Timer   // checks the stream position after activity
	settling    bool
	backlog     *time.Timer // looks again at peers whose write queues were too full
	backlogged  bool

	compactAfter   time.Time     // no compaction before (after a failure)
	compactDelay   time.Duration // grows while compactions fail
	compactSkipped bool          // too large to compact (MaxCompactBytes): reported once

	ephBudget *rate.Limiter // bytes of ephemeral relays per second
}

func newDocument(h *Hub, id protocol.DocumentID) *document {
	return &document{
		h:         h,
		id:        id,
		log:       h.log.With("doc", string(id)),
		inbox:     make(chan docMsg, h.opts.DocQueueLen),
		peers:     make(map[*session]*peerState),
		denied:    make(map[*session]struct{}),
		remote:    make(map[string]knownHeads),
		compacted: make(chan compactResult, 1),
		retry:     stoppedTimer(),
		settle:    stoppedTimer(),
		backlog:   stoppedTimer(),
		ephBudget: rate.NewLimiter(rate.Limit(h.opts.EphemeralRelayBytes), h.opts.EphemeralRelayBytes),
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// post hands m to the document's owner, waiting while its inbox is full.
// It must follow a Hub.document call that returned d (it ends the pending
// hold that call took).
func (d *document) post(ctx context.Context, m docMsg) error {
	defer d.pending.Add(-1)
	select {
	case d.inbox <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *document) run() {
	defer d.h.docWG.Done()
	if err := d.load(); err != nil {
		d.log.Error("failed to load document", "err", err)
		d.h.m.StoreErrors.WithLabelValues("load").Inc()
		d.failAll()
		return
	}
	idle := time.NewTimer(d.h.opts.IdleDocTimeout)
	defer idle.Stop()
	for {
		select {
		case m := <-d.inbox:
			d.handle(m)
			m.done()
			local := m.kind.local()
			// Group what is already queued (at most one inbox's worth, so a
			// flood cannot postpone the write and the answers) into one
			// store write.
			for n, drained := 1, false; !drained && n < maxBatchMessages; n++ {
				select {
				case m := <-d.inbox:
					d.handle(m)
					m.done()
					local = local || m.kind.local()
				default:
					drained = true
				}
			}
			if d.lagged.Swap(false) {
				d.catchUp("lagged")
			}
			if d.exists {
				d.admitWaiters()
			}
			if err := d.flush(); err != nil {
				d.log.Error("failed to store changes", "err", err)
				d.h.m.StoreErrors.WithLabelValues("append").Inc()
				d.failAll()
				return
			}
			d.maybeCompact()
			// A document nobody has, asked for by peers that were told so,
			// leaves at once: requests for random ids cost nothing lasting.
			if !d.exists && len(d.peers) == 0 && len(d.denied) == 0 {
				if d.h.tryRemove(d) {
					d.evict()
					return
				}
				idle.Reset(10 * time.Millisecond) // a sender still holds it: soon
			} else if local && len(d.peers) == 0 {
				// Only this node's peers keep a document in memory: other
				// nodes' changes alone do not.
				idle.Reset(d.h.opts.IdleDocTimeout)
			}
		case r := <-d.compacted:
			d.compactDone(r)
		case <-d.settle.C:
			d.settling = false
			d.checkPosition()
			if err := d.flush(); err != nil {
				d.log.Error("failed to store changes", "err", err)
				d.h.m.StoreErrors.WithLabelValues("append").Inc()
				d.failAll()
				return
			}
		case <-d.backlog.C:
			d.backlogged = false
			if err := d.flush(); err != nil {
				d.log.Error("failed to store changes", "err", err)
				d.h.m.StoreErrors.WithLabelValues("append").Inc()
				d.failAll()
				return
			}
		case <-d.retry.C:
			d.retrying = false
			if t := d.needCatchUp; t != "" {
				d.catchUp(t)
			}
			if d.needCatchUp == "" && len(d.unpublished) == 0 {
				d.retryDelay = 0 // recovered
			}
			if err := d.flush(); err != nil {
				d.log.Error("failed to store changes", "err", err)
				d.h.m.StoreErrors.WithLabelValues("append").Inc()
				d.failAll()
				return
			}
		case <-idle.C:
			if len(d.peers) == 0 && d.h.tryRemove(d) {
				d.evict()
				return
			}
			idle.Reset(d.h.opts.IdleDocTimeout)
		case <-d.h.ctx.Done():
			d.h.tryRemove(d)
			d.evict()
			d.drop()
			return
		}
	}
}

func (d *document) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.h.opts.StoreTimeout)
}

// load reads the document from the store; a document the store lacks starts
// empty and does not exist until a peer sends changes for it. automerge-go
// reads the stored snapshot and batches; the engine indexes their changes
// (the only walk over the whole history, once per load).
//
// With a broker the document subscribes first and reads the store after:
// every change published after the stream position that Subscribe returns
// is delivered (or its loss detected), and every change up to it was
// stored before it was published, so the store has it.
func (d *document) load() error {
	if f := d.h.compactFailure(d.id); f.delay > 0 {
		d.compactAfter, d.compactDelay = f.after, f.delay
	}
	d.eng = syncengine.New(syncengine.Options{
		Accept:           d.accept,
		MaxBytes:         max(d.h.opts.MaxDocBytes, 0),
		MaxInflatedBytes: d.h.opts.MaxInflatedBytes,
		MaxSendBytes:     d.h.opts.MaxSendBytes,
	})
	if b := d.h.opts.Broker; b != nil {
		ctx, cancel := d.brokerCtx()
		pos, err := b.Subscribe(ctx, d.id)
		cancel()
		if err != nil {
			d.h.m.BrokerErrors.WithLabelValues("subscribe").Inc()
			return err
		}
		d.subscribed, d.pos = true, pos
	}
	start := time.Now()
	ctx, cancel := d.storeCtx()
	sd, err := d.h.opts.Store.LoadDoc(ctx, d.id)
	cancel()
	d.h.m.observeStore("load", start)
	d.h.m.DocumentsLoaded.Inc()
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	d.exists, d.created = true, true
	for _, b := range sd.Batches {
		d.lastSeq = b.Seq
		d.incBytes += len(b.Data)
	}
	d.snapshotBytes = len(sd.Snapshot)
	raws, err := sd.Changes()
	if err != nil {
		return err
	}
	if _, err := d.eng.AddChanges(remoteOrigin, raws...); err != nil {
		return fmt.Errorf("failed to index stored changes: %w", err)
	}
	if n := d.eng.Queued(); n > 0 {
		// Their dependencies are lost from the store; peers that have them
		// are asked for them (need) and the changes are stored again.
		d.log.Warn("stored changes lack their dependencies; asking peers for them", "changes", n)
	}
	d.heads = d.eng.Heads()
	return nil
}

// sendUnavailable tells s the document is unavailable: unknown, denied or
// unreadable, all alike.
func (d *document) sendUnavailable(s *session) {
	s.send(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: d.h.opts.PeerID, TargetID: s.peerID, DocumentID: d.id})
}

func (d *document) brokerCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.h.opts.BrokerTimeout)
}

func (d *document) handle(m docMsg) {
	switch m.kind {
	case kindSync:
		d.receiveSync(m.s, m.msg)
	case kindEphemeral:
		if _, ok := d.peers[m.s]; !ok {
			d.h.m.Dropped.WithLabelValues("ephemeral_not_a_peer").Inc()
			return // only peers that were let in may speak to the others
		}
		d.relayEphemeral(m.s, m.msg)
	case kindRemote:
		d.receivePub(*m.pub)
	case kindCatchUp:
		d.catchUp("resubscribed")
	case kindReauthorize:
		d.reauthorize()
	case kindLeave:
		delete(d.denied, m.s)
		if ps, ok := d.peers[m.s]; ok {
			d.saveSyncState(m.s, ps)
		}
		d.removePeer(m.s)
	case kindSubscribed:
		if _, ok := d.peers[m.s]; !ok {
			return
		}
		for _, sid := range m.storageIDs {
			if sid == d.h.storageID {
				if d.created {
					d.sendHeads(m.s, sid, knownHeads{heads: wireHeads(d.heads), timestamp: uint64(time.Now().UnixMilli())})
				}
			} else if kh, ok := d.remote[sid]; ok {
				d.sendHeads(m.s, sid, kh)
			}
		}
	case kindRemoteHeads:
		if _, ok := d.peers[m.s]; !ok {
			return // gossip only from peers that were let in
		}
		for sid, ha := range m.msg.NewHeads {
			if sid == d.h.storageID {
				continue // we are the authority on our own heads
			}
			if _, known := d.remote[sid]; len(ha.Heads) > maxGossipHeads || len(sid) > maxGossipStorageID ||
				(!known && len(d.remote) >= maxGossipStorages) {
				// Gossip is kept per document for the peers that subscribe:
				// a peer cannot make it hold more than these bounds.
				d.h.m.Dropped.WithLabelValues("remote_heads_bounds").Inc()
				continue
			}
			d.learnHeads(m.s, sid, knownHeads{heads: ha.Heads, timestamp: ha.Timestamp})
		}
	}
}

// Bounds of the remote-heads gossip one document keeps: storages, heads
// of one storage (concurrent branches: honest documents have a few), and
// the length of a storage id (automerge-repo's are UUIDs).
const (
	maxGossipStorages  = 64
	maxGossipHeads     = 64
	maxGossipStorageID = 128
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
		// Nobody has it. The peer is told so and not kept as a peer: a
		// document only requesters wait for leaves memory at once (see
		// run). It waits as a cheap entry in the hub instead, counted
		// against its connection's documents, and is let in if the
		// document appears while it is connected (admitWaiters).
		d.removePeer(s)
		d.wait(s)
		d.sendUnavailable(s)
		return
	}
	if heads, ok := ps.st.TheirHeads(); ok && !s.ephemeral {
		d.learnHeads(s, s.storageID, knownHeads{heads: wireHeads(heads), timestamp: uint64(time.Now().UnixMilli())})
	}
	// Answer now, not after the rest of the batch: a later message from the
	// same peer can make the engine believe the peer already knows our
	// heads and skip the acknowledgement the peer waits for. The answer is
	// sent in flush, after the store write.
	d.generate(ps)
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

// flush stores the changes applied since the last flush, then (and only
// then) sends the sync messages that advertise them: durable before
// advertised.
func (d *document) flush() error {
	if !d.exists {
		for s, ps := range d.peers {
			d.sendOut(s, ps) // offers to peers let in (letIn) that waited for room
		}
		return nil
	}
	if !d.created || len(d.unsaved) > 0 {
		n := 0
		for _, raw := range d.unsaved {
			n += len(raw)
		}
		batch := make([]byte, 0, n)
		for _, raw := range d.unsaved {
			batch = append(batch, raw...)
		}
		ctx, cancel := d.storeCtx()
		start := time.Now()
		seq, err := d.h.opts.Store.AppendChanges(ctx, d.id, batch)
		cancel()
		d.h.m.observeStore("append", start)
		if err != nil {
			return err
		}
		d.created = true
		d.lastSeq = seq
		d.incBytes += len(batch)
		clear(d.unsaved)
		d.unsaved = d.unsaved[:0]
		if len(batch) > 0 && d.h.opts.Broker != nil {
			d.unpublished = append(d.unpublished, batch)
		}
	}
	if heads := d.eng.Heads(); !slices.Equal(heads, d.heads) {
		d.heads = heads
		for _, ps := range d.peers {
			ps.dirty = true
		}
		kh := knownHeads{heads: wireHeads(heads), timestamp: uint64(time.Now().UnixMilli())}
		for s := range d.peers {
			if s.subscribed(d.h.storageID) {
				d.sendHeads(s, d.h.storageID, kh)
			}
		}
	}
	for s, ps := range d.peers {
		if ps.dirty {
			ps.dirty = false
			d.generate(ps)
		}
		d.sendOut(s, ps)
	}
	d.publishPending()
	return nil
}

// publishPending publishes the stored batches that the other nodes have
// not been sent yet, oldest first. A failure keeps them for a retry: they
// are stored, so this node's peers are served meanwhile, and a node that
// lost its subscription catches up from the store anyway.
func (d *document) publishPending() {
	for len(d.unpublished) > 0 {
		ctx, cancel := d.brokerCtx()
		_, err := d.h.opts.Broker.Publish(ctx, d.id, Publication{Kind: PubChanges, Origin: d.h.opts.PeerID, Data: d.unpublished[0]})
		cancel()
		if err != nil {
			d.h.m.BrokerErrors.WithLabelValues("publish").Inc()
			d.log.Warn("failed to publish changes; will retry", "batches", len(d.unpublished), "err", err)
			d.scheduleRetry()
			return
		}
		d.unpublished[0] = nil
		d.unpublished = d.unpublished[1:]
		d.armSettle()
	}
}

// scheduleRetry arms the retry timer: 500 ms after the first failure,
// doubling up to 30 s while they go on, jittered, so that the documents a
// Redis outage hit do not all come back at the same instant.
func (d *document) scheduleRetry() {
	if d.retrying {
		return
	}
	d.retrying = true
	d.retryDelay = min(max(2*d.retryDelay, 500*time.Millisecond), 30*time.Second)
	d.retry.Reset(d.retryDelay/2 + time.Duration(mrand.Int64N(int64(d.retryDelay/2)+1)))
}

// relayEphemeral sends an ephemeral message to every peer but from and,
// if it came from a peer of this node, to the other nodes. The message is
// encoded once; each peer's frame differs only in its targetId. Relays
// spend the document's budget (bytes times receivers per second): past
// it they are dropped and counted, as ephemeral messages may be.
func (d *document) relayEphemeral(from *session, msg *protocol.Message) {
	receivers := len(d.peers)
	if from != nil {
		receivers-- // not back to the sender
		if d.h.opts.Broker != nil {
			receivers++ // one publication for the other nodes
		}
	}
	if receivers <= 0 {
		d.h.m.Dropped.WithLabelValues("ephemeral_no_peers").Inc()
		return
	}
	if cost := len(msg.Data) * receivers; cost > 0 && !d.ephBudget.AllowN(time.Now(), cost) {
		d.h.m.LimitHits.WithLabelValues(LimitEphemeralRelay).Inc()
		d.h.m.Dropped.WithLabelValues("ephemeral_budget").Inc()
		return
	}
	relay := *msg
	relay.TargetID = "-" // replaced per peer
	frames, err := protocol.EncodeTargeted(&relay)
	if err != nil {
		d.h.m.Dropped.WithLabelValues("ephemeral_invalid").Inc()
		return
	}
	for s := range d.peers {
		if s != from {
			s.sendFrame(msg.Type, frames.For(s.peerID))
		}
	}
	if from != nil {
		d.publishEphemeral(msg)
	}
}

// publishEphemeral sends a peer's ephemeral message to the other nodes: at
// most once, like pub/sub itself.
func (d *document) publishEphemeral(msg *protocol.Message) {
	b := d.h.opts.Broker
	if b == nil {
		return
	}
	data, err := protocol.Encode(msg) // each receiving node sets targetId per peer
	if err != nil {
		return
	}
	ctx, cancel := d.brokerCtx()
	defer cancel()
	if _, err := b.Publish(ctx, d.id, Publication{Kind: PubEphemeral, Origin: d.h.opts.PeerID, Data: data}); err != nil {
		d.h.m.BrokerErrors.WithLabelValues("publish_ephemeral").Inc()
	}
}

// settleDelay is how long after the last publication a document checks
// that it has seen the stream's end: pub/sub may lose the last publication
// of a burst, and no later one would reveal the gap.
const settleDelay = time.Second

func (d *document) armSettle() {
	if d.subscribed && !d.settling {
		d.settling = true
		d.settle.Reset(settleDelay)
	}
}

// checkPosition compares the stream's position with the one applied and
// catches up if they differ.
func (d *document) checkPosition() {
	if !d.subscribed {
		return
	}
	ctx, cancel := d.brokerCtx()
	pos, err := d.h.opts.Broker.Position(ctx, d.id)
	cancel()
	if err != nil {
		d.h.m.BrokerErrors.WithLabelValues("position").Inc()
		return // a broker in trouble makes its own catch-ups (resubscribed)
	}
	if pos != d.pos {
		d.catchUp("settle")
	}
}

// receivePub takes a publication from another node (or our own, echoed).
func (d *document) receivePub(p Publication) {
	if p.Kind == PubEphemeral {
		msg, err := protocol.Decode(p.Data)
		if err != nil || msg.Type != protocol.TypeEphemeral || msg.DocumentID != d.id {
			d.h.m.BrokerErrors.WithLabelValues("bad_publication").Inc()
			return
		}
		d.relayEphemeral(nil, msg)
		return
	}
	if d.log.Enabled(context.Background(), slog.LevelDebug) { // no boxing on the hot path
		d.log.Debug("publication", "origin", p.Origin, "pos", p.Pos, "prev", p.Prev, "have", d.pos)
	}
	d.armSettle()
	switch {
	case p.Pos.Epoch != d.pos.Epoch:
		d.catchUp("epoch")
	case p.Pos.Offset <= d.pos.Offset:
		// Already applied (or stored before we loaded), unless its tag is
		// not the one we applied at that offset: the broker lost its last
		// publications and handed their offsets out again (a failover).
		if tag, ok := d.recentTags[p.Pos.Offset]; ok && tag != p.Pos.Tag {
			d.catchUp("rollback")
		}
	case p.Pos.Offset > d.pos.Offset+1:
		d.catchUp("gap") // the log holds p too
	case p.Prev != d.pos.Tag:
		// The offset follows ours but not the publication we hold: the
		// broker lost its last publications and handed their offsets out
		// again (a failover). Ours may be lost with them.
		d.catchUp("rollback")
	default:
		d.applyPub(p)
	}
}

// recentTagsKept is how many of the last applied publications' tags a
// document remembers, to recognise an offset handed out twice.
const recentTagsKept = 64

// applyPub applies the next publication of the stream.
func (d *document) applyPub(p Publication) {
	d.pos = p.Pos
	if d.recentTags == nil {
		d.recentTags = make(map[uint64]string, recentTagsKept)
	}
	d.recentTags[p.Pos.Offset] = p.Pos.Tag
	delete(d.recentTags, p.Pos.Offset-recentTagsKept)
	if p.Origin == d.h.opts.PeerID {
		return // our own changes: applied already
	}
	raws, err := amsync.SplitChunks(p.Data)
	if err == nil {
		err = d.applyRemote(raws)
	}
	if err != nil {
		d.h.m.BrokerErrors.WithLabelValues("bad_publication").Inc()
		d.log.Error("dropped a publication that does not apply", "origin", p.Origin, "offset", p.Pos.Offset, "err", err)
	}
}

// applyRemote applies changes that another node accepted and stored.
func (d *document) applyRemote(raws [][]byte) error {
	applied, err := d.eng.AddChanges(remoteOrigin, raws...)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		d.h.m.ChangesRemote.Add(float64(len(applied)))
		d.exists, d.created = true, true
		for _, ps := range d.peers {
			ps.dirty = true
		}
	}
	return nil
}

// catchUp brings the document up to date with the other nodes after a
// gap, an epoch change, a re-made subscription or a dropped delivery: from
// the broker's log if it still has every publication since d.pos, else
// from the store. If the store lost changes this node holds (a Redis
// restarted empty), it stores and publishes them again.
func (d *document) catchUp(trigger string) {
	b := d.h.opts.Broker
	if b == nil || !d.subscribed {
		return
	}
	d.needCatchUp = ""
	ctx, cancel := d.brokerCtx()
	pubs, err := b.History(ctx, d.id, d.pos)
	cancel()
	if err == nil {
		d.log.Debug("caught up from the log", "trigger", trigger, "publications", len(pubs))
		d.h.m.BrokerRecoveries.WithLabelValues(trigger, "log").Inc()
		for _, p := range pubs {
			if p.Pos.Offset > d.pos.Offset {
				d.applyPub(p)
			}
		}
		return
	}
	if !errors.Is(err, ErrHistoryLost) {
		d.catchUpFailed(trigger, "history", err)
		return
	}
	ctx, cancel = d.brokerCtx()
	pos, err := b.Position(ctx, d.id)
	cancel()
	if err != nil {
		d.catchUpFailed(trigger, "position", err)
		return
	}
	ctx, cancel = d.storeCtx()
	sd, err := d.h.opts.Store.LoadDoc(ctx, d.id)
	cancel()
	if err != nil && !errors.Is(err, ErrNotFound) {
		d.catchUpFailed(trigger, "load", err)
		return
	}
	raws, err := sd.Changes()
	if err == nil {
		err = d.applyRemote(raws)
	}
	if err != nil {
		d.catchUpFailed(trigger, "load", err)
		return
	}
	d.pos = pos
	clear(d.recentTags)
	d.log.Info("caught up from the store", "trigger", trigger, "changes", len(raws))
	d.h.m.BrokerRecoveries.WithLabelValues(trigger, "store").Inc()
	stored := make(map[syncengine.Hash]struct{}, len(raws))
	for _, raw := range raws {
		if c, err := amsync.ParseChange(raw); err == nil {
			stored[syncengine.Hash(c.Hash)] = struct{}{}
		}
	}
	for _, raw := range d.unsaved { // on their way to the store already
		if c, err := amsync.ParseChange(raw); err == nil {
			stored[syncengine.Hash(c.Hash)] = struct{}{}
		}
	}
	var lost [][]byte
	d.eng.All(func(raw []byte) bool {
		if c, err := amsync.ParseChange(raw); err == nil {
			if _, ok := stored[syncengine.Hash(c.Hash)]; !ok {
				lost = append(lost, raw)
			}
		}
		return true
	})
	if len(lost) > 0 && d.exists {
		d.log.Warn("the store lacks changes this node holds; storing them again", "changes", len(lost), "trigger", trigger)
		d.unsaved = append(d.unsaved, lost...)
		d.created = false // (re)create the record in flush
	}
}

func (d *document) catchUpFailed(trigger, op string, err error) {
	d.h.m.BrokerErrors.WithLabelValues(op).Inc()
	d.log.Warn("failed to catch up; will retry", "trigger", trigger, "err", err)
	d.needCatchUp = trigger
	d.scheduleRetry()
}

// generate queues the next sync message for a peer, if one is due. Queued
// messages go out in flush, after the store has confirmed every change
// whose heads they carry. It always runs when the engine expects it
// (after each received message, after new heads): skipping one can make
// the engine skip an acknowledgement the peer waits for.
func (d *document) generate(ps *peerState) {
	if data := d.eng.GenerateMessage(ps.st); data != nil {
		ps.out = append(ps.out, data)
	}
}

// sendOut sends the sync messages generated for s, in order, as far as
// its write queue has room; the rest wait in ps.out, and the document
// tries again after backlogDelay. So documents take turns at a busy
// connection: a client that opens several large documents at once gets
// their pieces as it reads them, instead of overflowing its queue (4429)
// and starting over on every reconnect. A peer whose waiting messages
// pass twice MaxSendBytes keeps asking without reading: it is closed as
// a slow consumer, as the transport would.
func (d *document) sendOut(s *session, ps *peerState) {
	k := 0
	for ; k < len(ps.out); k++ {
		if !s.trySend(&protocol.Message{Type: protocol.TypeSync, SenderID: d.h.opts.PeerID, TargetID: s.peerID, DocumentID: d.id, Data: ps.out[k]}) {
			break
		}
	}
	rest := copy(ps.out, ps.out[k:])
	clear(ps.out[rest:])
	ps.out = ps.out[:rest]
	if rest == 0 {
		return
	}
	waiting := 0
	for _, data := range ps.out {
		waiting += len(data)
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

// learnHeads records heads of storage sid (heard from peer from) and tells
// the other peers subscribed to sid.
func (d *document) learnHeads(from *session, sid string, kh knownHeads) {
	old, ok := d.remote[sid]
	if ok && (old.timestamp > kh.timestamp || slices.Equal(old.heads, kh.heads)) {
		return
	}
	d.remote[sid] = kh
	for s := range d.peers {
		if s != from && s.subscribed(sid) {
			d.sendHeads(s, sid, kh)
		}
	}
}

func (d *document) sendHeads(s *session, sid string, kh knownHeads) {
	s.send(&protocol.Message{
		Type:       protocol.TypeRemoteHeadsChanged,
		SenderID:   d.h.opts.PeerID,
		TargetID:   s.peerID,
		DocumentID: d.id,
		NewHeads:   map[string]protocol.HeadsAt{sid: {Heads: kh.heads, Timestamp: kh.timestamp}},
	})
}

func (d *document) saveSyncState(s *session, ps *peerState) {
	if s.ephemeral || !d.created {
		return
	}
	ctx, cancel := d.storeCtx()
	defer cancel()
	start := time.Now()
	err := d.h.opts.Store.SaveSyncState(ctx, d.id, s.storageID, ps.st.Encode())
	d.h.m.observeStore("save_sync_state", start)
	if err != nil {
		d.h.m.StoreErrors.WithLabelValues("save_sync_state").Inc()
		d.log.Warn("failed to save sync state", "storage_id", s.storageID, "err", err)
	}
}

// compactResult is what a compaction goroutine reports to the owner.
type compactResult struct {
	snapshotBytes int
	incBytes      int // incremental bytes the snapshot replaced
	conflict      bool
	err           error
}

// maybeCompact starts replacing the stored snapshot and incremental
// changes by one new snapshot once the incremental changes outgrow the
// snapshot. The work (automerge-go builds the document from every change
// and saves it: O(history)) runs on its own goroutine, off the hot path;
// compactDone takes its result.
func (d *document) maybeCompact() {
	if d.compacting || d.compactSkipped || !d.created || d.incBytes < d.h.opts.MinCompactBytes || d.incBytes < d.snapshotBytes ||
		time.Now().Before(d.compactAfter) {
		return
	}
	if n := d.eng.Bytes(); n > d.h.opts.MaxCompactBytes {
		// automerge-go would hold a multiple of it: leave the changes as
		// they are (they load and sync as they are), and say so once.
		d.compactSkipped = true
		d.h.m.LimitHits.WithLabelValues(LimitCompactBytes).Inc()
		d.log.Warn("document too large to compact; its changes are kept as they are", "bytes", n, "max_compact_bytes", d.h.opts.MaxCompactBytes)
		return
	}
	// Compactions on the node together hold at most MaxCompactBytes of
	// documents (automerge-go holds a multiple): one that does not fit
	// now is tried again after the next write.
	n := max(d.eng.Bytes(), 1)
	if !d.h.compacts.tryAcquire(n) {
		return
	}
	d.compacting = true
	inc := d.incBytes
	go func() {
		r := d.compact()
		d.h.compacts.release(n)
		if r.err != nil {
			r.incBytes = inc // retry only after as many new changes again
		}
		d.compacted <- r
	}()
}

// compact builds a snapshot from what the store holds (not from memory:
// nodes that share the store append batches this node may not have yet)
// and stores it with a compare-and-set on the compaction version, so a
// concurrent compaction on another node never loses a batch. It touches
// only the store, so it may run beside the owner.
func (d *document) compact() compactResult {
	// A store timeout per store call: the work between them is CPU.
	ctx, cancel := d.storeCtx()
	sd, err := d.h.opts.Store.LoadDoc(ctx, d.id)
	cancel()
	if err != nil {
		return compactResult{err: fmt.Errorf("failed to load the document: %w", err)}
	}
	if len(sd.Batches) == 0 {
		return compactResult{snapshotBytes: len(sd.Snapshot)}
	}
	// The engine puts the changes in dependency order: after a store lost
	// data, batches may hold changes before their dependencies (stored
	// again later), which automerge-go's incremental load refuses.
	raws, err := sd.Changes()
	if err != nil {
		return compactResult{err: err}
	}
	order := syncengine.New(syncengine.Options{})
	if _, err := order.AddChanges(nil, raws...); err != nil {
		return compactResult{err: fmt.Errorf("failed to index the stored changes: %w", err)}
	}
	if n := order.Queued(); n > 0 {
		return compactResult{err: fmt.Errorf("%d stored changes lack their dependencies", n)}
	}
	all := make([]byte, 0, len(sd.Snapshot))
	order.All(func(raw []byte) bool { all = append(all, raw...); return true })
	doc, err := automerge.Load(all)
	if err != nil {
		return compactResult{err: fmt.Errorf("failed to build the document: %w", err)}
	}
	inc := 0
	for _, b := range sd.Batches {
		inc += len(b.Data)
	}
	heads := doc.Heads()
	snap := doc.Save()
	// Never replace loadable changes by a snapshot that does not load:
	// the Rust core 0.5 can save documents it then refuses to load.
	check, err := automerge.Load(snap)
	if err != nil {
		return compactResult{err: fmt.Errorf("the snapshot does not load back: %w", err)}
	}
	got := check.Heads()
	if len(got) != len(heads) {
		return compactResult{err: errors.New("the snapshot loads back with other heads")}
	}
	for _, h := range got {
		if !slices.Contains(heads, h) {
			return compactResult{err: errors.New("the snapshot loads back with other heads")}
		}
	}
	start := time.Now()
	ctx, cancel = d.storeCtx()
	defer cancel()
	err = d.h.opts.Store.Compact(ctx, d.id, snap, sd.Batches[len(sd.Batches)-1].Seq)
	d.h.m.observeStore("compact", start)
	if errors.Is(err, ErrCompactConflict) {
		return compactResult{conflict: true, incBytes: inc}
	}
	if err != nil {
		return compactResult{err: fmt.Errorf("failed to store the snapshot: %w", err)}
	}
	return compactResult{snapshotBytes: len(snap), incBytes: inc}
}

// compactDone takes a compaction's result on the owner goroutine.
func (d *document) compactDone(r compactResult) {
	d.compacting = false
	d.h.gcSoon() // automerge-go's memory is freed by finalizers
	if r.err != nil {
		d.h.m.StoreErrors.WithLabelValues("compact").Inc()
		d.log.Error("not compacted", "err", r.err)
		d.incBytes = max(0, d.incBytes-r.incBytes) // retry only after as many new changes again
		d.compactDelay = min(max(2*d.compactDelay, 10*time.Second), 10*time.Minute)
		d.compactAfter = time.Now().Add(d.compactDelay)
		d.h.rememberCompactFailure(d.id, d.compactAfter, d.compactDelay)
		return
	}
	if d.compactDelay > 0 {
		d.h.rememberCompactFailure(d.id, time.Time{}, 0)
	}
	d.compactDelay = 0
	if r.conflict {
		// Another node compacted through a later batch first: its snapshot
		// holds ours. Count its work as done here too.
		d.log.Debug("compaction superseded by another node's")
		d.incBytes = max(0, d.incBytes-r.incBytes)
		return
	}
	d.h.m.Compactions.Inc()
	d.log.Debug("compacted", "snapshot_bytes", r.snapshotBytes, "incremental_bytes", r.incBytes)
	d.snapshotBytes = r.snapshotBytes
	d.incBytes = max(0, d.incBytes-r.incBytes)
}

// waitCompaction waits for a running compaction to finish.
func (d *document) waitCompaction() {
	if d.compacting {
		d.compactDone(<-d.compacted)
	}
}

// evict saves the sync states of remaining peers and drops the document,
// compacting it first if it is due.
func (d *document) evict() {
	for s, ps := range d.peers {
		d.saveSyncState(s, ps)
	}
	d.waitCompaction()
	d.maybeCompact()
	d.waitCompaction()
	for try := 0; try < 3 && len(d.unpublished) > 0; try++ {
		if try > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		d.publishPending()
	}
	if n := len(d.unpublished); n > 0 {
		// Stored, so not lost: nodes that catch up from the store get them.
		d.log.Error("evicted with changes not published to the other nodes", "batches", n)
	}
	d.unsubscribe()
	d.peers = nil
	d.eng = nil
	d.h.m.DocumentsEvicted.Inc()
	d.h.gcSoon()
}

// failAll removes the document after an unrecoverable store error. Peers
// whose changes may not be stored are disconnected so that they resync (and
// resend) on reconnect: nothing unstored was ever advertised to them.
// Peers that only asked for the document are told it is unavailable.
func (d *document) failAll() {
	d.waitCompaction()
	for s := range d.peers {
		s.fail(protocol.CloseInternalError, fmt.Errorf("storage failure on document %s", d.id))
	}
	d.unsubscribe()
	d.peers = nil
	d.eng = nil
	for !d.h.tryRemove(d) {
		select {
		case m := <-d.inbox: // a sender still held us: answer it too
			if m.kind == kindSync {
				d.sendUnavailable(m.s)
			}
			m.done()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// drop gives back the budgets of messages left in the inbox of a document
// that stops without handling them.
func (d *document) drop() {
	for {
		select {
		case m := <-d.inbox:
			m.done()
		default:
			return
		}
	}
}

func (d *document) unsubscribe() {
	d.retry.Stop()
	d.settle.Stop()
	if !d.subscribed {
		return
	}
	d.subscribed = false
	ctx, cancel := d.brokerCtx()
	defer cancel()
	if err := d.h.opts.Broker.Unsubscribe(ctx, d.id); err != nil {
		d.h.m.BrokerErrors.WithLabelValues("unsubscribe").Inc()
		d.log.Warn("failed to unsubscribe", "err", err)
	}
}

// wireHeads encodes heads as automerge-repo sends them in
// remote-heads-changed (bs58check, in the document's order).
func wireHeads(hs []syncengine.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = protocol.EncodeHead(h)
	}
	return out
}
