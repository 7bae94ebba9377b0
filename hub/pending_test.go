package hub_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/membroker"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// requestAndCreate has b request document id before a creates it (both
// on their hubs), and returns what b hears first about id, and when.
func requestAndCreate(t *testing.T, a, b *client) (*protocol.Message, time.Duration) {
	t.Helper()
	id := protocol.NewDocumentID()
	ssB := automerge.NewSyncState(automerge.New())
	start := time.Now()
	b.sync(id, ssB, protocol.TypeRequest)
	doc := automerge.New()
	edit(t, doc, "title", "fresh")
	a.syncUntilQuiet(id, automerge.NewSyncState(doc))
	for {
		m := b.recv(5 * time.Second)
		if m == nil {
			t.Fatal("the requester heard nothing")
		}
		if m.DocumentID != id {
			continue
		}
		if m.Type == protocol.TypeSync {
			if _, err := ssB.ReceiveMessage(m.Data); err != nil {
				t.Fatal(err)
			}
		}
		return m, time.Since(start)
	}
}

// TestRequestWaitsForCreator: a request for a document that does not
// exist yet waits for its creator's changes (PendingWait) and gets the
// document, not doc-unavailable: on one node, and across two nodes that
// share a store and a broker.
func TestRequestWaitsForCreator(t *testing.T) {
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.PendingWait = 5 * time.Second })
	m, took := requestAndCreate(t, connect(t, h, "creator", ""), connect(t, h, "finder", ""))
	if m.Type != protocol.TypeSync {
		t.Fatalf("one node: the requester got %q, want the document", m.Type)
	}
	t.Logf("one node: the document reached the requester after %v", took)

	store, bus := memstore.New(), membroker.NewBus(0)
	var hubs []*hub.Hub
	for i := range 2 {
		hubs = append(hubs, newHub(t, store, func(o *hub.Options) {
			o.Broker, o.PeerID, o.PendingWait = membroker.New(bus), fmt.Sprintf("node-%d", i), 5*time.Second
		}))
	}
	m, took = requestAndCreate(t, connect(t, hubs[0], "creator", ""), connect(t, hubs[1], "finder", ""))
	if m.Type != protocol.TypeSync {
		t.Fatalf("two nodes: the requester got %q, want the document", m.Type)
	}
	t.Logf("two nodes: the document reached the requester after %v", took)
}

// TestRequestForUnknownIDAfterPendingWait: a request for an id nobody
// announces is answered doc-unavailable once PendingWait has passed (not
// before), and the document leaves memory.
func TestRequestForUnknownIDAfterPendingWait(t *testing.T) {
	const wait = 300 * time.Millisecond
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.PendingWait = wait })
	cl := connect(t, h, "asker", "")
	start := time.Now()
	cl.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: "asker", TargetID: cl.hub, DocumentID: protocol.NewDocumentID(), Data: emptySyncMessage()})
	m := cl.recv(5 * time.Second)
	took := time.Since(start)
	if m == nil || m.Type != protocol.TypeDocUnavailable {
		t.Fatalf("got %+v, want doc-unavailable", m)
	}
	if took < wait {
		t.Fatalf("doc-unavailable after %v, before PendingWait (%v)", took, wait)
	}
	noOpenDocuments(t, h)
}
