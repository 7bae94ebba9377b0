package main

import (
	"testing"

	"github.com/automerge/automerge-go"
)

// A history made in rounds has exactly N changes, the first one the
// document's title and init.
func TestHistoryChanges(t *testing.T) {
	d := automerge.New()
	if err := historyChanges(d, 0, 7, newText); err != nil {
		t.Fatal(err)
	}
	if err := historyChanges(d, 7, 5, newText); err != nil {
		t.Fatal(err)
	}
	chs, err := d.Changes()
	if err != nil {
		t.Fatal(err)
	}
	if len(chs) != 12 {
		t.Fatalf("%d changes, want 12", len(chs))
	}
	for _, k := range []string{"title", "text", "history"} {
		if v, err := d.RootMap().Get(k); err != nil || v.Kind() == automerge.KindVoid {
			t.Errorf("no %s: %v", k, err)
		}
	}
	if v, _ := d.RootMap().Get("history"); v.Int64() != 12 {
		t.Errorf("history counter %v, want 12", v.Int64())
	}
}
