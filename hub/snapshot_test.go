package hub

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/syncengine"
)

// historyChunks returns n changes of an automerge-go document (with
// concurrent branches from two actors merged now and then), in dependency
// order, as uncompressed chunks.
func historyChunks(t testing.TB, n int) [][]byte {
	t.Helper()
	a, b := automerge.New(), automerge.New()
	for i := range n {
		d := a
		if i%3 == 2 {
			d = b
		}
		if err := d.RootMap().Set(fmt.Sprint("k", i%50), fmt.Sprintf("value %d", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Commit("edit"); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			if _, err := a.Merge(b); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Merge(a); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, _ = a.Merge(b)
	order := syncengine.New(syncengine.Options{})
	chs, err := a.Changes()
	if err != nil {
		t.Fatal(err)
	}
	var raws [][]byte
	for _, c := range chs {
		raws = append(raws, c.Save())
	}
	if _, err := order.AddChanges(nil, raws...); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	order.All(func(raw []byte) bool { out = append(out, raw); return true })
	return out
}

// TestSnapshotRoundTrip: a snapshot reads back as the very chunks it was
// written from, and is much smaller than they are.
func TestSnapshotRoundTrip(t *testing.T) {
	chunks := historyChunks(t, 2000)
	snap, err := encodeSnapshot(slices.Values(chunks))
	if err != nil {
		t.Fatal(err)
	}
	back, err := snapshotChanges(snap)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(chunks) {
		t.Fatalf("%d changes back, want %d", len(back), len(chunks))
	}
	for i := range chunks {
		if !bytes.Equal(back[i], chunks[i]) {
			t.Fatalf("change %d reads back as other bytes", i)
		}
	}
	raw := len(slices.Concat(chunks...))
	t.Logf("%d changes: %d bytes of chunks, snapshot %d bytes", len(chunks), raw, len(snap))
	if len(snap) > raw/4 {
		t.Fatalf("snapshot of %d bytes for %d bytes of changes", len(snap), raw)
	}
	// Empty.
	if snap, err := encodeSnapshot(slices.Values([][]byte(nil))); err != nil {
		t.Fatal(err)
	} else if back, err := snapshotChanges(snap); err != nil || len(back) != 0 {
		t.Fatalf("empty: %d, %v", len(back), err)
	}
}

// TestSnapshotRefusesWhatItCannotWrite: a change before its dependency,
// or a compressed chunk, cannot be written.
func TestSnapshotRefusesWhatItCannotWrite(t *testing.T) {
	chunks := historyChunks(t, 20)
	if _, err := encodeSnapshot(slices.Values([][]byte{chunks[1], chunks[0]})); err == nil {
		t.Fatal("a change before its dependency was written")
	}
	bad := slices.Clone(chunks[0])
	bad[8] = 2
	if _, err := encodeSnapshot(slices.Values([][]byte{bad})); err == nil {
		t.Fatal("a compressed chunk was written")
	}
}

// FuzzSnapshotChanges: a snapshot's reader never panics, and whatever it
// accepts writes back to the same snapshot contents.
func FuzzSnapshotChanges(f *testing.F) {
	chunks := historyChunks(f, 30)
	snap, err := encodeSnapshot(slices.Values(chunks))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snap)
	f.Add([]byte(snapshotMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !bytes.HasPrefix(b, []byte(snapshotMagic)) {
			return // the other format is automerge-go's (fuzzed through the hub's sync data)
		}
		back, err := snapshotChanges(b)
		if err != nil {
			return
		}
		again, err := encodeSnapshot(slices.Values(back))
		if err != nil {
			return // e.g. dependencies that do not parse as hashes of earlier changes
		}
		if _, err := snapshotChanges(again); err != nil {
			t.Fatalf("a snapshot written from what a snapshot read does not read: %v", err)
		}
	})
}
