package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/automerge/automerge-go"

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
)

type docMsg struct {
	kind       docMsgKind
	s          *session
	msg        *protocol.Message
	storageIDs []string
}

// peerState is what a document knows of one connected peer.
type peerState struct {
	st          *syncengine.State
	dirty       bool     // a message may be due to this peer
	out         [][]byte // generated sync messages, sent once the store has their changes
	unavailable bool     // we told it doc-unavailable; it waits for the document
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

	eng     *syncengine.Doc
	exists  bool // stored (or being stored): a request gets it, not doc-unavailable
	created bool // a record exists in the store
	peers   map[*session]*peerState
	unsaved [][]byte              // raw chunks applied since the last store write
	heads   []syncengine.Hash     // heads as last stored
	remote  map[string]knownHeads // storage id -> heads, for remote-heads gossip

	lastSeq       uint64
	snapshotBytes int
	incBytes      int
	compacting    bool               // a compaction goroutine runs
	compacted     chan compactResult // its result
}

func newDocument(h *Hub, id protocol.DocumentID) *document {
	return &document{
		h:         h,
		id:        id,
		log:       h.log.With("doc", string(id)),
		inbox:     make(chan docMsg, h.opts.DocQueueLen),
		peers:     make(map[*session]*peerState),
		remote:    make(map[string]knownHeads),
		compacted: make(chan compactResult, 1),
	}
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
			// Group what is already queued (at most one inbox's worth, so a
			// flood cannot postpone the write and the answers) into one
			// store write.
			for n, drained := 1, false; !drained && n < cap(d.inbox); n++ {
				select {
				case m := <-d.inbox:
					d.handle(m)
				default:
					drained = true
				}
			}
			if err := d.flush(); err != nil {
				d.log.Error("failed to store changes", "err", err)
				d.h.m.StoreErrors.WithLabelValues("append").Inc()
				d.failAll()
				return
			}
			d.maybeCompact()
			if len(d.peers) == 0 {
				idle.Reset(d.h.opts.IdleDocTimeout)
			}
		case r := <-d.compacted:
			d.compactDone(r)
		case <-idle.C:
			if len(d.peers) == 0 && d.h.tryRemove(d) {
				d.evict()
				return
			}
			idle.Reset(d.h.opts.IdleDocTimeout)
		case <-d.h.ctx.Done():
			d.h.tryRemove(d)
			d.evict()
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
func (d *document) load() error {
	start := time.Now()
	ctx, cancel := d.storeCtx()
	sd, err := d.h.opts.Store.LoadDoc(ctx, d.id)
	cancel()
	d.h.m.observeStore("load", start)
	d.h.m.DocumentsLoaded.Inc()
	d.eng = syncengine.New(syncengine.Options{})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	d.exists, d.created = true, true
	var inc []byte
	for _, b := range sd.Batches {
		inc = append(inc, b.Data...)
		d.lastSeq = b.Seq
	}
	d.snapshotBytes, d.incBytes = len(sd.Snapshot), len(inc)
	if len(sd.Snapshot) == 0 && len(inc) == 0 {
		return nil
	}
	var doc *automerge.Doc
	if len(sd.Snapshot) > 0 {
		if doc, err = automerge.Load(sd.Snapshot); err != nil {
			return fmt.Errorf("failed to load snapshot: %w", err)
		}
	} else {
		doc = automerge.New()
	}
	if len(inc) > 0 {
		if err := doc.LoadIncremental(inc); err != nil {
			return fmt.Errorf("failed to load stored changes: %w", err)
		}
	}
	chs, err := doc.Changes()
	if err != nil {
		return fmt.Errorf("failed to read stored changes: %w", err)
	}
	raws := make([][]byte, len(chs))
	for i, ch := range chs {
		raws[i] = ch.Save()
	}
	if _, err := d.eng.AddChanges(nil, raws...); err != nil {
		return fmt.Errorf("failed to index stored changes: %w", err)
	}
	if d.eng.Queued() > 0 {
		return fmt.Errorf("failed to index stored changes: %d lack dependencies", d.eng.Queued())
	}
	d.heads = d.eng.Heads()
	return nil
}

func (d *document) handle(m docMsg) {
	switch m.kind {
	case kindSync:
		d.receiveSync(m.s, m.msg)
	case kindEphemeral:
		for s := range d.peers {
			if s == m.s {
				continue
			}
			relay := *m.msg
			relay.TargetID = s.peerID
			s.send(&relay)
		}
	case kindLeave:
		if ps, ok := d.peers[m.s]; ok {
			d.saveSyncState(m.s, ps)
			delete(d.peers, m.s)
		}
		d.eng.Forget(m.s)
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
		for sid, ha := range m.msg.NewHeads {
			if sid == d.h.storageID {
				continue // we are the authority on our own heads
			}
			d.learnHeads(m.s, sid, knownHeads{heads: ha.Heads, timestamp: ha.Timestamp})
		}
	}
}

func (d *document) peer(s *session) *peerState {
	if ps, ok := d.peers[s]; ok {
		return ps
	}
	ps := &peerState{}
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
	applied, err := d.eng.ReceiveMessage(ps.st, msg.Data, s)
	if err != nil {
		delete(d.peers, s)
		d.eng.Forget(s)
		s.fail(protocol.CloseInvalidSyncData, fmt.Errorf("invalid sync data for %s: %w", d.id, err))
		return
	}
	for _, c := range applied {
		d.unsaved = append(d.unsaved, c.Raw)
	}
	d.h.m.ChangesAccepted.Add(float64(len(applied)))
	ps.dirty = true
	if msg.Type == protocol.TypeSync {
		d.exists = true // a peer that syncs a document we lack creates it
	}
	if !d.exists {
		ps.unavailable = true
		s.send(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: d.h.opts.PeerID, TargetID: s.peerID, DocumentID: d.id})
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

// flush stores the changes applied since the last flush, then (and only
// then) sends the sync messages that advertise them: durable before
// advertised.
func (d *document) flush() error {
	if !d.exists {
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
	}
	for s, ps := range d.peers {
		if ps.dirty {
			ps.dirty = false
			d.generate(ps)
		}
		for _, data := range ps.out {
			s.send(&protocol.Message{Type: protocol.TypeSync, SenderID: d.h.opts.PeerID, TargetID: s.peerID, DocumentID: d.id, Data: data})
		}
		clear(ps.out)
		ps.out = ps.out[:0]
	}
	return nil
}

// generate queues the next sync message for a peer, if one is due. Queued
// messages go out in flush, after the store has confirmed every change
// whose heads they carry.
func (d *document) generate(ps *peerState) {
	if ps.unavailable && len(d.eng.Heads()) == 0 {
		return
	}
	if data := d.eng.GenerateMessage(ps.st); data != nil {
		ps.unavailable = false
		ps.out = append(ps.out, data)
	}
}

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
	err           error
}

// maybeCompact starts replacing the stored snapshot and incremental
// changes by one new snapshot once the incremental changes outgrow the
// snapshot. The work (automerge-go builds the document from every change
// and saves it: O(history)) runs on its own goroutine, off the hot path;
// compactDone takes its result.
func (d *document) maybeCompact() {
	if d.compacting || !d.created || d.incBytes < d.h.opts.MinCompactBytes || d.incBytes < d.snapshotBytes {
		return
	}
	raws := make([][]byte, 0, d.eng.Len())
	d.eng.All(func(raw []byte) bool { raws = append(raws, raw); return true })
	heads, through, inc := d.eng.Heads(), d.lastSeq, d.incBytes
	d.compacting = true
	go func() {
		snap, err := d.compact(raws, heads, through)
		d.compacted <- compactResult{snapshotBytes: len(snap), incBytes: inc, err: err}
	}()
}

// compact builds and stores the snapshot of raws (the changes through
// batch through, whose heads are heads). It touches only its arguments and
// the store, so it may run beside the owner.
func (d *document) compact(raws [][]byte, heads []syncengine.Hash, through uint64) ([]byte, error) {
	n := 0
	for _, r := range raws {
		n += len(r)
	}
	all := make([]byte, 0, n)
	for _, r := range raws {
		all = append(all, r...)
	}
	doc, err := automerge.Load(all)
	if err != nil {
		return nil, fmt.Errorf("failed to build the document: %w", err)
	}
	snap := doc.Save()
	// Never replace loadable changes by a snapshot that does not load:
	// the Rust core 0.5 can save documents it then refuses to load.
	check, err := automerge.Load(snap)
	if err != nil {
		return nil, fmt.Errorf("the snapshot does not load back: %w", err)
	}
	got := check.Heads()
	if len(got) != len(heads) {
		return nil, errors.New("the snapshot loads back with other heads")
	}
	for _, h := range got {
		if !slices.Contains(heads, syncengine.Hash(h)) {
			return nil, errors.New("the snapshot loads back with other heads")
		}
	}
	ctx, cancel := d.storeCtx()
	defer cancel()
	start := time.Now()
	err = d.h.opts.Store.Compact(ctx, d.id, snap, through)
	d.h.m.observeStore("compact", start)
	if err != nil {
		return nil, fmt.Errorf("failed to store the snapshot: %w", err)
	}
	return snap, nil
}

// compactDone takes a compaction's result on the owner goroutine.
func (d *document) compactDone(r compactResult) {
	d.compacting = false
	d.h.gcSoon() // automerge-go's memory is freed by finalizers
	if r.err != nil {
		d.h.m.StoreErrors.WithLabelValues("compact").Inc()
		d.log.Error("not compacted", "err", r.err)
		d.incBytes -= r.incBytes // retry only after as many new changes again
		return
	}
	d.h.m.Compactions.Inc()
	d.log.Debug("compacted", "snapshot_bytes", r.snapshotBytes, "incremental_bytes", r.incBytes)
	d.snapshotBytes = r.snapshotBytes
	d.incBytes -= r.incBytes
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
	d.peers = nil
	d.eng = nil
	for !d.h.tryRemove(d) {
		select {
		case m := <-d.inbox: // a sender still held us: answer it too
			if m.kind == kindSync {
				m.s.send(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: d.h.opts.PeerID, TargetID: m.s.peerID, DocumentID: d.id})
			}
		case <-time.After(10 * time.Millisecond):
		}
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
