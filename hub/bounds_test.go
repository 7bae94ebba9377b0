package hub_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
)

// TestJoinReplacesOnlyTheSameUser: with logins, a second join with a known
// peer id replaces the first only if both are the same user.
func TestJoinReplacesOnlyTheSameUser(t *testing.T) {
	h := newHub(t, memstore.New())
	alice, mallory := "oidc:alice", "oidc:mallory"
	a1 := connectAs(t, h, "p", alice)
	connectAs(t, h, "p", mallory)
	select {
	case err := <-a1.errc:
		t.Fatalf("another user's join closed the first connection: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	a1.alive()
	connectAs(t, h, "p", alice)
	closedWith(t, a1, protocol.CloseReplaced)
}

// TestRequestsForUnknownDocumentsDoNotStayOpen: a connection that asks for
// many ids nobody has gets doc-unavailable for each, and the documents
// leave memory at once although it stays connected.
func TestRequestsForUnknownDocumentsDoNotStayOpen(t *testing.T) {
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.IdleDocTimeout = time.Hour })
	cl := connect(t, h, "asker", "")
	const n = 300
	for i := range n {
		cl.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: "asker", TargetID: cl.hub, DocumentID: protocol.NewDocumentID(), Data: emptySyncMessage()})
		if got := cl.recv(2 * time.Second); got == nil || got.Type != protocol.TypeDocUnavailable {
			t.Fatalf("request %d: got %+v, want doc-unavailable", i, got)
		}
	}
	noOpenDocuments(t, h)
}

// TestRequesterGetsDocumentCreatedLater: a peer told a document does not
// exist still gets it if another peer creates it while it is connected
// (as from automerge-repo's own server), though the document left memory
// in between; the waiting counts against its connection's documents.
func TestRequesterGetsDocumentCreatedLater(t *testing.T) {
	m := hub.NewMetrics(nil)
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.Metrics, o.MaxDocsPerConn = m, 1 })
	b := connect(t, h, "b", "")
	id := protocol.NewDocumentID()
	bss := automerge.NewSyncState(automerge.New())
	b.sync(id, bss, protocol.TypeRequest)
	if got := b.recv(time.Second); got == nil || got.Type != protocol.TypeDocUnavailable {
		t.Fatalf("got %+v, want doc-unavailable", got)
	}
	noOpenDocuments(t, h)
	// Waiting for one document, b may open no other (MaxDocsPerConn 1).
	other := protocol.NewDocumentID()
	b.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: "b", TargetID: b.hub, DocumentID: other, Data: emptySyncMessage()})
	if got := b.recv(time.Second); got == nil || got.Type != protocol.TypeDocUnavailable || got.DocumentID != other {
		t.Fatalf("got %+v, want doc-unavailable for the second document", got)
	}
	if got := b.recv(time.Second); got == nil || got.Type != protocol.TypeError {
		t.Fatalf("got %+v, want an error naming the bound", got)
	}
	a := connect(t, h, "a", "")
	doc := automerge.New()
	edit(t, doc, "k", "v")
	a.syncUntilQuiet(id, automerge.NewSyncState(doc))
	bdoc := automerge.New()
	bss = automerge.NewSyncState(bdoc)
	for got := b.recv(2 * time.Second); got != nil; got = b.recv(500 * time.Millisecond) {
		if got.Type != protocol.TypeSync || got.DocumentID != id {
			continue
		}
		if _, err := bss.ReceiveMessage(got.Data); err != nil {
			t.Fatal(err)
		}
		b.sync(id, bss, protocol.TypeSync)
	}
	if v, err := bdoc.RootMap().Get("k"); err != nil || v.Str() != "v" {
		t.Fatalf("the waiting requester has k = %v (%v), want the created document", v, err)
	}
}

