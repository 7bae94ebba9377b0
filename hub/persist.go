package hub

import (
	"context"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"time"

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

// persist writes the changes applied since the last write to the store as
// one batch (creating the document's record if it has none yet), and
// queues the batch for publishing to the other nodes.
func (d *document) persist() error {
	if d.stored && len(d.unsaved) == 0 {
		return nil
	}
	n := 0
	for _, raw := range d.unsaved {
		n += len(raw)
	}
	batch := make([]byte, 0, n)
	for _, raw := range d.unsaved {
		batch = append(batch, raw...)
	}
	parent := d.traceSC
	d.traceSC = trace.SpanContext{}
	_, sp := d.h.startSpan(parent, spanStore, trace.SpanKindInternal, attrDoc.String(string(d.id)), attrBytes.Int(len(batch)))
	ctx, cancel := d.storeCtx()
	start := time.Now()
	_, err := d.h.opts.Store.AppendChanges(ctx, d.id, batch)
	cancel()
	d.h.m.observeStore("append", start)
	endSpan(sp, err)
	if err != nil {
		d.traceSC = parent // the failure is logged with its trace
		return err
	}
	created := !d.stored
	d.stored = true
	if f := d.h.opts.OnStored; f != nil && (created || len(batch) > 0) {
		f(d.id, created)
	}
	d.compaction.incBytes += len(batch)
	clear(d.unsaved)
	d.unsaved = d.unsaved[:0]
	if len(batch) > 0 && d.h.opts.Broker != nil {
		d.stream.unpublished = append(d.stream.unpublished, batch)
		d.stream.unpubTrace = append(d.stream.unpubTrace, parent)
	}
	return nil
}
