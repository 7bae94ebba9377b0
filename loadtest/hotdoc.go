package main

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/automerge/automerge-go"
)

// runHotdoc: -typists clients on one document, each typing a character
// into its text (and stamping the edit) at -rate for -duration.
func runHotdoc(args []string) error {
	r := newRun("hotdoc", "")
	typists := r.fs.Int("typists", 10, "clients on the document")
	rate := r.fs.Float64("rate", 5, "edits per second per typist")
	dur := r.fs.Duration("duration", 10*time.Second, "editing time")
	r.historyFlag()
	return r.exec(args, func(ctx context.Context) error {
		return r.editing(ctx, 1, *typists, *rate, *dur, newText, typeChar)
	})
}

func newText(d *automerge.Doc) error { return d.RootMap().Set("text", automerge.NewText("")) }

// typeChar inserts a letter at a random place of the text.
func typeChar(d *automerge.Doc) error {
	v, err := d.RootMap().Get("text")
	if err != nil {
		return err
	}
	t := v.Text()
	return t.Insert(rand.IntN(t.Len()+1), string(rune('a'+rand.IntN(26))))
}
