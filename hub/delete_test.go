package hub_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// waitUnavailable reads cl's messages until doc-unavailable for id.
func waitUnavailable(t *testing.T, cl *client, id protocol.DocumentID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m := cl.recv(100 * time.Millisecond)
		if m != nil && m.Type == protocol.TypeDocUnavailable && m.DocumentID == id {
			return
		}
	}
	t.Fatalf("%s was not told %s is unavailable", cl.id, id)
}

// checkDeleted: every peer on every node was told the document is
// unavailable, the store and the broker's stream hold nothing of it, the
// document left memory everywhere, and a later request is unavailable.
func checkDeleted(t *testing.T, hubs []*hub.Hub, ms []*hub.Metrics, store hub.Store, peers []*peerOn, id protocol.DocumentID, gone func()) {
	t.Helper()
	for _, p := range peers {
		waitUnavailable(t, p.cl, id)
	}
	if _, err := store.LoadDoc(t.Context(), id); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("LoadDoc after delete: %v, want ErrNotFound", err)
	}
	for i, h := range hubs {
		eventually(t, "deleted document left memory", func() bool { return h.OpenDocuments() == 0 })
		want := "remote"
		if i == 0 {
			want = "local"
		}
		if n := testutil.ToFloat64(ms[i].DocumentsDeleted.WithLabelValues(want)); n != 1 {
			t.Fatalf("node %d counted %v %s deletions, want 1", i, n, want)
		}
	}
	if gone != nil {
		gone() // before the late request opens the document again
	}
	late := connect(t, hubs[len(hubs)-1], "late", "")
	late.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: late.id, TargetID: late.hub, DocumentID: id, Data: emptySyncMessage()})
	waitUnavailable(t, late, id)
}

func TestDeleteDetachesPeersOnEveryNode(t *testing.T) {
	hubs, ms, store := cluster(t, 2, 0, nil)
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 2, id)
	editRounds(t, id, peers, 2)
	existed, err := hubs[0].DeleteDocument(t.Context(), id)
	if err != nil || !existed {
		t.Fatalf("DeleteDocument: %v, %v", existed, err)
	}
	checkDeleted(t, hubs, ms, store, peers, id, nil)
	// Deleting it again: it does not exist.
	if existed, err := hubs[0].DeleteDocument(t.Context(), id); err != nil || existed {
		t.Fatalf("second DeleteDocument: %v, %v; want false, nil", existed, err)
	}
	// An edit a detached peer makes is not synced to the others: they
	// are no longer peers of the document. (Without an Authorizer it
	// creates the document anew, as any sync of an unknown document does.)
	edit(t, peers[1].doc, "after", "delete")
	peers[1].cl.sync(id, peers[1].ss, protocol.TypeSync)
	for _, p := range peers[2:] {
		if m := p.cl.recv(300 * time.Millisecond); m != nil && m.Type == protocol.TypeSync && m.DocumentID == id {
			t.Fatalf("%s got a sync message of the deleted document", p.cl.id)
		}
	}
}

func TestDeleteOnRedisRemovesStream(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	hubs, ms, store := redisHubs(t, srv, 2)
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 2, id)
	editRounds(t, id, peers, 2)
	rc := srv.Client(t)
	ctx := context.Background()
	if n, err := rc.Exists(ctx, "plait:{"+string(id)+"}:log", "plait:{"+string(id)+"}:pos").Result(); err != nil || n != 2 {
		t.Fatalf("stream keys before the delete: %d, %v", n, err)
	}
	existed, err := hubs[0].DeleteDocument(t.Context(), id)
	if err != nil || !existed {
		t.Fatalf("DeleteDocument: %v, %v", existed, err)
	}
	checkDeleted(t, hubs, ms, store, peers, id, func() {
		keys, err := rc.Keys(ctx, "*"+string(id)+"*").Result()
		if err != nil || len(keys) != 0 {
			t.Fatalf("Redis keys of the deleted document: %v, %v", keys, err)
		}
	})
}

func TestDeleteDocumentNotOpen(t *testing.T) {
	hubs, ms, store := cluster(t, 1, 0, nil)
	cl := connect(t, hubs[0], "creator", "")
	id := createDoc(t, cl)
	cl.c.Close(protocol.CloseNormal, "")
	noOpenDocuments(t, hubs[0])
	existed, err := hubs[0].DeleteDocument(t.Context(), id)
	if err != nil || !existed {
		t.Fatalf("DeleteDocument: %v, %v", existed, err)
	}
	if _, err := store.LoadDoc(t.Context(), id); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("LoadDoc after delete: %v", err)
	}
	if n := testutil.ToFloat64(ms[0].DocumentsDeleted.WithLabelValues("local")); n != 1 {
		t.Fatalf("deletions counted: %v", n)
	}
	if existed, err := hubs[0].DeleteDocument(t.Context(), protocol.NewDocumentID()); err != nil || existed {
		t.Fatalf("DeleteDocument of an unknown id: %v, %v", existed, err)
	}
}
