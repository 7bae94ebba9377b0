package hub_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
)

// TestDurableBeforeAdvertised: while the store has not confirmed a change,
// no peer hears of it.
func TestDurableBeforeAdvertised(t *testing.T) {
	store := &gateStore{Store: memstore.New(), gate: make(chan struct{})}
	h := newHub(t, store)
	a := connect(t, h, "a", "")
	doc := automerge.New()
	edit(t, doc, "x", "1")
	ss := automerge.NewSyncState(doc)
	id := protocol.NewDocumentID()
	a.sync(id, ss, protocol.TypeSync)
	if m := a.recv(300 * time.Millisecond); m != nil {
		t.Fatalf("hub answered before its store confirmed anything: %+v", m)
	}
	close(store.gate)
	a.syncUntilQuiet(id, ss)

	// Now a change that the store holds back again: the hub must not
	// acknowledge heads that include it.
	store.gate = make(chan struct{})
	edit(t, doc, "x", "2")
	want := doc.Heads()
	a.sync(id, ss, protocol.TypeSync)
	for m := a.recv(300 * time.Millisecond); m != nil; m = a.recv(300 * time.Millisecond) {
		if m.Type == protocol.TypeSync {
			sm, err := ss.ReceiveMessage(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Equal(sm.Heads(), want) {
				t.Fatalf("hub advertised heads %v before storing them", want)
			}
		}
	}
	close(store.gate)
	a.syncUntilQuiet(id, ss)
	sd, err := store.LoadDoc(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	stored := automerge.New()
	for _, b := range sd.Batches {
		if err := stored.LoadIncremental(b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(stored.Heads(), want) {
		t.Fatalf("store holds heads %v, want %v", stored.Heads(), want)
	}
}

func TestEvictionAndReload(t *testing.T) {
	store := memstore.New()
	h := newHub(t, store)
	a := connect(t, h, "a", "")
	doc := automerge.New()
	edit(t, doc, "k", "v")
	id := protocol.NewDocumentID()
	a.syncUntilQuiet(id, automerge.NewSyncState(doc))
	if n := h.OpenDocuments(); n != 1 {
		t.Fatalf("open documents %d, want 1", n)
	}
	a.c.Close(protocol.CloseNormal, "")
	<-a.errc
	noOpenDocuments(t, h)
	b := connect(t, h, "b", "")
	docB := automerge.New()
	ssB := automerge.NewSyncState(docB)
	b.sync(id, ssB, protocol.TypeRequest)
	b.syncUntilQuiet(id, ssB)
	v, err := docB.RootMap().Get("k")
	if err != nil || v.Str() != "v" {
		t.Fatalf("reloaded document: %v %v", v, err)
	}
}

func TestSyncStatePersistedForStoragePeers(t *testing.T) {
	store := memstore.New()
	h := newHub(t, store)
	a := connect(t, h, "a", "storage-a")
	doc := automerge.New()
	edit(t, doc, "k", "v")
	id := protocol.NewDocumentID()
	a.syncUntilQuiet(id, automerge.NewSyncState(doc))
	a.c.Close(protocol.CloseNormal, "")
	<-a.errc
	var raw []byte
	eventually(t, "the sync state of storage-a saved", func() bool {
		var err error
		raw, err = store.LoadSyncState(context.Background(), id, "storage-a")
		if err != nil && !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("loading the sync state of storage-a: %v", err)
		}
		return err == nil
	})
	if _, err := automerge.LoadSyncState(doc, raw); err != nil {
		t.Fatalf("stored sync state unreadable: %v", err)
	}
	// An ephemeral peer's state is never stored.
	e := connect(t, h, "e", "")
	e.syncUntilQuiet(id, automerge.NewSyncState(automerge.New()))
	e.c.Close(protocol.CloseNormal, "")
	<-e.errc
	if _, err := store.LoadSyncState(context.Background(), id, ""); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("ephemeral peer's sync state stored: %v", err)
	}
}

func TestEphemeralRelayedOnceToOtherPeers(t *testing.T) {
	h := newHub(t, memstore.New())
	a, b := connect(t, h, "a", ""), connect(t, h, "b", "")
	doc := automerge.New()
	edit(t, doc, "k", "v")
	id := protocol.NewDocumentID()
	a.syncUntilQuiet(id, automerge.NewSyncState(doc))
	b.syncUntilQuiet(id, automerge.NewSyncState(automerge.New()))
	eph := &protocol.Message{Type: protocol.TypeEphemeral, SenderID: "a", TargetID: a.hub, DocumentID: id, SessionID: "s1", Count: 1, Data: []byte{0xa0}}
	a.send(eph)
	a.send(eph) // duplicate: dropped
	eph2 := *eph
	eph2.Count = 2
	a.send(&eph2)
	var got []uint64
	for m := b.recv(300 * time.Millisecond); m != nil; m = b.recv(300 * time.Millisecond) {
		if m.Type == protocol.TypeEphemeral {
			if m.SenderID != "a" || m.TargetID != "b" || m.SessionID != "s1" {
				t.Fatalf("relayed ephemeral has wrong ids: %+v", m)
			}
			got = append(got, m.Count)
		}
	}
	if !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("b received ephemeral counts %v, want [1 2]", got)
	}
	if m := a.recv(100 * time.Millisecond); m != nil && m.Type == protocol.TypeEphemeral {
		t.Fatalf("sender got its own ephemeral back")
	}
}

// TestSecondJoinDoesNotPushOffFirst: peer ids are public, so an anonymous
// join with a known id gets a session of its own; the first connection
// stays open and keeps syncing.
func TestSecondJoinDoesNotPushOffFirst(t *testing.T) {
	h := newHub(t, memstore.New())
	a1 := connect(t, h, "same", "")
	connect(t, h, "same", "")
	select {
	case err := <-a1.errc:
		t.Fatalf("first connection closed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	a1.alive()
}

func TestRemoteHeadsForSubscribers(t *testing.T) {
	h := newHub(t, memstore.New())
	a := connect(t, h, "a", "")
	doc := automerge.New()
	edit(t, doc, "k", "v")
	id := protocol.NewDocumentID()
	ss := automerge.NewSyncState(doc)
	a.syncUntilQuiet(id, ss)
	a.send(&protocol.Message{Type: protocol.TypeRemoteSubscriptionChange, SenderID: "a", TargetID: a.hub, Add: []string{h.StorageID()}})
	want := []string{protocol.EncodeHead(doc.Heads()[0])}
	check := func(stage string) {
		t.Helper()
		for m := a.recv(time.Second); m != nil; m = a.recv(time.Second) {
			if m.Type == protocol.TypeRemoteHeadsChanged {
				if got := m.NewHeads[h.StorageID()].Heads; !slices.Equal(got, want) {
					t.Fatalf("%s: remote heads %v, want %v", stage, got, want)
				}
				return
			}
		}
		t.Fatalf("%s: no remote-heads-changed", stage)
	}
	check("on subscribe")
	edit(t, doc, "k", "w")
	want = []string{protocol.EncodeHead(doc.Heads()[0])}
	a.sync(id, ss, protocol.TypeSync)
	check("after an edit")
}

// TestEarlyChangeIsHeldAndItsDependencyNeeded: a peer sends a change before
// its dependency (what a Bloom filter false positive makes an honest peer
// do). The hub must hold it, ask for the dependency in need, and apply
// both once the dependency arrives.
func TestEarlyChangeIsHeldAndItsDependencyNeeded(t *testing.T) {
	h := newHub(t, memstore.New())
	a := connect(t, h, "a", "")
	doc := automerge.New()
	edit(t, doc, "k", "0")
	id := protocol.NewDocumentID()
	a.syncUntilQuiet(id, automerge.NewSyncState(doc))
	edit(t, doc, "k", "1")
	c1 := doc.Heads()[0]
	edit(t, doc, "k", "2")
	c2 := doc.Heads()[0]
	raw := func(hash automerge.ChangeHash) []byte {
		c, err := doc.Change(hash)
		if err != nil {
			t.Fatal(err)
		}
		return c.Save()
	}
	early := (&amsync.Message{Type: amsync.MessageTypeSync, Heads: []amsync.Hash{amsync.Hash(c2)}, Have: []amsync.Have{{}}, Changes: [][]byte{raw(c2)}}).Encode()
	a.send(&protocol.Message{Type: protocol.TypeSync, SenderID: "a", TargetID: a.hub, DocumentID: id, Data: early})
	var asked bool
	for m := a.recv(time.Second); m != nil && !asked; m = a.recv(time.Second) {
		if m.Type != protocol.TypeSync {
			continue
		}
		sm, err := amsync.ParseMessage(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(sm.Heads, amsync.Hash(c2)) {
			t.Fatal("hub advertised the held change before its dependency arrived")
		}
		asked = slices.Contains(sm.Need, amsync.Hash(c1))
	}
	if !asked {
		t.Fatal("hub did not ask for the missing dependency")
	}
	dep := (&amsync.Message{Type: amsync.MessageTypeSync, Heads: []amsync.Hash{amsync.Hash(c2)}, Have: []amsync.Have{{}}, Changes: [][]byte{raw(c1)}}).Encode()
	a.send(&protocol.Message{Type: protocol.TypeSync, SenderID: "a", TargetID: a.hub, DocumentID: id, Data: dep})
	// The hub acknowledges both changes once it has stored them.
	eventually(t, "the hub's acknowledgement of both changes", func() bool {
		m := a.recv(100 * time.Millisecond)
		if m == nil || m.Type != protocol.TypeSync {
			return false
		}
		sm, err := amsync.ParseMessage(m.Data)
		return err == nil && slices.Contains(sm.Heads, amsync.Hash(c2))
	})
	b := connect(t, h, "b", "")
	docB := automerge.New()
	ssB := automerge.NewSyncState(docB)
	b.sync(id, ssB, protocol.TypeRequest)
	b.syncUntilQuiet(id, ssB)
	if !slices.Equal(docB.Heads(), []automerge.ChangeHash{c2}) {
		t.Fatalf("fresh peer got heads %v, want [%s]", docB.Heads(), c2)
	}
}

func TestCompactionReplacesBatchesBySnapshot(t *testing.T) {
	store := memstore.New()
	h := newHub(t, store, func(o *hub.Options) { o.MinCompactBytes = 2048 })
	a := connect(t, h, "a", "")
	doc := automerge.New()
	id := protocol.NewDocumentID()
	ss := automerge.NewSyncState(doc)
	for i := 0; i < 16; i++ {
		edit(t, doc, fmt.Sprintf("key-%d", i), strings.Repeat("x", 300))
		a.syncUntilQuiet(id, ss)
	}
	sd, err := store.LoadDoc(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(sd.Snapshot) == 0 || len(sd.Batches) >= 16 {
		t.Fatalf("not compacted: snapshot %d bytes, %d batches", len(sd.Snapshot), len(sd.Batches))
	}
	checkLoads(t, sd, doc)
}

// TestHostileChangeClosesOnlyItsSender: a checksum-valid change that would
// crash the Automerge core (a seq gap: the core panics on its next sync)
// is refused with 4422, and the document keeps syncing for others.
func TestHostileChangeClosesOnlyItsSender(t *testing.T) {
	h := newHub(t, memstore.New())
	good := connect(t, h, "good", "")
	doc := automerge.New()
	edit(t, doc, "k", "v")
	id := protocol.NewDocumentID()
	ss := automerge.NewSyncState(doc)
	good.syncUntilQuiet(id, ss)

	other := automerge.New()
	edit(t, other, "x", "1")
	chs, _ := other.Changes()
	c, err := amsync.ParseChange(chs[0].Save())
	if err != nil {
		t.Fatal(err)
	}
	c.Seq = 3 // actor's seqs 1 and 2 never existed
	bad := connect(t, h, "bad", "")
	msg := (&amsync.Message{Type: amsync.MessageTypeSync, Have: []amsync.Have{{}}, Changes: [][]byte{c.Encode()}}).Encode()
	bad.send(&protocol.Message{Type: protocol.TypeSync, SenderID: "bad", TargetID: bad.hub, DocumentID: id, Data: msg})
	select {
	case <-bad.errc:
	case <-time.After(2 * time.Second):
		t.Fatal("hostile sender not disconnected")
	}
	if code, _ := bad.c.closeCode(); code != protocol.CloseInvalidSyncData {
		t.Fatalf("closed with %v, want %v", code, protocol.CloseInvalidSyncData)
	}
	edit(t, doc, "k", "w")
	good.syncUntilQuiet(id, ss)
	fresh := connect(t, h, "fresh", "")
	docF := automerge.New()
	ssF := automerge.NewSyncState(docF)
	fresh.sync(id, ssF, protocol.TypeRequest)
	fresh.syncUntilQuiet(id, ssF)
	if !slices.Equal(docF.Heads(), doc.Heads()) {
		t.Fatalf("document did not keep syncing: %v vs %v", docF.Heads(), doc.Heads())
	}
}
