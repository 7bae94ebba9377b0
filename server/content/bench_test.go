package content

import (
	"fmt"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/jsonpatch"
)

// history returns the changes of a document edited n times: a text typed
// into a character at a time, a list and a counter, as an editor's
// document grows.
func history(b *testing.B, n int) [][]byte {
	b.Helper()
	doc := automerge.New()
	root := doc.RootMap()
	if err := root.Set("text", automerge.NewText("")); err != nil {
		b.Fatal(err)
	}
	if err := root.Set("items", automerge.NewList()); err != nil {
		b.Fatal(err)
	}
	if err := root.Set("count", automerge.NewCounter(0)); err != nil {
		b.Fatal(err)
	}
	if _, err := doc.Commit("init"); err != nil {
		b.Fatal(err)
	}
	tv, _ := root.Get("text")
	lv, _ := root.Get("items")
	cv, _ := root.Get("count")
	for i := 1; i < n; i++ {
		switch i % 3 {
		case 0:
			_ = tv.Text().Append("x")
		case 1:
			_ = lv.List().Append(fmt.Sprint("item ", i))
		case 2:
			_ = cv.Counter().Inc(1)
		}
		if _, err := doc.Commit(""); err != nil {
			b.Fatal(err)
		}
	}
	chs, err := doc.Changes()
	if err != nil {
		b.Fatal(err)
	}
	out := make([][]byte, len(chs))
	for i, c := range chs {
		out[i] = c.Save()
	}
	return out
}

// BenchmarkContent: what GET content costs the node: building the
// document from its changes and writing its JSON.
func BenchmarkContent(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		chs := history(b, n)
		b.Run(fmt.Sprintf("changes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				doc, err := Load(chs)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ToJSON(doc, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEdit: what POST changes costs the node before the hub: building
// the document, applying a three-operation patch, committing it.
func BenchmarkEdit(b *testing.B) {
	ops, err := jsonpatch.Parse([]byte(`[{"op":"splice","path":"/text","pos":0,"value":"ab"},{"op":"add","path":"/items/-","value":"new"},{"op":"increment","path":"/count","value":1}]`), jsonpatch.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{100, 1000, 10000} {
		chs := history(b, n)
		b.Run(fmt.Sprintf("changes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				chunk, _, err := Edit(chs, ops, "", time.UnixMilli(1))
				if err != nil || chunk == nil {
					b.Fatal(err)
				}
			}
		})
	}
}
