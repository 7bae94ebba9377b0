package hub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
)

// holdStore holds AppendChanges while held is set.
type holdStore struct {
	*memstore.Store
	mu      sync.Mutex
	gate    chan struct{} // nil: not held
	appends int
}

func (s *holdStore) hold() {
	s.mu.Lock()
	s.gate = make(chan struct{})
	s.mu.Unlock()
}

func (s *holdStore) release() {
	s.mu.Lock()
	close(s.gate)
	s.gate = nil
	s.mu.Unlock()
}

func (s *holdStore) AppendChanges(ctx context.Context, id protocol.DocumentID, b []byte) (uint64, error) {
	s.mu.Lock()
	gate := s.gate
	s.appends++
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return s.Store.AppendChanges(ctx, id, b)
}

// syncedPair is two clients of one document, both synced: a created it
// with one change (k = v), b joined it empty.
type syncedPair struct {
	id         protocol.DocumentID
	a, b       *client
	docA, docB *automerge.Doc
	ssA, ssB   *automerge.SyncState
}

func newSyncedPair(t *testing.T, h *hub.Hub) *syncedPair {
	t.Helper()
	p := &syncedPair{id: protocol.NewDocumentID(), a: connect(t, h, "a", ""), b: connect(t, h, "b", "")}
	p.docA = automerge.New()
	edit(t, p.docA, "k", "v")
	p.ssA = automerge.NewSyncState(p.docA)
	p.a.syncUntilQuiet(p.id, p.ssA)
	p.docB = automerge.New()
	p.ssB = automerge.NewSyncState(p.docB)
	p.b.syncUntilQuiet(p.id, p.ssB)
	return p
}

