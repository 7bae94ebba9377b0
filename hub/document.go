package hub

import (
	"context"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

type docMsgKind int

const (
	kindSync        docMsgKind = iota // sync or request from a peer
	kindEphemeral                     // relay to the other peers
	kindLeave                         // the peer's connection ended
	kindWatch                         // the peer asked for the heads of storageIDs
	kindRemoteHeads                   // the peer gossips heads of some storages
	kindRemote                        // a publication from the broker
	kindCatchUp                       // the broker re-made the subscription: catch up
	kindReauthorize                   // permissions changed: ask the Authorizer again
	kindCall                          // the node's API runs call on the owner (content.go)
	kindDelete                        // Hub.DeleteDocument: detach every peer, remove from the store (delete.go)
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
	return k != kindRemote && k != kindCatchUp && k != kindReauthorize && k != kindDelete
}

type docMsg struct {
	kind       docMsgKind
	s          *session
	msg        *protocol.Message
	storageIDs []string
	pub        *Publication
	call       func(*document)    // kindCall; given nil if the owner stops first
	cost       int                // bytes of s's and the hub's in-flight budgets it holds
	deleted    chan deleteOutcome // kindDelete: the outcome (buffered)
	trace      trace.SpanContext  // the span it is part of (trace.go); may be invalid
	at         time.Time          // kindSync: when the session read it
}

// done returns the budget bytes m holds, once it is handled (or dropped).
func (m docMsg) done() {
	if m.cost > 0 {
		m.s.budget.release(m.cost)
		m.s.h.inflight.release(m.cost)
	}
}

// document owns one open document: its change index (the sync engine),
// each peer's sync state, and the document's storage. Everything but
// inbox, pending, lagged and compaction.done is touched only by its run
// goroutine. Its methods are grouped by the state machine they drive, one
// file each: the peer set (peers.go), sync with peers (docsync.go),
// ephemeral relays (ephemeral.go), remote heads (remoteheads.go), the
// store (persist.go), the broker's stream (stream.go) and compaction
// (compact.go); this file keeps the owner's loop, flush and eviction.
type document struct {
	h       *Hub
	id      protocol.DocumentID
	log     *slog.Logger
	inbox   chan docMsg
	pending atomic.Int64 // senders between Hub.document and post
	lagged  atomic.Bool  // a broker delivery was dropped: catch up

	eng      *syncengine.Doc
	heads    []syncengine.Hash // heads as last stored (durable)
	genHeads []syncengine.Hash // the engine's heads when peers were last marked dirty

	// The peer set and sync (peers.go, docsync.go):
	peers      map[*session]*peerState
	denied     map[*session]struct{} // peers refused: asked again on Reauthorize
	backlog    *time.Timer           // sends what waited for room in write queues
	backlogged bool
	// Changes held for peers that have not answered our last changes
	// (holding): sent with their answer, or when answerTimer fires.
	answerTimer *time.Timer
	answerArmed bool
	answerAt    time.Time
	ephBudget   *rate.Limiter         // bytes of ephemeral relays per second
	remote      map[string]knownHeads // storage id -> heads, for remote-heads gossip

	// The store (persist.go, compact.go):
	exists  bool     // stored (or being stored): a request gets it, not doc-unavailable
	stored  bool     // a record exists in the store
	unsaved [][]byte // raw chunks applied since the last store write began
	// unsavedSince is when the earliest message whose changes are in
	// unsaved was read off its connection (zero if none came from a
	// peer): the start of plait_relay_seconds for the next write.
	unsavedSince time.Time
	spare        [][]byte // unsaved's other buffer, while a write holds one
	compaction   compaction
	// One store write at a time runs on its own goroutine while the owner
	// goes on applying and answering (persist.go). Writes are numbered:
	// started is the last one begun, durable the last one confirmed; a
	// sync message waits until the write holding its changes is durable.
	writing   *write
	writeDone chan *write
	writeErr  error // a write failed: the owner fails its peers and exits
	// behind are the budgets of the messages handled while the write in
	// flight runs, given back when it is confirmed (take).
	behind  []docMsg
	started uint64
	durable uint64

	stream follower // with a broker: the document's stream (stream.go)

	deletion *deletion // being deleted (delete.go): nil otherwise
	// traceSC is the span of the latest message whose changes wait for
	// the next store write (trace.go): that write and the publication of
	// its batch are its children.
	traceSC trace.SpanContext

	// Requesters of a document that does not exist yet (peers.go):
	reqTimer *time.Timer
	reqArmed bool
	reqAt    time.Time
}

func newDocument(h *Hub, id protocol.DocumentID) *document {
	return &document{
		h:          h,
		id:         id,
		log:        h.log.With("doc", string(id)),
		inbox:      make(chan docMsg, h.opts.DocQueueLen),
		peers:      make(map[*session]*peerState),
		denied:     make(map[*session]struct{}),
		remote:     make(map[string]knownHeads),
		compaction: newCompaction(),
		writeDone:  make(chan *write, 1),
		stream:     newFollower(),
		backlog:    stoppedTimer(),
		reqTimer:   stoppedTimer(),

		answerTimer: stoppedTimer(),
		ephBudget:   rate.NewLimiter(rate.Limit(h.opts.EphemeralRelayBytes), h.opts.EphemeralRelayBytes),
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
		// While a store write runs the owner goes on applying messages, up
		// to one batch's worth (storeBehind): past that, they wait in the
		// inbox until the store catches up.
		inbox := d.inbox
		if d.storeBehind() {
			inbox = nil
		}
		select {
		case m := <-inbox:
			d.take(m)
			local := m.kind.local()
			// Group what is already queued (at most one inbox's worth, so a
			// flood cannot postpone the write and the answers) into one
			// store write.
			for n, drained := 1, false; !drained && n < maxBatchMessages && !d.storeBehind(); n++ {
				select {
				case m := <-d.inbox:
					d.take(m)
					local = local || m.kind.local()
				default:
					drained = true
				}
			}
			if d.deletion != nil {
				d.finishDelete()
				return
			}
			if d.lagged.Swap(false) {
				d.catchUp("lagged")
			}
			if d.exists {
				d.admitWaiters()
			}
			if !d.flushed() {
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
		case w := <-d.writeDone:
			// The write's error, if any, fails the document in flushed;
			// otherwise flush sends what waited for it and begins the next.
			_ = d.finishWrite(w)
			if !d.flushed() {
				return
			}
			d.maybeCompact()
		case r := <-d.compaction.done:
			d.compactDone(r)
		case <-d.stream.settle.C:
			d.stream.settling = false
			d.checkPosition()
			if !d.flushed() {
				return
			}
		case <-d.reqTimer.C:
			d.expirePending()
			if !d.exists && len(d.peers) == 0 {
				idle.Reset(0) // nobody has it, nobody waits: leave (below)
			}
		case <-d.backlog.C:
			d.backlogged = false
			if !d.flushed() {
				return
			}
		case <-d.answerTimer.C:
			d.answerArmed = false
			if !d.flushed() {
				return
			}
		case <-d.stream.retry.C:
			d.stream.retrying = false
			if t := d.stream.needCatchUp; t != "" {
				d.catchUp(t)
			}
			if d.stream.needCatchUp == "" && len(d.stream.unpublished) == 0 {
				d.stream.retryWait.reset() // recovered
			}
			if !d.flushed() {
				return
			}
		case <-idle.C:
			if len(d.peers) == 0 {
				// Everything applied is stored before the document leaves
				// memory: another owner may load it at once.
				if err := d.storeAll(); err != nil {
					d.storeFailed(err)
					return
				}
				if d.h.tryRemove(d) {
					d.evict()
					return
				}
			}
			if !d.exists && len(d.peers) == 0 {
				idle.Reset(10 * time.Millisecond) // a sender still holds it: soon
			} else {
				idle.Reset(d.h.opts.IdleDocTimeout)
			}
		case <-d.h.ctx.Done():
			if err := d.storeAll(); err != nil {
				d.storeFailed(err)
				d.drop()
				return
			}
			d.h.tryRemove(d)
			d.evict()
			d.drop()
			return
		}
	}
}

// take handles m and gives back the budget bytes it holds; while a store
// write is in flight, only once the write is confirmed (finishWrite): to
// its sender and the node, m waited for the store as it would have in the
// inbox of an owner that writes synchronously, so a slow store still
// makes its senders wait (and the budgets bound what is not yet durable).
func (d *document) take(m docMsg) {
	d.handle(m)
	if d.writing == nil {
		m.done()
		return
	}
	d.behind = append(d.behind, docMsg{s: m.s, cost: m.cost}) // not m: its message can go
}

func (d *document) handle(m docMsg) {
	if d.deletion != nil {
		d.handleDeleted(m)
		return
	}
	switch m.kind {
	case kindDelete:
		d.startDelete(m.deleted, true)
	case kindSync:
		_, sp := d.h.startSpan(m.trace, spanDocSync, trace.SpanKindInternal, attrDoc.String(string(d.id)))
		before := len(d.unsaved)
		d.receiveSync(m.s, m.msg)
		if n := len(d.unsaved) - before; n > 0 {
			if !m.at.IsZero() && (d.unsavedSince.IsZero() || m.at.Before(d.unsavedSince)) {
				d.unsavedSince = m.at
			}
			sp.SetAttributes(attrChanges.Int(n))
			d.traceSC = sp.SpanContext() // the store write and publication follow it
		}
		sp.End()
	case kindEphemeral:
		if _, ok := d.peers[m.s]; !ok {
			d.h.m.Dropped.WithLabelValues("ephemeral_not_a_peer").Inc()
			return // only peers that were let in may speak to the others
		}
		d.relayEphemeral(m.s, m.msg)
	case kindRemote:
		if m.pub.Kind == PubDeleted {
			d.startDelete(nil, false)
			return
		}
		d.receivePub(*m.pub, m.trace)
	case kindCatchUp:
		d.catchUp("resubscribed")
	case kindReauthorize:
		d.refreshMaxBytes()
		d.reauthorize()
	case kindCall:
		m.call(d)
	case kindLeave:
		delete(d.denied, m.s)
		if ps, ok := d.peers[m.s]; ok {
			d.saveSyncState(m.s, ps)
		}
		d.removePeer(m.s)
	case kindWatch:
		if _, ok := d.peers[m.s]; !ok {
			return
		}
		for _, sid := range m.storageIDs {
			if sid == d.h.storageID {
				if d.stored {
					d.sendHeads(m.s, sid, knownHeads{raw: d.heads, timestamp: uint64(time.Now().UnixMilli())})
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
			d.learnHeads(m.s, sid, knownHeads{wire: ha.Heads, timestamp: ha.Timestamp})
		}
	}
}

// flush begins the store write of the changes applied since the last one
// began (unless one is in flight: they go in the next), generates the
// sync messages due, and sends those whose changes are durable: durable
// before advertised. The others wait in their peers' queues until their
// write is confirmed (the owner's writeDone case flushes again).
func (d *document) flush() error {
	if d.writeErr != nil {
		return d.writeErr
	}
	if !d.exists {
		for s, ps := range d.peers {
			d.sendOut(s, ps) // offers to peers let in (letIn) that waited for room
		}
		return nil
	}
	// While the write in flight runs, the messages that make the new
	// heads known to every peer wait: they are generated once, when the
	// write holding the changes applied meanwhile begins (the next flush
	// after it is confirmed), as an owner that writes synchronously makes
	// them once per write. Answers to each sender are generated as its
	// messages arrive (receiveSync).
	broadcast := d.writing == nil
	if d.writing == nil {
		if len(d.unsaved) > 0 || !d.stored {
			d.startWrite()
		} else {
			// Nothing on its way to the store: every change applied is
			// durable, those of other nodes included.
			d.storedHeads(d.eng.Heads())
		}
	}
	if heads := d.eng.Heads(); broadcast && !slices.Equal(heads, d.genHeads) {
		d.genHeads = heads
		for _, ps := range d.peers {
			ps.dirty = true
		}
	}
	now := time.Now()
	for s, ps := range d.peers {
		if ps.dirty && broadcast && !d.holding(ps, now) {
			ps.dirty = false
			d.generate(ps)
		}
		d.sendOut(s, ps)
	}
	d.publishPending()
	return nil
}

// flushed runs flush and reports whether it succeeded; after a store
// failure the document has failed all its peers and its owner must exit.
func (d *document) flushed() bool {
	if err := d.flush(); err != nil {
		d.storeFailed(err)
		return false
	}
	return true
}

// storeFailed logs and counts a failed store write and fails every peer:
// the owner must exit after it.
func (d *document) storeFailed(err error) {
	d.log.Error("failed to store changes", "err", err, traceAttr(d.traceSC))
	d.h.m.StoreErrors.WithLabelValues("append").Inc()
	d.failAll()
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
	for try := 0; try < 3 && len(d.stream.unpublished) > 0; try++ {
		if try > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		d.publishPending()
	}
	if n := len(d.stream.unpublished); n > 0 {
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
	d.abandonWrite()
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
			if m.kind == kindCall {
				m.call(nil)
			}
			if m.deleted != nil {
				m.deleted <- deleteOutcome{err: fmt.Errorf("failed to delete document %s: its store failed", d.id)}
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
			if m.kind == kindCall {
				m.call(nil)
			}
			if m.deleted != nil {
				m.deleted <- deleteOutcome{err: fmt.Errorf("failed to delete document %s: the node is stopping", d.id)}
			}
			m.done()
		default:
			return
		}
	}
}
