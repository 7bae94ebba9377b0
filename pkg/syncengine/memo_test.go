package syncengine

import (
	"slices"
	"testing"

	"github.com/plaithub/plait/pkg/amsync"
)

// Peers at the same shared heads share one walk and one Bloom filter; a
// change added after them makes both be built again, with the change in.
func TestMemoSharedUntilAChangeIsAdded(t *testing.T) {
	d := New(Options{})
	a, b := newAMPeer(t), newAMPeer(t)
	for i := range 20 {
		a.edit(t, "k", i)
	}
	syncPair(t, d, a)
	syncPair(t, d, b) // b gets everything; both states share the heads

	base := d.Heads()
	since1 := d.changesSinceShared(nil)
	since2 := d.changesSinceShared(nil)
	if len(since1) != 20 || &since1[0] != &since2[0] {
		t.Fatalf("the second walk to the same heads was not shared (%d changes)", len(since1))
	}
	bloom1 := d.bloomSince(nil)
	if bloom2 := d.bloomSince(nil); len(bloom1) == 0 || &bloom1[0] != &bloom2[0] {
		t.Fatal("the second Bloom filter of the same heads was not shared")
	}

	a.edit(t, "k", "new")
	syncPair(t, d, a)
	after := d.changesSinceShared(base)
	if len(after) != 1 {
		t.Fatalf("after one more change the walk from the old heads finds %d changes, want 1", len(after))
	}
	newHash := d.nodes[after[0]].hash
	bf, err := amsync.ParseBloom(d.bloomSince(base))
	if err != nil {
		t.Fatal(err)
	}
	if !bf.Contains(&newHash) {
		t.Fatal("the Bloom filter made after a change does not have it: a stale memo entry was used")
	}
	if got := d.changesSinceShared(nil); len(got) != 21 {
		t.Fatalf("the walk from nothing finds %d changes after the new one, want 21", len(got))
	}
	// b is told of the new change like any peer.
	syncPair(t, d, b)
	if !slices.Equal(hashes(b.doc.Heads()), d.Heads()) {
		t.Fatal("b did not get the change")
	}
}

// The memo holds at most memoEntries of each kind, the most recent first.
func TestMemoBounded(t *testing.T) {
	d := New(Options{})
	a := newAMPeer(t)
	for i := range 30 {
		a.edit(t, "k", i)
	}
	syncPair(t, d, a)
	for i := 0; i < 3*memoEntries; i++ {
		d.bloomSince([]Hash{d.nodes[i].hash})
	}
	if len(d.memo.since) != memoEntries || len(d.memo.bloom) != memoEntries {
		t.Fatalf("memo holds %d walks and %d filters, at most %d each", len(d.memo.since), len(d.memo.bloom), memoEntries)
	}
	if last := d.nodes[3*memoEntries-1].hash; !slices.Equal(d.memo.bloom[0].heads, []Hash{last}) {
		t.Fatal("the most recent entry is not first")
	}
}