// TestDocsPerConnBound: past MaxDocsPerConn, a new document gets
// doc-unavailable and an error message naming the bound; the connection
// stays and its open documents keep syncing.
func TestDocsPerConnBound(t *testing.T) {
	m := hub.NewMetrics(nil)
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.Metrics, o.MaxDocsPerConn = m, 3 })
	cl := connect(t, h, "c", "")
	for range 3 {
		createDoc(t, cl)
	}
	id := protocol.NewDocumentID()
	cl.send(&protocol.Message{Type: protocol.TypeSync, SenderID: "c", TargetID: cl.hub, DocumentID: id, Data: emptySyncMessage()})
	var unavailable, errMsg bool
	for got := cl.recv(time.Second); got != nil; got = cl.recv(300 * time.Millisecond) {
		switch got.Type {
		case protocol.TypeDocUnavailable:
			unavailable = got.DocumentID == id
		case protocol.TypeError:
			errMsg = strings.Contains(got.ErrorMessage, "at most 3")
		}
	}
	if !unavailable || !errMsg {
		t.Fatalf("doc-unavailable %v, error naming the bound %v; want both", unavailable, errMsg)
	}
	if got := testutil.ToFloat64(m.LimitHits.WithLabelValues(hub.LimitDocsPerConn)); got != 1 {
		t.Fatalf("docs_per_conn hits = %v, want 1", got)
	}
	cl.alive()
}

// TestMaxOpenDocs: a node with MaxOpenDocs documents open refuses to open
// another (doc-unavailable and an error), and opens it again once one left.
func TestMaxOpenDocs(t *testing.T) {
	m := hub.NewMetrics(nil)
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.Metrics, o.MaxOpenDocs = m, 2 })
	a := connect(t, h, "a", "")
	createDoc(t, a)
	createDoc(t, a)
	b := connect(t, h, "b", "")
	id := protocol.NewDocumentID()
	b.send(&protocol.Message{Type: protocol.TypeSync, SenderID: "b", TargetID: b.hub, DocumentID: id, Data: emptySyncMessage()})
	if got := b.recv(time.Second); got == nil || got.Type != protocol.TypeDocUnavailable {
		t.Fatalf("got %+v, want doc-unavailable", got)
	}
	if got := b.recv(time.Second); got == nil || got.Type != protocol.TypeError || !strings.Contains(got.ErrorMessage, "too many documents open") {
		t.Fatalf("got %+v, want an error naming the bound", got)
	}
	if got := testutil.ToFloat64(m.LimitHits.WithLabelValues(hub.LimitOpenDocs)); got != 1 {
		t.Fatalf("open_docs hits = %v, want 1", got)
	}
	a.c.Close(protocol.CloseNormal, "") // its documents go idle and leave
	noOpenDocuments(t, h)
	createDoc(t, b)
}

