package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/automerge/automerge-go"
)

// runFanout: -docs documents with -clients clients each, every client
// editing at -rate for -duration.
func runFanout(args []string) error {
	r := newRun("fanout", "")
	docs := r.fs.Int("docs", 10, "documents")
	per := r.fs.Int("clients", 5, "clients per document")
	rate := r.fs.Float64("rate", 1, "edits per second per client")
	dur := r.fs.Duration("duration", 10*time.Second, "editing time")
	r.historyFlag()
	return r.exec(args, func(ctx context.Context) error {
		return r.editing(ctx, *docs, *per, *rate, *dur, nil, nil)
	})
}

// editing uploads the documents' -history (if any), connects docs*per
// clients, shares each document among per of them, has every client edit at rate for dur, and checks convergence.
// init and extra (may be nil) shape the documents and each edit.
func (r *run) editing(ctx context.Context, docs, per int, rate float64, dur time.Duration, init, extra func(d *automerge.Doc) error) error {
	if docs < 1 || per < 1 || rate <= 0 || dur <= 0 {
		return errors.New("docs, clients, rate and duration must be positive")
	}
	if r.history < 0 {
		return errors.New("-history must not be negative")
	}
	r.size(docs*per, docs)
	urls := make([]string, docs) // "": share creates the document
	if r.history > 0 {
		var err error
		if urls, err = r.uploadHistory(ctx, docs, init); err != nil {
			return err
		}
	}
	cs := r.dialAll(ctx, docs*per, func(i int) string { return fmt.Sprintf("%s-d%d-c%d", r.name, i/per, i%per) })
	r.setPhase("sharing")
	groups := make([]*docGroup, docs)
	r.each(ctx, docs, func(d int) {
		g, err := share(ctx, cs[d*per:(d+1)*per], init, urls[d])
		if err != nil {
			r.fail(err.Error())
		}
		r.watchGroup(g)
		groups[d] = g
	})
	groups = slices.DeleteFunc(groups, func(g *docGroup) bool { return g == nil })
	r.beginPhase("editing")
	until := time.Now().Add(dur)
	var wg sync.WaitGroup
	for _, g := range groups {
		for i, h := range g.hs {
			e := &editor{h: h, peer: g.peers[i], extra: extra}
			wg.Go(func() { r.editLoop(ctx, e, rate, until) })
		}
	}
	wg.Wait()
	r.endPhase()
	r.converge(ctx, groups)
	return nil
}
