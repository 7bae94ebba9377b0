package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

// ListStore is a hub.Store that can list its documents: what backups
// (server/backup) need to export a whole store. The hub never lists.
type ListStore interface {
	hub.Store
	// DocumentIDs returns the id of every document the store holds, each
	// once, sorted; a deleted document is not listed, one created by an
	// empty batch is. A call whose ctx is done, or after Close, fails.
	DocumentIDs(ctx context.Context) ([]protocol.DocumentID, error)
}

// RunListTests checks DocumentIDs. newStore is called once per subtest
// and must return an open store; the suite closes it. The store may hold
// documents of other tests: the suite compares listings before and after
// its own changes.
func RunListTests(t *testing.T, newStore func(t *testing.T) ListStore) {
	open := func(t *testing.T) ListStore {
		t.Helper()
		s := newStore(t)
		if s == nil {
			t.Fatal("newStore returned nil")
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	t.Run("DocumentIDs/ListsExactlyTheDocuments", func(t *testing.T) { testListDocs(t, open(t)) })
	t.Run("DocumentIDs/CancelledAndClosedFail", func(t *testing.T) { testListFails(t, open(t)) })
}

func testListDocs(t *testing.T, s ListStore) {
	ctx := t.Context()
	before, err := s.DocumentIDs(ctx)
	if err != nil {
		t.Fatalf("DocumentIDs: %v", err)
	}
	base := newDocID(t)
	// Hash-tag and escape characters, a prefix of another id, unicode.
	ids := []protocol.DocumentID{base, base + "x", base + "{", base + "}x", base + "%7B", base + "%", base + " é"}
	for i, id := range ids {
		if _, err := s.AppendChanges(ctx, id, []byte{byte(i), 1, 2}); err != nil {
			t.Fatalf("AppendChanges(%q): %v", id, err)
		}
	}
	empty := base + "-empty"
	if _, err := s.AppendChanges(ctx, empty, nil); err != nil {
		t.Fatalf("AppendChanges(%q, empty): %v", empty, err)
	}
	compacted := base + "-compacted"
	seq, err := s.AppendChanges(ctx, compacted, []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx, compacted, []byte("snap"), seq); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	deleted := base + "-deleted"
	if _, err := s.AppendChanges(ctx, deleted, []byte("d")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDoc(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	// A sync state alone does not make a document.
	if err := s.SaveSyncState(ctx, base+"-syncstate-only", "peer", []byte("s")); err != nil {
		t.Fatal(err)
	}

	after, err := s.DocumentIDs(ctx)
	if err != nil {
		t.Fatalf("DocumentIDs: %v", err)
	}
	if !slices.IsSorted(after) {
		t.Errorf("DocumentIDs not sorted: %q", after)
	}
	if c := slices.Compact(slices.Clone(after)); len(c) != len(after) {
		t.Errorf("DocumentIDs lists an id twice: %q", after)
	}
	want := append(slices.Clone(before), ids...)
	want = append(want, empty, compacted)
	slices.Sort(want)
	if !slices.Equal(after, want) {
		t.Errorf("DocumentIDs = %q\nwant %q", after, want)
	}
}

func testListFails(t *testing.T, s ListStore) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.DocumentIDs(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("DocumentIDs with a cancelled context: %v, want context.Canceled", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DocumentIDs(t.Context()); err == nil {
		t.Error("DocumentIDs after Close succeeded")
	}
}
