package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// compaction is the owner's side of compacting its document: what the
// store holds, whether a compaction runs, and when one may run again. The
// work itself is compactStored, a function of the store alone, so it
// cannot touch the owner's state from its goroutine.
type compaction struct {
	incBytes int                // of the batches stored since
	running  bool               // a compaction goroutine runs
	done     chan compactResult // its result
	after    time.Time          // no compaction before (after a failure)
	wait     backoff            // 10 s doubling to 10 min while compactions fail
	skipped  bool               // too large to compact (MaxCompactBytes): reported once
}

func newCompaction() compaction {
	return compaction{done: make(chan compactResult, 1), wait: backoff{min: 10 * time.Second, max: 10 * time.Minute}}
}

// due reports whether a compaction is due for a document of docBytes (its
// changes, uncompressed): once the changes stored since the last snapshot
// are at least min bytes and half the document. Each compaction reads the
// whole history, so it runs when the history has grown by a fixed
// fraction since the last one: its total cost per stored change stays
// constant however long the history grows. (Against the compressed
// snapshot, about 1/50 of the raw history, a long-lived document was
// rebuilt at every 2% of growth.)
func (c *compaction) due(docBytes, min int) bool {
	return c.incBytes >= min && 2*c.incBytes >= docBytes
}

// compactResult is what a compaction reports to the owner.
type compactResult struct {
	snapshotBytes int
	incBytes      int // incremental bytes the snapshot replaced
	conflict      bool
	err           error
}

// maybeCompact starts replacing the stored snapshot and incremental
// changes by one new snapshot once the incremental changes outgrow the
// snapshot. The work (the sync engine indexes every stored change, which
// are then written out: O(history)) runs on its own goroutine, off the hot path;
// compactDone takes its result.
func (d *document) maybeCompact() {
	c := &d.compaction
	if c.running || c.skipped || !d.stored || !c.due(d.eng.Bytes(), d.h.opts.MinCompactBytes) || time.Now().Before(c.after) {
		return
	}
	n := d.eng.Bytes()
	if n > d.h.opts.MaxCompactBytes {
		// indexing it would hold a multiple of it: leave the changes as
		// they are (they load and sync as they are), and say so once.
		c.skipped = true
		d.h.m.LimitHits.WithLabelValues(LimitCompactBytes).Inc()
		d.log.Warn("document too large to compact; its changes are kept as they are", "bytes", n, "max_compact_bytes", d.h.opts.MaxCompactBytes)
		return
	}
	// Compactions on the node together hold at most MaxCompactBytes of
	// documents (indexing holds a multiple): one that does not fit
	// now is tried again after the next write.
	n = max(n, 1)
	if !d.h.compacts.tryAcquire(n) {
		return
	}
	c.running = true
	inc := c.incBytes
	store, id, timeout, m, done := d.h.opts.Store, d.id, d.h.opts.StoreTimeout, d.h.m, c.done
	go func() {
		r := compactStored(store, id, timeout, m)
		d.h.compacts.release(n)
		if r.err != nil {
			r.incBytes = inc // retry only after as many new changes again
		}
		done <- r
	}()
}

// compactStored builds a snapshot of document id from what store holds
// (not from memory: nodes that share the store append batches this node
// may not have yet) and stores it with a compare-and-set on the
// compaction version, so a concurrent compaction on another node never
// loses a batch. Each store call has its own timeout: the work between
// them is CPU. It touches only the store and m.
func compactStored(store Store, id protocol.DocumentID, timeout time.Duration, m *Metrics) compactResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	sd, err := store.LoadDoc(ctx, id)
	cancel()
	if err != nil {
		return compactResult{err: fmt.Errorf("failed to load the document: %w", err)}
	}
	if len(sd.Batches) == 0 {
		return compactResult{snapshotBytes: len(sd.Snapshot)}
	}
	// The engine puts the changes in dependency order: after a store lost
	// data, batches may hold changes before their dependencies (stored
	// again later); a snapshot holds each change after its dependencies.
	raws, err := sd.Changes()
	if err != nil {
		return compactResult{err: err}
	}
	order := syncengine.New(syncengine.Options{})
	if _, err := order.AddStored(nil, raws...); err != nil {
		return compactResult{err: fmt.Errorf("failed to index the stored changes: %w", err)}
	}
	if n := order.Queued(); n > 0 {
		return compactResult{err: fmt.Errorf("%d stored changes lack their dependencies", n)}
	}
	// The snapshot is the changes themselves, in dependency order,
	// deflated (snapshot.go): no Automerge core builds, saves or re-loads
	// the document. It is read back before it replaces anything.
	snap, err := encodeSnapshot(order.All)
	if err != nil {
		return compactResult{err: fmt.Errorf("failed to write the snapshot: %w", err)}
	}
	if back, err := snapshotChanges(snap); err != nil || len(back) != order.Len() {
		return compactResult{err: fmt.Errorf("%w: %d changes of %d (%v)", errSnapshotMismatch, len(back), order.Len(), err)}
	}
	inc := 0
	for _, b := range sd.Batches {
		inc += len(b.Data)
	}
	start := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = store.Compact(ctx, id, snap, sd.Batches[len(sd.Batches)-1].Seq)
	m.observeStore("compact", start)
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
	c := &d.compaction
	c.running = false
	d.h.gcSoon()                               // return what indexing the history took
	c.incBytes = max(0, c.incBytes-r.incBytes) // a failure: retry only after as many new changes again
	if r.err != nil {
		d.h.m.StoreErrors.WithLabelValues("compact").Inc()
		d.log.Error("not compacted", "err", r.err)
		c.after = time.Now().Add(c.wait.next())
		d.h.rememberCompactFailure(d.id, c.after, c.wait)
		return
	}
	if c.wait.failing() {
		c.wait.reset()
		d.h.rememberCompactFailure(d.id, time.Time{}, c.wait)
	}
	if r.conflict {
		// Another node compacted through a later batch first: its snapshot
		// holds ours. Count its work as done here too.
		d.log.Debug("compaction superseded by another node's")
		return
	}
	d.h.m.Compactions.Inc()
	d.log.Debug("compacted", "snapshot_bytes", r.snapshotBytes, "incremental_bytes", r.incBytes)
}

// waitCompaction waits for a running compaction to finish.
func (d *document) waitCompaction() {
	if d.compaction.running {
		d.compactDone(<-d.compaction.done)
	}
}