// storedHeads returns the heads of the document's batches in store.
func storedHeads(t *testing.T, store hub.Store, id protocol.DocumentID) []automerge.ChangeHash {
	t.Helper()
	sd, err := store.LoadDoc(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	stored := automerge.New()
	for _, batch := range sd.Batches {
		if err := stored.LoadIncremental(batch.Data); err != nil {
			t.Fatal(err)
		}
	}
	return stored.Heads()
}

// TestOwnerWorksWhileStoreWrites: while a document's store write runs, its
// owner goes on (it relays, and applies the next changes), but no peer
// hears of a change before the write holding it is confirmed, and the
// changes reach the store in order.
func TestOwnerWorksWhileStoreWrites(t *testing.T) {
	store := &holdStore{Store: memstore.New()}
	p := newSyncedPair(t, newHub(t, store))
	id, a, b, docA, docB, ssA, ssB := p.id, p.a, p.b, p.docA, p.docB, p.ssA, p.ssB

	store.mu.Lock()
	before := store.appends
	store.mu.Unlock()
	store.hold()
	edit(t, docA, "k", "held 1")
	a.sync(id, ssA, protocol.TypeSync)
	held := docA.Heads()
	eventually(t, "the write of a's change to begin", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.appends > before
	})
	// The owner is not blocked behind the write: an ephemeral message of
	// a reaches b while it runs.
	a.send(&protocol.Message{Type: protocol.TypeEphemeral, SenderID: "a", TargetID: a.hub, DocumentID: id, SessionID: "s", Count: 1, Data: []byte{0xa0}})
	deadline := time.Now().Add(5 * time.Second)
	for relayed := false; !relayed; {
		if time.Now().After(deadline) {
			t.Fatal("no ephemeral relay while the store write runs: the owner waits for it")
		}
		m := b.recv(100 * time.Millisecond)
		if m == nil {
			continue
		}
		switch m.Type {
		case protocol.TypeEphemeral:
			relayed = true
		case protocol.TypeSync:
			t.Fatalf("b got a sync message while a's change is being written")
		}
	}
	// A second change of a is applied meanwhile (it waits behind the
	// write): still nothing reaches b, and a is not acknowledged.
	edit(t, docA, "k", "held 2")
	a.sync(id, ssA, protocol.TypeSync)
	for m := b.recv(300 * time.Millisecond); m != nil; m = b.recv(100 * time.Millisecond) {
		if m.Type == protocol.TypeSync {
			t.Fatal("b got a sync message while a's changes are being written")
		}
	}
	for m := a.recv(100 * time.Millisecond); m != nil; m = a.recv(100 * time.Millisecond) {
		if m.Type == protocol.TypeSync {
			sm, err := ssA.ReceiveMessage(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Equal(sm.Heads(), docA.Heads()) || slices.Equal(sm.Heads(), held) {
				t.Fatal("a was acknowledged heads that are not stored yet")
			}
		}
	}
	store.release()
	b.syncUntilQuiet(id, ssB)
	if !slices.Equal(docB.Heads(), docA.Heads()) {
		t.Fatalf("b has heads %v after the writes, want %v", docB.Heads(), docA.Heads())
	}
	if got := storedHeads(t, store, id); !slices.Equal(got, docA.Heads()) {
		t.Fatalf("store holds heads %v, want %v", got, docA.Heads())
	}
}

// ledgerStore is a store that takes a while to write, and records which
// changes (by hash) it has confirmed, so that a test can check every
// message the hub sends against what was stored when it was sent.
type ledgerStore struct {
	*memstore.Store
	delay  time.Duration
	mu     sync.Mutex
	stored map[string]bool // change hashes and bs58check heads confirmed
}

func (s *ledgerStore) AppendChanges(ctx context.Context, id protocol.DocumentID, b []byte) (uint64, error) {
	time.Sleep(s.delay)
	seq, err := s.Store.AppendChanges(ctx, id, b)
	if err != nil {
		return seq, err
	}
	chunks, err := amsync.SplitChunks(b)
	if err != nil {
		return seq, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, raw := range chunks {
		c, err := amsync.ParseChange(raw)
		if err != nil {
			return seq, err
		}
		s.stored[string(c.Hash[:])] = true
		s.stored[protocol.EncodeHead(c.Hash)] = true
	}
	return seq, nil
}

// check reports the first change or head of m that the store has not
// confirmed ("" if none).
func (s *ledgerStore) check(m *protocol.Message) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m.Type {
	case protocol.TypeSync:
		sm, err := amsync.ParseMessage(m.Data)
		if err != nil {
			return "unparsable sync message: " + err.Error()
		}
		for _, h := range sm.Heads {
			if !s.stored[string(h[:])] {
				return fmt.Sprintf("head %v", h)
			}
		}
		for _, entry := range sm.Changes {
			chunks, _ := amsync.SplitChunks(entry)
			for _, raw := range chunks {
				c, err := amsync.ParseChange(raw)
				if err != nil || !s.stored[string(c.Hash[:])] {
					return fmt.Sprintf("change %v", c.Hash)
				}
			}
		}
	case protocol.TypeRemoteHeadsChanged:
		for _, ha := range m.NewHeads {
			for _, h := range ha.Heads {
				if !s.stored[h] {
					return "remote head " + h
				}
			}
		}
	}
	return ""
}

// TestConcurrentEditsConvergeWhileStoreWrites: peers that edit one
// document at once, through a hub whose store takes a while to write
// (so that batches pile up behind the write in flight), converge; and
// every sync message and remote-heads-changed they get names only changes
// the store had confirmed when it arrived.
func TestConcurrentEditsConvergeWhileStoreWrites(t *testing.T) {
	store := &ledgerStore{Store: memstore.New(), delay: 3 * time.Millisecond, stored: make(map[string]bool)}
	h := newHub(t, store)
	id := protocol.NewDocumentID()
	const peers, edits = 3, 30
	type peer struct {
		cl  *client
		doc *automerge.Doc
		ss  *automerge.SyncState
	}
	ps := make([]*peer, peers)
	first := automerge.New()
	edit(t, first, "created", true)
	for i := range ps {
		name := fmt.Sprint("p", i)
		p := &peer{cl: connect(t, h, name, "storage-"+name)}
		if i == 0 {
			p.doc = first
		} else {
			var err error
			if p.doc, err = first.Fork(); err != nil {
				t.Fatal(err)
			}
		}
		p.ss = automerge.NewSyncState(p.doc)
		p.cl.send(&protocol.Message{Type: protocol.TypeRemoteSubscriptionChange, SenderID: name, TargetID: p.cl.hub, Add: []string{h.StorageID()}})
		ps[i] = p
	}
	// take handles one message from the hub; it reports false on a
	// durability violation (reported).
	take := func(p *peer, m *protocol.Message) bool {
		if what := store.check(m); what != "" {
			t.Errorf("%s got a %s naming %s before the store confirmed it", p.cl.id, m.Type, what)
			return false
		}
		if m.Type == protocol.TypeSync {
			if _, err := p.ss.ReceiveMessage(m.Data); err != nil {
				t.Error(err)
				return false
			}
			p.cl.sync(id, p.ss, protocol.TypeSync)
		}
		return true
	}
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range edits {
				if err := p.doc.RootMap().Set(fmt.Sprintf("p%d-%d", i, j), int64(j)); err != nil {
					t.Error(err)
					return
				}
				if _, err := p.doc.Commit("edit"); err != nil {
					t.Error(err)
					return
				}
				p.cl.sync(id, p.ss, protocol.TypeSync)
				// Answer what has arrived, without waiting for more.
				for m := p.cl.recv(time.Millisecond); m != nil; m = p.cl.recv(time.Millisecond) {
					if !take(p, m) {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Now every peer answers until nobody hears anything more.
	for quiet := false; !quiet; {
		quiet = true
		for _, p := range ps {
			p.cl.sync(id, p.ss, protocol.TypeSync)
			for m := p.cl.recv(200 * time.Millisecond); m != nil; m = p.cl.recv(200 * time.Millisecond) {
				quiet = false
				if !take(p, m) {
					return
				}
			}
		}
	}
	want := ps[0].doc.Heads()
	for _, p := range ps {
		if got := p.doc.Heads(); !slices.Equal(got, want) {
			t.Fatalf("%s has heads %v, %s has %v: not converged", p.cl.id, got, ps[0].cl.id, want)
		}
		keys, err := p.doc.RootMap().Keys()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != peers*edits+1 {
			t.Fatalf("%s has %d keys, want %d", p.cl.id, len(keys), peers*edits+1)
		}
	}
}

// TestSubmitWaitsForTheWriteInFlight: SubmitChanges while a peer's write
// is held in the store returns only once both are stored, and the peer
// hears of neither change before that.
func TestSubmitWaitsForTheWriteInFlight(t *testing.T) {
	store := &holdStore{Store: memstore.New()}
	h := newHub(t, store)
	a := connect(t, h, "a", "")
	docA := automerge.New()
	edit(t, docA, "k", "v")
	ssA := automerge.NewSyncState(docA)
	id := protocol.NewDocumentID()
	a.syncUntilQuiet(id, ssA)
	server, err := docA.Fork()
	if err != nil {
		t.Fatal(err)
	}
	before := server.Heads()

	store.mu.Lock()
	appends := store.appends
	store.mu.Unlock()
	store.hold()
	edit(t, docA, "k", "held")
	a.sync(id, ssA, protocol.TypeSync)
	eventually(t, "the write of a's change to begin", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.appends > appends
	})
	edit(t, server, "api", "submitted")
	chunks := changeChunks(t, server, before...)
	type result struct {
		heads int
		err   error
	}
	done := make(chan result, 1)
	go func() {
		heads, err := h.SubmitChanges(context.Background(), id, "alice", chunks)
		done <- result{len(heads), err}
	}()
	select {
	case r := <-done:
		t.Fatalf("SubmitChanges returned (%+v) while the write before it is held", r)
	case <-time.After(300 * time.Millisecond):
	}
	for m := a.recv(100 * time.Millisecond); m != nil; m = a.recv(100 * time.Millisecond) {
		if m.Type == protocol.TypeSync {
			t.Fatal("a got a sync message while the writes are held")
		}
	}
	store.release()
	if r := <-done; r.err != nil || r.heads != 2 {
		t.Fatalf("SubmitChanges: %d heads, %v; want 2 heads (a's change and the submitted one)", r.heads, r.err)
	}
	a.syncUntilQuiet(id, ssA)
	keys, err := docA.RootMap().Keys()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(keys, "api") {
		t.Fatalf("a has keys %v after the writes, want the submitted change too", keys)
	}
	if got := storedHeads(t, store, id); !slices.Equal(got, docA.Heads()) {
		t.Fatalf("store holds heads %v, want %v", got, docA.Heads())
	}
}
