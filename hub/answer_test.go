package hub_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
)

// TestOneMessageOfChangesPerRoundTrip: a peer that has not answered the
// last changes sent to it gets the changes that arrive meanwhile in one
// message when it answers, not one message per change; a peer that never
// answers gets them anyway after a bounded wait.
func TestOneMessageOfChangesPerRoundTrip(t *testing.T) {
	h := newHub(t, memstore.New())
	id := protocol.NewDocumentID()
	wdoc, rdoc := automerge.New(), automerge.New()
	w, r := connect(t, h, "writer", "w-storage"), connect(t, h, "reader", "r-storage")
	wss, rss := automerge.NewSyncState(wdoc), automerge.NewSyncState(rdoc)
	edit(t, wdoc, "k0", int64(0))
	w.syncUntilQuiet(id, wss)
	r.sync(id, rss, protocol.TypeRequest)
	r.syncUntilQuiet(id, rss)
	if v, _ := rdoc.RootMap().Get("k0"); v.Kind() != automerge.KindInt64 {
		t.Fatal("the reader did not get the document")
	}

	// recvChanges returns the next sync message's changes, failing if none
	// comes within timeout; drop is whether to leave it unanswered.
	recvChanges := func(cl *client, ss *automerge.SyncState, timeout time.Duration) int {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			m := cl.recv(time.Until(deadline))
			if m == nil {
				t.Fatalf("no sync message within %v", timeout)
			}
			if m.Type != protocol.TypeSync {
				continue
			}
			pm, err := amsync.ParseMessage(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ss.ReceiveMessage(m.Data); err != nil {
				t.Fatal(err)
			}
			return len(pm.Changes)
		}
	}
	// writerEdit makes one change on the writer and sends it to the hub
	// (the hub's answers wait in the writer's pipe).
	writerEdit := func(i int) {
		t.Helper()
		edit(t, wdoc, fmt.Sprintf("k%d", i), int64(i))
		if !w.sync(id, wss, protocol.TypeSync) {
			t.Fatal("the writer has nothing to send")
		}
	}

	writerEdit(1)
	if n := recvChanges(r, rss, 2*time.Second); n != 1 {
		t.Fatalf("first change: a message of %d changes", n)
	}
	// The reader does not answer yet: four more changes wait for it
	// (well within the hub's wait for an answer, a second).
	for i := 2; i <= 5; i++ {
		writerEdit(i)
	}
	if m := r.recv(200 * time.Millisecond); m != nil && m.Type == protocol.TypeSync {
		pm, _ := amsync.ParseMessage(m.Data)
		t.Fatalf("a sync message before the reader answered: %d bytes, %d changes, heads %d, need %d, have %d", len(m.Data), len(pm.Changes), len(pm.Heads), len(pm.Need), len(pm.Have))
	}
	r.sync(id, rss, protocol.TypeSync) // its answer
	if n := recvChanges(r, rss, 2*time.Second); n != 4 {
		t.Fatalf("after the answer: a message of %d changes, want the 4 that waited", n)
	}
	// A reader that never answers still gets new changes, after the wait.
	start := time.Now()
	writerEdit(6)
	if n := recvChanges(r, rss, 3*time.Second); n != 1 {
		t.Fatalf("unanswered: a message of %d changes", n)
	}
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Fatalf("an unanswered peer got new changes after %v, without waiting for its answer", waited)
	}
	r.syncUntilQuiet(id, rss)
	for i := 0; i <= 6; i++ {
		if v, err := rdoc.RootMap().Get(fmt.Sprintf("k%d", i)); err != nil || v.Kind() != automerge.KindInt64 {
			t.Fatalf("the reader lacks k%d", i)
		}
	}
}
