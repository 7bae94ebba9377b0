package syncengine

import (
	"fmt"
	"slices"
	"testing"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

// TestAddStored loads a history with AddStored and with AddChanges and
// checks that both engines end with the same changes, heads and objects,
// and that the one AddStored built accepts a new change on an object
// made in the loaded history.
func TestAddStored(t *testing.T) {
	a, b := automerge.New(), automerge.New()
	text := automerge.NewText("")
	if err := a.RootMap().Set("text", text); err != nil {
		t.Fatal(err)
	}
	if err := a.RootMap().Set("list", automerge.NewList()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit("objects"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Merge(a); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		for _, d := range []*automerge.Doc{a, b} {
			if err := d.Path("text").Text().Insert(0, fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
			if err := d.Path("list").List().Append(automerge.NewMap()); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Commit("edit"); err != nil {
				t.Fatal(err)
			}
		}
		if i%10 == 0 {
			if _, err := a.Merge(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	chs, err := a.Changes()
	if err != nil {
		t.Fatal(err)
	}
	var raws [][]byte
	for _, c := range chs {
		raws = append(raws, c.Save())
	}

	checked, stored := New(Options{}), New(Options{})
	if _, err := checked.AddChanges(nil, raws...); err != nil {
		t.Fatal(err)
	}
	got, err := stored.AddStored(nil, slices.Clone(raws)...)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(raws) || stored.Len() != checked.Len() || !slices.Equal(stored.Heads(), checked.Heads()) {
		t.Fatalf("AddStored: %d changes, heads %v; AddChanges: %d, %v", stored.Len(), stored.Heads(), checked.Len(), checked.Heads())
	}
	if !slices.Equal(stored.Heads(), hashes(a.Heads())) {
		t.Fatal("heads differ from automerge-go's")
	}
	made := 0
	for _, raw := range raws {
		c, err := amsync.ParseChange(raw)
		if err != nil {
			t.Fatal(err)
		}
		ops, err := c.Ops()
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			want, ok := op.Action.ObjType()
			if !ok {
				continue
			}
			made++
			if got, ok := stored.objs.Type(op.ID); !ok || got != want {
				t.Fatalf("object %v: %v %v, want %v", op.ID, got, ok, want)
			}
		}
		want, _ := checked.objs.MaxOp(string(c.Actor))
		if got, _ := stored.objs.MaxOp(string(c.Actor)); got != want {
			t.Fatalf("actor %x: max op %d, want %d", c.Actor, got, want)
		}
	}
	if made != 202 || stored.objs.Len() != checked.objs.Len() {
		t.Fatalf("%d objects made, index has %d (checked: %d)", made, stored.objs.Len(), checked.objs.Len())
	}

	// A new change on objects of the loaded history passes the full
	// checks against the index AddStored built.
	if err := a.Path("text").Text().Insert(0, "new"); err != nil {
		t.Fatal(err)
	}
	if err := a.Path("list").List().Append("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit("after"); err != nil {
		t.Fatal(err)
	}
	last, err := a.Changes(hashesAM(stored.Heads())...)
	if err != nil || len(last) != 1 {
		t.Fatalf("%d new changes, %v", len(last), err)
	}
	if _, err := stored.AddChanges(nil, last[0].Save()); err != nil {
		t.Fatalf("a change on loaded objects was refused: %v", err)
	}

	// A stored change whose dependency is missing waits in the queue and
	// is released by the dependency from a peer.
	partial := New(Options{})
	if _, err := partial.AddStored(nil, slices.Clone(raws[1:])...); err != nil {
		t.Fatal(err)
	}
	if partial.Queued() != len(raws)-1 || partial.Len() != 0 {
		t.Fatalf("queued %d, applied %d", partial.Queued(), partial.Len())
	}
	if _, err := partial.AddChanges("peer", raws[0]); err != nil {
		t.Fatal(err)
	}
	if partial.Len() != len(raws) || partial.Queued() != 0 {
		t.Fatalf("after the dependency: applied %d, queued %d", partial.Len(), partial.Queued())
	}
}
