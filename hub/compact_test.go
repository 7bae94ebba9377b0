package hub_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// conflictStore answers every Compact as if another node had compacted
// through a later batch first.
type conflictStore struct{ hub.Store }

func (conflictStore) Compact(context.Context, protocol.DocumentID, []byte, uint64) error {
	return hub.ErrCompactConflict
}

// TestCompactStored: compaction on its own, against a store: it replaces
// the batches by a snapshot that loads with the same heads; a store
// whose batches lack a dependency is left as it is, with an error; a
// document without batches is not written; a concurrent compaction is
// reported as a conflict.
func TestCompactStored(t *testing.T) {
	ctx := context.Background()
	m := hub.NewMetrics(nil)
	store := memstore.New()
	id := protocol.NewDocumentID()
	doc := automerge.New()
	var changes [][]byte
	for i := range 3 {
		edit(t, doc, "k", int64(i))
		c, err := doc.Change(doc.Heads()[0])
		if err != nil {
			t.Fatal(err)
		}
		changes = append(changes, c.Save())
	}
	inc := 0
	for _, c := range changes {
		if _, err := store.AppendChanges(ctx, id, c); err != nil {
			t.Fatal(err)
		}
		inc += len(c)
	}
	snapBytes, incBytes, conflict, err := hub.CompactStored(store, id, 5*time.Second, m)
	if err != nil || conflict || incBytes != inc || snapBytes == 0 {
		t.Fatalf("compact: snapshot %d, incremental %d (want %d), conflict %v, %v", snapBytes, incBytes, inc, conflict, err)
	}
	sd, err := store.LoadDoc(ctx, id)
	if err != nil || len(sd.Batches) != 0 || len(sd.Snapshot) != snapBytes {
		t.Fatalf("stored: %d batches, snapshot %d bytes, %v", len(sd.Batches), len(sd.Snapshot), err)
	}
	checkLoads(t, sd, doc)

	// Nothing new: no write, the snapshot's size reported.
	if s, i, _, err := hub.CompactStored(store, id, 5*time.Second, m); err != nil || s != snapBytes || i != 0 {
		t.Fatalf("again: snapshot %d, incremental %d, %v", s, i, err)
	}

	// A batch whose change lacks its dependency: left alone.
	lost := protocol.NewDocumentID()
	if _, err := store.AppendChanges(ctx, lost, changes[2]); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := hub.CompactStored(store, lost, 5*time.Second, m); err == nil || !strings.Contains(err.Error(), "lack their dependencies") {
		t.Fatalf("a change without its dependency: %v", err)
	}
	if sd, err := store.LoadDoc(ctx, lost); err != nil || len(sd.Batches) != 1 || sd.Snapshot != nil {
		t.Fatalf("the store was changed: %d batches, snapshot %d bytes, %v", len(sd.Batches), len(sd.Snapshot), err)
	}

	// Another node compacted first.
	other := protocol.NewDocumentID()
	for _, c := range changes {
		if _, err := store.AppendChanges(ctx, other, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, i, conflict, err := hub.CompactStored(conflictStore{store}, other, 5*time.Second, m); err != nil || !conflict || i != inc {
		t.Fatalf("a concurrent compaction: conflict %v, incremental %d, %v", conflict, i, err)
	}
}

// checkLoads checks that the stored document's changes build, with
// automerge-go, a document with want's heads.
func checkLoads(t *testing.T, sd hub.StoredDoc, want *automerge.Doc) {
	t.Helper()
	raws, err := sd.Changes()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := automerge.Load(slices.Concat(raws...))
	if err != nil || !slices.Equal(loaded.Heads(), want.Heads()) {
		t.Fatalf("the stored changes load with heads %v (%v), want %v", loaded.Heads(), err, want.Heads())
	}
}

// TestAutomergeSnapshotStillLoads: a snapshot written before snapshots
// were changes (an Automerge document, automerge-go's Save) still loads,
// with the batches after it, and compacting it writes the new format.
func TestAutomergeSnapshotStillLoads(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	id := protocol.NewDocumentID()
	doc := automerge.New()
	for i := range 20 {
		edit(t, doc, fmt.Sprint("k", i), int64(i))
	}
	seq, err := store.AppendChanges(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Compact(ctx, id, doc.Save(), seq); err != nil {
		t.Fatal(err)
	}
	edit(t, doc, "after", "the snapshot")
	c, err := doc.Change(doc.Heads()[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.AppendChanges(ctx, id, c.Save()); err != nil {
		t.Fatal(err)
	}
	sd, err := store.LoadDoc(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	checkLoads(t, sd, doc)
	if _, _, _, err := hub.CompactStored(store, id, 5*time.Second, hub.NewMetrics(nil)); err != nil {
		t.Fatal(err)
	}
	sd, err = store.LoadDoc(ctx, id)
	if err != nil || len(sd.Batches) != 0 || !strings.HasPrefix(string(sd.Snapshot), "PLTS") {
		t.Fatalf("after compaction: %d batches, snapshot %.8q, %v", len(sd.Batches), sd.Snapshot, err)
	}
	checkLoads(t, sd, doc)

	// A hub serves it to a new peer.
	h := newHub(t, store)
	cl := connect(t, h, "reader", "")
	got := automerge.New()
	ss := automerge.NewSyncState(got)
	cl.sync(id, ss, protocol.TypeRequest)
	cl.syncUntilQuiet(id, ss)
	if !slices.Equal(got.Heads(), doc.Heads()) {
		t.Fatalf("a new peer got heads %v, want %v", got.Heads(), doc.Heads())
	}
}
