package main

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/protocol"
)

// historyChunk is how many changes of each document one upload round
// carries: one sync message per document per round, a few hundred KiB,
// well under a server's message limit (Plait's default: 32 MiB).
const historyChunk = 5000

// historyIdle bounds the wait for the server's next message while uploading.
const historyIdle = time.Minute

// historyFlag declares -history on an editing scenario.
func (r *run) historyFlag() {
	r.fs.IntVar(&r.history, "history", 0, "changes each document starts with (a long-lived document), uploaded and stored by the server before the measured phase; 0: fresh documents")
}

// uploadHistory builds n documents of r.history changes each with
// automerge-go (the first change is the one share would make, title and
// init; the others each set a counter), uploads them through one connection
// in rounds of historyChunk changes, waiting until the server has stored
// each round, and returns their URLs. It records the upload in
// scenarioExtra "history".
func (r *run) uploadHistory(ctx context.Context, n int, init func(d *automerge.Doc) error) ([]string, error) {
	r.setPhase("history")
	t0 := time.Now()
	p, err := dialRawPeer(ctx, r.hc, r.tg.urls()[0], fmt.Sprintf("%s-history-%d", r.name, t0.UnixNano()))
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	defer p.close()
	docs := make([]*automerge.Doc, n)
	ids := make([]protocol.DocumentID, n)
	for i := range docs {
		docs[i] = automerge.New()
		ids[i] = p.add(docs[i])
	}
	var build time.Duration
	for made := 0; made < r.history; {
		k := min(historyChunk, r.history-made)
		b0 := time.Now()
		for _, d := range docs {
			if err := historyChanges(d, made, k, init); err != nil {
				return nil, fmt.Errorf("history: %w", err)
			}
		}
		build += time.Since(b0)
		made += k
		if err := p.push(ctx, ids, historyIdle); err != nil {
			return nil, fmt.Errorf("history: after %d of %d changes: %w", made, r.history, err)
		}
	}
	urls := make([]string, n)
	for i, id := range ids {
		urls[i] = id.URL()
	}
	secs := func(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }
	r.extraSet("history", map[string]any{"changes": r.history, "docs": n, "chunk": historyChunk,
		"buildSec": secs(build), "uploadSec": secs(time.Since(t0) - build)})
	return urls, nil
}

// historyChanges commits changes from+1 .. from+k of a history to d, one
// small change each; change 1 is the document's first (title and init).
func historyChanges(d *automerge.Doc, from, k int, init func(d *automerge.Doc) error) error {
	for i := from + 1; i <= from+k; i++ {
		var err error
		if i == 1 {
			err = initDoc(d, init)
		} else {
			err = d.RootMap().Set("history", int64(i))
		}
		if err != nil {
			return err
		}
		if _, err := d.Commit(""); err != nil {
			return fmt.Errorf("failed to commit change %d: %w", i, err)
		}
	}
	return nil
}
