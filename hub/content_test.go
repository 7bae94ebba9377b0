package hub_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

func changeChunks(t *testing.T, doc *automerge.Doc, since ...automerge.ChangeHash) [][]byte {
	t.Helper()
	chs, err := doc.Changes(since...)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, c := range chs {
		out = append(out, c.Save())
	}
	return out
}

// TestSubmitAndReadChanges: changes submitted through the API are stored
// before SubmitChanges returns and synced to a connected peer; a change
// without its dependencies, or one past MaxDocBytes, is refused and
// stores nothing; ReadChanges copies the document out unless it is over
// the caller's bound.
func TestSubmitAndReadChanges(t *testing.T) {
	store := memstore.New()
	h := newHub(t, store, func(o *hub.Options) { o.MaxDocBytes = 64 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := protocol.NewDocumentID()

	if dc, err := h.ReadChanges(ctx, id, 0); err != nil || dc.Exists || len(dc.Changes) != 0 {
		t.Fatalf("a document nobody has: %+v, %v", dc, err)
	}
	doc := automerge.New()
	edit(t, doc, "a", "1")
	first := changeChunks(t, doc)
	heads, err := h.SubmitChanges(ctx, id, "alice", first)
	if err != nil || len(heads) != 1 || heads[0] != [32]byte(doc.Heads()[0]) {
		t.Fatalf("submit: %v %v", heads, err)
	}
	if sd, err := store.LoadDoc(ctx, id); err != nil || len(sd.Batches) != 1 {
		t.Fatalf("not stored on return: %+v %v", sd, err)
	}

	// A peer joins, then the API changes the document: the peer gets it.
	cl := connect(t, h, "peer", "")
	peerDoc := automerge.New()
	ss := automerge.NewSyncState(peerDoc)
	cl.syncUntilQuiet(id, ss)
	before := doc.Heads()
	edit(t, doc, "b", "2")
	second := changeChunks(t, doc, before...)
	if _, err := h.SubmitChanges(ctx, id, "alice", second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the peer has the API's change", func() bool {
		for {
			m := cl.recv(200 * time.Millisecond)
			if m == nil {
				break
			}
			if m.Type == protocol.TypeSync {
				if _, err := ss.ReceiveMessage(m.Data); err != nil {
					t.Fatal(err)
				}
			}
		}
		v, err := peerDoc.RootMap().Get("b")
		return err == nil && v.Kind() == automerge.KindStr && v.Str() == "2"
	})

	dc, err := h.ReadChanges(ctx, id, 0)
	if err != nil || !dc.Exists || len(dc.Changes) != 2 || dc.Heads[0] != [32]byte(doc.Heads()[0]) {
		t.Fatalf("read: %+v %v", dc, err)
	}
	if _, err := h.ReadChanges(ctx, id, 10); !errors.Is(err, hub.ErrTooLargeToRead) {
		t.Fatalf("a 10-byte bound: %v", err)
	}

	// Refused: nothing stored.
	other := automerge.New()
	edit(t, other, "x", "1")
	b := other.Heads()
	edit(t, other, "y", "2")
	if _, err := h.SubmitChanges(ctx, id, "alice", changeChunks(t, other, b...)); !errors.Is(err, hub.ErrMissingDeps) {
		t.Fatalf("a change without its dependencies: %v", err)
	}
	big := automerge.New()
	edit(t, big, "big", strings.Repeat("x", 100<<10))
	if _, err := h.SubmitChanges(ctx, id, "alice", changeChunks(t, big)); !errors.Is(err, hub.ErrLimitExceeded) {
		t.Fatalf("a change past MaxDocBytes: %v", err)
	}
	if _, err := h.SubmitChanges(ctx, id, "alice", [][]byte{[]byte("junk")}); err == nil {
		t.Fatalf("junk accepted")
	}
	if _, err := h.CreateDocument(ctx, id, "bob", changeChunks(t, other)); !errors.Is(err, hub.ErrDocExists) {
		t.Fatalf("creating a document that exists: %v", err)
	}
	if sd, err := store.LoadDoc(ctx, id); err != nil || len(sd.Batches) != 2 {
		t.Fatalf("refused changes were stored: %d batches, %v", len(sd.Batches), err)
	}
	fresh := protocol.NewDocumentID()
	if _, err := h.CreateDocument(ctx, fresh, "bob", changeChunks(t, other)); err != nil {
		t.Fatalf("creating a new document: %v", err)
	}
	if _, err := h.CreateDocument(ctx, fresh, "carol", changeChunks(t, doc)); !errors.Is(err, hub.ErrDocExists) {
		t.Fatalf("creating it again: %v", err)
	}
}

// TestSubmitAbandoned: a submission whose caller gave up (its context
// ended) before the owner got to it is not applied: the caller's error
// is what happened.
func TestSubmitAbandoned(t *testing.T) {
	store := newBlockingStore(false)
	h := newHub(t, store)
	id := protocol.NewDocumentID()
	a := automerge.New()
	edit(t, a, "a", "1")
	chunks := changeChunks(t, a)
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := h.SubmitChanges(ctx, id, "alice", chunks)
		first <- err
	}()
	store.blocked(t) // the owner is in the store write of the first
	b := automerge.New()
	edit(t, b, "b", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := h.SubmitChanges(ctx, id, "bob", changeChunks(t, b))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the abandoned submission: %v", err)
	}
	close(store.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dc, err := h.ReadChanges(ctx, id, 0)
	if err != nil || len(dc.Changes) != 1 || dc.Heads[0] != [32]byte(a.Heads()[0]) {
		t.Fatalf("the document: %+v %v; want only the first change", dc, err)
	}
}
