package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
)

// Every edit carries its send time. Editor p's n-th edit sets
//
//	"t/p/n" = its wall clock in UnixNano
//	"n/p"   = n
//
// and each receiving client, in its Subscribe callback, reads the counters
// of the other editors and records the delay of every edit it had not seen
// yet (all clients are in this process: one clock).

// editor makes timed edits on one handle.
type editor struct {
	h    *client.Handle
	peer string
	seq  int64
	// extra, if set, is more work done in the same change (typing).
	extra func(d *automerge.Doc) error
}

func (e *editor) edit() error {
	e.seq++
	return e.h.Change(func(d *automerge.Doc) error {
		m := d.RootMap()
		if err := m.Set(fmt.Sprintf("t/%s/%d", e.peer, e.seq), time.Now().UnixNano()); err != nil {
			return err
		}
		if err := m.Set("n/"+e.peer, e.seq); err != nil {
			return err
		}
		if e.extra != nil {
			return e.extra(d)
		}
		return nil
	})
}

// intAt returns the integer at key, 0 if there is none.
func intAt(m *automerge.Map, key string) int64 {
	v, err := m.Get(key)
	if err != nil || v.Kind() != automerge.KindInt64 {
		return 0
	}
	return v.Int64()
}

// watch records the delay of every edit of peers that reaches h (self's
// handle); it starts from what h has now.
func (r *run) watch(h *client.Handle, self string, peers []string) {
	last := map[string]int64{}
	_ = h.View(func(d *automerge.Doc) error {
		for _, p := range peers {
			last[p] = intAt(d.RootMap(), "n/"+p)
		}
		return nil
	})
	// Callbacks of one client run one at a time on its reader goroutine.
	h.Subscribe(func(client.Event) {
		now := time.Now()
		_ = h.View(func(d *automerge.Doc) error {
			m := d.RootMap()
			for _, p := range peers {
				if p == self {
					continue
				}
				n := intAt(m, "n/"+p)
				for s := last[p] + 1; s <= n; s++ {
					if ts := intAt(m, fmt.Sprintf("t/%s/%d", p, s)); ts > 0 {
						r.lat.add(now, now.Sub(time.Unix(0, ts)))
						r.deliveries.Add(1)
					}
				}
				last[p] = max(last[p], n)
			}
			return nil
		})
	})
}

// watchGroup watches every handle of g.
func (r *run) watchGroup(g *docGroup) {
	for i, h := range g.hs {
		r.watch(h, g.peers[i], g.peers)
	}
}

// editLoop makes e edit rate times a second, from a random point of the
// first interval until until (or ctx is done). An edit that takes longer
// than the interval skips ticks: the achieved rate is in the report.
func (r *run) editLoop(ctx context.Context, e *editor, rate float64, until time.Time) {
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	every := time.Duration(float64(time.Second) / rate)
	sleep(ctx, rand.N(every))
	t := time.NewTicker(every)
	defer t.Stop()
	for ctx.Err() == nil {
		if err := e.edit(); err != nil {
			r.fail("edit: " + err.Error())
		} else {
			r.edits.Add(1)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}
