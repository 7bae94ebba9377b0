package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/plaithub/plait/pkg/client"
)

// runReconnect: -clients clients, each creating -docs documents that the
// next client also opens; then -storms times every client is dropped at
// once (and each document's creator edits it while down). Measures the
// time until each client is connected again and until it is in sync on
// all its documents, per client and per storm.
func runReconnect(args []string) error {
	r := newRun("reconnect", "")
	r.expectDisconnects = true
	n := r.fs.Int("clients", 100, "clients")
	docs := r.fs.Int("docs", 3, "documents each client creates (each shared with the next client)")
	storms := r.fs.Int("storms", 3, "times every client is dropped at once")
	pause := r.fs.Duration("pause", time.Second, "wait after each storm")
	return r.exec(args, func(ctx context.Context) error {
		if *n < 2 || *docs < 1 || *storms < 1 {
			return errors.New("need at least 2 clients, 1 doc and 1 storm")
		}
		r.size(*n, *n**docs)
		cs := r.dialAll(ctx, *n, func(i int) string { return fmt.Sprintf("reconnect-%d", i) })
		r.setPhase("sharing")
		groups := make([]*docGroup, *n**docs)
		r.each(ctx, len(groups), func(k int) {
			i := k / *docs
			if cs[i] == nil {
				return
			}
			g, err := share(ctx, []*client.Client{cs[i], cs[(i+1)%*n]}, nil, "")
			if err != nil {
				r.fail(err.Error())
			}
			r.watchGroup(g)
			groups[k] = g
		})
		groups = slices.DeleteFunc(groups, func(g *docGroup) bool { return g == nil || len(g.hs) == 0 })
		// What each client must be in sync on, and the creators' editors.
		handles := map[*client.Client][]*client.Handle{}
		var editors []*editor
		for _, g := range groups {
			for j, h := range g.hs {
				handles[g.clients[j]] = append(handles[g.clients[j]], h)
			}
			editors = append(editors, &editor{h: g.hs[0], peer: g.peers[0]})
		}
		live := slices.DeleteFunc(slices.Clone(cs), func(c *client.Client) bool { return c == nil })
		r.beginPhase("storms")
		var reconnect, resync durations
		var stormMs []float64
		for s := 1; s <= *storms && ctx.Err() == nil; s++ {
			r.setPhase(fmt.Sprintf("storm %d/%d", s, *storms))
			before := make([]int64, len(live))
			t0 := time.Now()
			for i, c := range live {
				before[i] = c.Stats().Connects
				c.Disconnect()
			}
			for _, e := range editors {
				if err := e.edit(); err != nil {
					r.fail("edit: " + err.Error())
				} else {
					r.edits.Add(1)
				}
			}
			var wg sync.WaitGroup
			for i, c := range live {
				wg.Go(func() {
					if err := waitFor(ctx, r.settleFor, func() bool { return c.Stats().Connects > before[i] }); err != nil {
						r.fail("storm: not reconnected within -settle")
						return
					}
					reconnect.add(time.Since(t0))
					inSync := func() bool {
						for _, h := range handles[c] {
							if !h.InSync() {
								return false
							}
						}
						return true
					}
					if err := waitFor(ctx, r.settleFor, inSync); err != nil {
						r.fail("storm: not re-synced within -settle")
						return
					}
					resync.add(time.Since(t0))
				})
			}
			wg.Wait()
			stormMs = append(stormMs, roundMs(time.Since(t0)))
			r.pollStats()
			sleep(ctx, *pause)
		}
		r.endPhase()
		r.converge(ctx, groups)
		r.extraSet("stormMs", stormMs)
		r.extraSet("reconnectMs", reconnect.summary())
		r.extraSet("resyncMs", resync.summary())
		return nil
	})
}