// TestEphemeralBounds: an ephemeral message over MaxEphemeralBytes is
// dropped and its sender told; one from a connection that is not a peer
// of the document reaches nobody; relays past the document's budget are
// dropped and counted.
func TestEphemeralBounds(t *testing.T) {
	m := hub.NewMetrics(nil)
	h := newHub(t, memstore.New(), func(o *hub.Options) {
		o.Metrics, o.MaxEphemeralBytes, o.EphemeralRelayBytes = m, 1000, 5000
	})
	a := connect(t, h, "a", "")
	id := createDoc(t, a)
	b := connect(t, h, "b", "")
	b.syncUntilQuiet(id, automerge.NewSyncState(automerge.New()))
	stranger := connect(t, h, "stranger", "")
	eph := func(cl *client, count uint64, size int) {
		cl.send(&protocol.Message{Type: protocol.TypeEphemeral, SenderID: cl.id, TargetID: cl.hub, DocumentID: id, SessionID: cl.id, Count: count, Data: make([]byte, size)})
	}
	eph(a, 1, 1001)
	if got := a.recv(time.Second); got == nil || got.Type != protocol.TypeError || !strings.Contains(got.ErrorMessage, "at most 1000") {
		t.Fatalf("sender got %+v, want an error naming the bound", got)
	}
	eph(stranger, 1, 10)
	for i := range 10 { // 10 x 900 bytes x 1 receiver: the 5000-byte budget lets 5 through
		eph(a, uint64(2+i), 900)
	}
	relayed := 0
	for got := b.recv(time.Second); got != nil; got = b.recv(300 * time.Millisecond) {
		if got.Type == protocol.TypeEphemeral {
			if got.SenderID != "a" {
				t.Fatalf("relayed an ephemeral message from %q, not a peer of the document", got.SenderID)
			}
			relayed++
		}
	}
	if relayed < 5 || relayed > 6 {
		t.Fatalf("%d of 10 relayed, want the 5 (or 6, refilled) the budget allows", relayed)
	}
	if got := testutil.ToFloat64(m.LimitHits.WithLabelValues(hub.LimitEphemeralBytes)); got != 1 {
		t.Fatalf("ephemeral_bytes hits = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.LimitHits.WithLabelValues(hub.LimitEphemeralRelay)); got < 4 {
		t.Fatalf("ephemeral_relay hits = %v, want >= 4", got)
	}
}

// TestDeniedUnknownDocumentsDoNotStayOpen: with logins, a user refused
// documents that do not exist (random ids) is told they are unavailable,
// and they leave memory at once: being refused costs the node no more
// than asking for an unknown id.
func TestDeniedUnknownDocumentsDoNotStayOpen(t *testing.T) {
	auth := &mutableRoles{r: map[string]hub.Role{}}
	h := newHub(t, memstore.New(), func(o *hub.Options) {
		o.Authorizer = auth
		o.IdleDocTimeout = time.Hour
	})
	cl := connectAs(t, h, "asker", "mallory")
	const n = 200
	for i := range n {
		typ := protocol.TypeRequest
		if i%2 == 1 {
			typ = protocol.TypeSync
		}
		cl.send(&protocol.Message{Type: typ, SenderID: "asker", TargetID: cl.hub, DocumentID: protocol.NewDocumentID(), Data: emptySyncMessage()})
		if got := cl.recv(2 * time.Second); got == nil || got.Type != protocol.TypeDocUnavailable {
			t.Fatalf("message %d: got %+v, want doc-unavailable", i, got)
		}
	}
	noOpenDocuments(t, h)
}

// TestBudgetWaitClosesTryAgainLater: a connection whose messages wait for
// its documents longer than BudgetWait is closed with 1013 and an error
// message, and what it had in flight is given back once handled.
func TestBudgetWaitClosesTryAgainLater(t *testing.T) {
	gs := newBlockingStore(false)
	h := newHub(t, gs, func(o *hub.Options) {
		o.MaxConnBytes = 4000
		o.BudgetWait = 300 * time.Millisecond
	})
	cl := connect(t, h, "pusher", "")
	id := protocol.NewDocumentID()
	// The first is handled and blocks the owner in the store; the second
	// waits in the inbox; the third does not fit beside it.
	for i := range 3 {
		cl.send(&protocol.Message{Type: protocol.TypeSync, SenderID: "pusher", TargetID: cl.hub, DocumentID: id, Data: bigChange(t, fmt.Sprint("k", i), 3000)})
		if i == 0 {
			gs.blocked(t)
		}
	}
	var errMsg string
	deadline := time.After(5 * time.Second)
	for errMsg == "" {
		select {
		case b := <-cl.c.fromHub:
			if m, err := protocol.Decode(b); err == nil && m.Type == protocol.TypeError {
				errMsg = m.ErrorMessage
			}
		case <-deadline:
			t.Fatal("no error message")
		}
	}
	if !strings.Contains(errMsg, "waited more than 300ms") {
		t.Errorf("error %q, want the wait named", errMsg)
	}
	closedWith(t, cl, protocol.CloseTryAgainLater)
	if got := h.InflightBytes(); got == 0 {
		t.Errorf("nothing in flight while the owner is blocked")
	}
	close(gs.gate)
	waitInflightZero(t, h)
}

// TestStoreFailureGivesBudgetsBack: messages queued for a document whose
// store fails are answered and their bytes given back, so the node's
// in-flight budget does not leak away store failure by store failure.
func TestStoreFailureGivesBudgetsBack(t *testing.T) {
	fs := newBlockingStore(true)
	h := newHub(t, fs)
	id := protocol.NewDocumentID()
	for i := range 4 {
		cl := connect(t, h, fmt.Sprint("p", i), "")
		cl.send(&protocol.Message{Type: protocol.TypeSync, SenderID: cl.id, TargetID: cl.hub, DocumentID: id, Data: bigChange(t, cl.id, 2000)})
		if i == 0 {
			fs.blocked(t) // the owner is blocked in the store: the others queue
		}
	}
	eventually(t, "the 3 queued messages in flight while the owner is blocked", func() bool { return h.InflightBytes() >= 3*2000 })
	close(fs.gate)
	waitInflightZero(t, h)
}

// TestRemoteHeadsGossipBounded: what a peer gossips about other storages
// is kept (and relayed to subscribers) for at most 64 storages per
// document, each with at most 64 heads; the rest is dropped and counted.
func TestRemoteHeadsGossipBounded(t *testing.T) {
	m := hub.NewMetrics(nil)
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.Metrics = m })
	a, b := connect(t, h, "a", ""), connect(t, h, "b", "")
	id := createDoc(t, a)
	b.syncUntilQuiet(id, automerge.NewSyncState(automerge.New()))
	var sids []string
	for i := range 100 {
		sids = append(sids, fmt.Sprintf("storage-%03d", i))
	}
	b.send(&protocol.Message{Type: protocol.TypeRemoteSubscriptionChange, SenderID: "b", TargetID: b.hub, Add: sids})
	head := protocol.EncodeHead([32]byte{1})
	many := make(map[string]protocol.HeadsAt)
	for i, sid := range sids {
		many[sid] = protocol.HeadsAt{Heads: []string{head}, Timestamp: uint64(i + 1)}
	}
	a.send(&protocol.Message{Type: protocol.TypeRemoteHeadsChanged, SenderID: "a", TargetID: a.hub, DocumentID: id, NewHeads: many})
	wide := slices.Repeat([]string{head}, 65)
	a.send(&protocol.Message{Type: protocol.TypeRemoteHeadsChanged, SenderID: "a", TargetID: a.hub, DocumentID: id,
		NewHeads: map[string]protocol.HeadsAt{"storage-wide": {Heads: wide, Timestamp: 1}}})
	relayed := map[string]bool{}
	for msg := b.recv(500 * time.Millisecond); msg != nil; msg = b.recv(500 * time.Millisecond) {
		if msg.Type == protocol.TypeRemoteHeadsChanged {
			for sid := range msg.NewHeads {
				relayed[sid] = true
			}
		}
	}
	if len(relayed) != 64 || relayed["storage-wide"] {
		t.Fatalf("%d storages relayed (storage-wide: %v), want 64 of the 100", len(relayed), relayed["storage-wide"])
	}
	if got := testutil.ToFloat64(m.Dropped.WithLabelValues("remote_heads_bounds")); got != 37 {
		t.Fatalf("dropped %v gossip entries, want 37 (36 storages past the bound, one with 65 heads)", got)
	}
}

