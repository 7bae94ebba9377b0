package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/plaithub/plait/pkg/syncengine"
)

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
	if f, ok := d.h.compactFailure(d.id); ok {
		d.compaction.after, d.compaction.wait = f.after, f.wait
	}
	d.eng = syncengine.New(syncengine.Options{
		Accept:           d.accept,
		MaxBytes:         max(d.h.opts.MaxDocBytes, 0),
		MaxInflatedBytes: d.h.opts.MaxInflatedBytes,
		MaxSendBytes:     d.h.opts.MaxSendBytes,
	})
	d.refreshMaxBytes()
	if b := d.h.opts.Broker; b != nil {
		ctx, cancel := d.brokerCtx()
		pos, err := b.Subscribe(ctx, d.id)
		cancel()
		if err != nil {
			d.h.m.BrokerErrors.WithLabelValues("subscribe").Inc()
			return err
		}
		d.stream.on, d.stream.pos = true, pos
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
	d.exists, d.stored = true, true
	for _, b := range sd.Batches {
		d.compaction.incBytes += len(b.Data)
	}
	raws, err := sd.Changes()
	if err != nil {
		return err
	}
	if _, err := d.eng.AddStored(remoteOrigin, raws...); err != nil {
		return fmt.Errorf("failed to index stored changes: %w", err)
	}
	if n := d.eng.Queued(); n > 0 {
		// Their dependencies are lost from the store; peers that have them
		// are asked for them (need) and the changes are stored again.
		d.log.Warn("stored changes lack their dependencies; asking peers for them", "changes", n)
	}
	d.heads = d.eng.Heads()
	d.genHeads = d.heads
	return nil
}

func (d *document) saveSyncState(s *session, ps *peerState) {
	if s.ephemeral || !d.stored {
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

// write is one store write: the changes applied since the previous one
// began, as one batch (creating the document's record if it has none yet).
type write struct {
	seq   uint64
	raws  [][]byte // the batch's changes (catchUp counts them as on their way)
	batch []byte
	heads []syncengine.Hash // the document's heads once this batch is stored
	trace trace.SpanContext // the span of the latest message it holds changes of
	since time.Time         // when the earliest peer message it holds changes of was read (zero: none)
	err   error
}

// startWrite begins the store write of the changes applied since the last
// one began, on its own goroutine; its result comes back on d.writeDone
// and finishWrite takes it. There is at most one write in flight, so
// batches reach the store (and the broker) in the order they were applied.
// The owner goes on meanwhile: it applies the next messages and generates
// their answers, which wait in their peers' queues (outMsg.needs) until
// the write holding their changes is confirmed.
func (d *document) startWrite() {
	n := 0
	for _, raw := range d.unsaved {
		n += len(raw)
	}
	batch := make([]byte, 0, n)
	for _, raw := range d.unsaved {
		batch = append(batch, raw...)
	}
	d.started++
	w := &write{seq: d.started, raws: d.unsaved, batch: batch, heads: d.eng.Heads(), trace: d.traceSC, since: d.unsavedSince}
	d.unsaved, d.spare = d.spare, nil
	d.unsavedSince = time.Time{}
	d.traceSC = trace.SpanContext{}
	d.writing = w
	_, sp := d.h.startSpan(w.trace, spanStore, trace.SpanKindInternal, attrDoc.String(string(d.id)), attrBytes.Int(len(batch)))
	store, id, m, done, timeout := d.h.opts.Store, d.id, d.h.m, d.writeDone, d.h.opts.StoreTimeout
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		_, w.err = store.AppendChanges(ctx, id, w.batch)
		cancel()
		m.observeStore("append", start)
		endSpan(sp, w.err)
		done <- w // buffered for the one write in flight: never blocks
	}()
}

// finishWrite takes the result of the write in flight (w, from
// d.writeDone): the document's durable heads move to the batch's,
// subscribers of this node's storage hear of them, and the batch is
// queued for the other nodes. Sending the sync messages it released is
// flush's. A failure is kept in d.writeErr: the owner fails every peer in
// its next flush (flushed) and exits.
func (d *document) finishWrite(w *write) error {
	d.writing = nil
	d.releaseBehind()
	clear(w.raws)
	d.spare = w.raws[:0]
	if w.err != nil {
		d.traceSC = w.trace // the failure is logged with its trace
		d.writeErr = w.err
		return w.err
	}
	d.durable = w.seq
	if !w.since.IsZero() {
		// The sync messages this write held are released now, and the
		// owner's next flush queues them for their connections.
		d.h.m.RelaySeconds.Observe(time.Since(w.since).Seconds())
	}
	created := !d.stored
	d.stored = true
	if f := d.h.opts.OnStored; f != nil && (created || len(w.batch) > 0) {
		f(d.id, created)
	}
	d.compaction.incBytes += len(w.batch)
	if len(w.batch) > 0 && d.h.opts.Broker != nil {
		d.stream.unpublished = append(d.stream.unpublished, w.batch)
		d.stream.unpubTrace = append(d.stream.unpubTrace, w.trace)
	}
	d.storedHeads(w.heads)
	return nil
}

// storedHeads records heads as the document's durable heads and tells the
// peers subscribed to this node's storage, if they moved.
func (d *document) storedHeads(heads []syncengine.Hash) {
	if slices.Equal(heads, d.heads) {
		return
	}
	d.heads = heads
	kh := knownHeads{raw: heads, timestamp: uint64(time.Now().UnixMilli())}
	for s := range d.peers {
		if s.watches(d.h.storageID) {
			kh = kh.encoded() // once, for every subscriber
			d.sendHeads(s, d.h.storageID, kh)
		}
	}
}

// storeAll waits for the write in flight and writes what is left, on the
// owner goroutine, so that the store has every change applied here: for a
// caller told "stored" when it returns (SubmitChanges), and before the
// document leaves memory (another owner may load it at once). Sync
// messages it released go out in the next flush.
func (d *document) storeAll() error {
	if d.writeErr != nil {
		return d.writeErr
	}
	for d.writing != nil || d.exists && (len(d.unsaved) > 0 || !d.stored) {
		if d.writing == nil {
			d.startWrite()
		}
		if err := d.finishWrite(<-d.writeDone); err != nil {
			return err
		}
	}
	return nil
}

// abandonWrite waits for the write in flight, if any, and forgets it: the
// document is failing or being deleted, and nothing of this owner may
// reach the store after it has left.
func (d *document) abandonWrite() {
	if d.writing != nil {
		<-d.writeDone
		d.writing = nil
		d.releaseBehind()
	}
}

// releaseBehind gives back the budgets of the messages handled while the
// write that just ended ran (see take).
func (d *document) releaseBehind() {
	for _, m := range d.behind {
		m.done()
	}
	clear(d.behind)
	d.behind = d.behind[:0]
}

// storeBehind reports whether the owner must wait for the write in flight
// before it applies more messages: a batch's worth (maxBatchMessages)
// waits behind it already. So a document holds at most two batches that
// are not durable (one in the store, one in memory), and past that its
// peers wait on the inbox (and their budgets) as they would for a store
// that writes synchronously.
func (d *document) storeBehind() bool {
	return d.writing != nil && len(d.behind) >= maxBatchMessages
}

// needs is the write that a sync message generated now waits for: the
// message advertises the engine's heads, so every change applied so far
// must be stored. They are in the writes up to the one in flight
// (d.started), and in the next one if changes wait for it (or the
// document's record is still to be created). Changes from other nodes
// were stored there.
func (d *document) needs() uint64 {
	if len(d.unsaved) > 0 || d.writing == nil && !d.stored {
		return d.started + 1
	}
	return d.started
}
