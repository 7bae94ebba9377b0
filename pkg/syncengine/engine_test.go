package syncengine

import (
	"fmt"
	"slices"
	"testing"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

// amPeer is an automerge-go document syncing with a Doc through states.
type amPeer struct {
	doc *automerge.Doc
	ss  *automerge.SyncState // the peer's state for the engine
	es  *State               // the engine's state for the peer
}

func newAMPeer(t testing.TB) *amPeer {
	doc := automerge.New()
	return &amPeer{doc: doc, ss: automerge.NewSyncState(doc), es: NewState()}
}

func (p *amPeer) edit(t testing.TB, key string, v any) {
	t.Helper()
	if err := p.doc.RootMap().Set(key, v); err != nil {
		t.Fatal(err)
	}
	if _, err := p.doc.Commit("edit"); err != nil {
		t.Fatal(err)
	}
}

// syncPair exchanges messages until both sides are quiet; it returns the
// number of messages.
func syncPair(t testing.TB, d *Doc, p *amPeer) int {
	t.Helper()
	n := 0
	for round := 0; round < 100; round++ {
		quiet := true
		if sm, ok := p.ss.GenerateMessage(); ok {
			quiet = false
			n++
			if _, err := d.ReceiveMessage(p.es, sm.Bytes(), p); err != nil {
				t.Fatalf("engine refused a message: %v", err)
			}
		}
		if msg := d.GenerateMessage(p.es); msg != nil {
			quiet = false
			n++
			if _, err := p.ss.ReceiveMessage(msg); err != nil {
				t.Fatalf("automerge-go refused an engine message: %v", err)
			}
		}
		if quiet {
			return n
		}
	}
	t.Fatal("sync did not settle in 100 rounds")
	return n
}

func hashes(hs []automerge.ChangeHash) []Hash {
	out := make([]Hash, len(hs))
	for i, h := range hs {
		out[i] = Hash(h)
	}
	slices.SortFunc(out, cmpHash)
	return out
}

func TestTwoPeersConverge(t *testing.T) {
	d := New(Options{})
	a, b := newAMPeer(t), newAMPeer(t)
	for i := 0; i < 10; i++ {
		a.edit(t, fmt.Sprintf("a%d", i), int64(i))
		b.edit(t, fmt.Sprintf("b%d", i), int64(i))
		syncPair(t, d, a)
		syncPair(t, d, b)
	}
	syncPair(t, d, a)
	syncPair(t, d, b)
	syncPair(t, d, a)
	if !slices.Equal(hashes(a.doc.Heads()), d.Heads()) || !slices.Equal(hashes(b.doc.Heads()), d.Heads()) {
		t.Fatalf("heads differ: a %v b %v engine %v", a.doc.Heads(), b.doc.Heads(), d.Heads())
	}
	if d.Len() != 20 {
		t.Fatalf("engine has %d changes, want 20", d.Len())
	}
	// The engine's changes load into automerge-go with the same heads.
	var all []byte
	d.All(func(raw []byte) bool { all = append(all, raw...); return true })
	doc, err := automerge.Load(all)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(hashes(doc.Heads()), d.Heads()) {
		t.Fatal("loaded heads differ")
	}
}

func TestBloomMatchesCore(t *testing.T) {
	// A peer's first message has the Bloom filter of all its changes: ours
	// over the same hashes must be the same bytes.
	p := newAMPeer(t)
	for i := 0; i < 37; i++ {
		p.edit(t, fmt.Sprintf("k%d", i), int64(i))
	}
	sm, _ := p.ss.GenerateMessage()
	m, err := amsync.ParseMessage(sm.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Have) != 1 {
		t.Fatalf("have %d entries, want 1", len(m.Have))
	}
	chs, err := p.doc.Changes()
	if err != nil {
		t.Fatal(err)
	}
	var hs []Hash
	for _, c := range chs {
		hs = append(hs, Hash(c.Hash()))
	}
	f := amsync.NewBloom(hs)
	if got, want := f.Encode(), m.Have[0].Bloom; !slices.Equal(got, want) {
		t.Fatalf("bloom differs:\n got %x\nwant %x", got, want)
	}
	for i := range hs {
		if !f.Contains(&hs[i]) {
			t.Fatalf("filter misses hash %d", i)
		}
	}
}