// TestNodeStateBudget: peers' sync state over all connections is bounded
// by MaxStateBytes: a connection whose message adds to it past the bound
// is closed with 1013 (try again later) and an error, and the state it
// held is given back, so the next connection gets in.
func TestNodeStateBudget(t *testing.T) {
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.MaxStateBytes = 100 << 10 })
	bloom := (&amsync.Bloom{NumEntries: 30 << 10, NumBitsPerEntry: 8, NumProbes: 7, Bits: make([]byte, 30<<10)}).Encode()
	send := func(cl *client) *protocol.Message {
		// A change, so that the document answers, and a Bloom filter of
		// 30 KiB, which the peer's state keeps.
		doc := automerge.New()
		edit(t, doc, "k", "v")
		c, err := doc.Change(doc.Heads()[0])
		if err != nil {
			t.Fatal(err)
		}
		data := (&amsync.Message{Type: amsync.MessageTypeSync, Heads: []amsync.Hash{amsync.Hash(doc.Heads()[0])}, Have: []amsync.Have{{Bloom: bloom}}, Changes: [][]byte{c.Save()}}).Encode()
		cl.send(&protocol.Message{Type: protocol.TypeSync, SenderID: cl.id, TargetID: cl.hub, DocumentID: protocol.NewDocumentID(), Data: data})
		for m := cl.recv(2 * time.Second); m != nil; m = cl.recv(2 * time.Second) {
			if m.Type == protocol.TypeSync || m.Type == protocol.TypeError {
				return m
			}
		}
		return nil
	}
	a := connect(t, h, "a", "")
	for i := range 3 { // 90 KiB of Bloom filters
		if m := send(a); m == nil || m.Type != protocol.TypeSync {
			t.Fatalf("message %d: %+v, want a sync answer", i, m)
		}
	}
	b := connect(t, h, "b", "")
	m := send(b)
	if m == nil || m.Type != protocol.TypeError || !strings.Contains(m.ErrorMessage, "bytes of sync state") {
		t.Fatalf("past the node's state budget: %+v, want an error naming it", m)
	}
	closedWith(t, b, protocol.CloseTryAgainLater)
	a.alive()
	a.c.Close(protocol.CloseNormal, "")
	c := connect(t, h, "c", "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := send(c)
		if m != nil && m.Type == protocol.TypeSync {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a's connection closed: %+v, want a sync answer", m)
		}
		c = connect(t, h, fmt.Sprint("c", time.Now().UnixNano()), "")
	}
}
