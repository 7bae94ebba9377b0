package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
)

// offlineURL is where an offline client connects: nothing listens there.
const offlineURL = "ws://127.0.0.1:1/offline"

// runOffline: -clients pairs share a document; one of each pair goes
// offline (Close, keeping its Dir), both edit while apart (the offline one
// through a client that cannot connect), and it comes back (client.New,
// same Dir and PeerID). Measures the resume time (until both have the same
// heads) and the bytes it took, against the document's size.
func runOffline(args []string) error {
	r := newRun("offline", "")
	n := r.fs.Int("clients", 10, "pairs of clients")
	initial := r.fs.Int("initial", 50, "edits (alternating sides) before going offline")
	apart := r.fs.Int("edits", 20, "edits each side makes while apart")
	size := r.fs.Int("value-bytes", 64, "bytes of each edit's value")
	return r.exec(args, func(ctx context.Context) error {
		if *n < 1 || *initial < 0 || *apart < 0 || *size < 0 {
			return errors.New("need at least 1 pair and no negative sizes")
		}
		dir, err := os.MkdirTemp("", "plait-offline-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		r.size(2**n, *n)
		var mu sync.Mutex
		var groups []*docGroup
		var resume durations
		var bytesA, bytesB, docBytes []int64
		r.beginPhase("pairs")
		r.each(ctx, *n, func(i int) {
			p := &pair{r: r, i: i, dir: filepath.Join(dir, fmt.Sprint(i)), initial: *initial, apart: *apart, size: *size}
			err := p.run(ctx)
			if err != nil {
				r.fail(err.Error())
			}
			mu.Lock()
			defer mu.Unlock()
			if p.g != nil {
				groups = append(groups, p.g)
			}
			if err == nil {
				resume.add(p.resume)
				bytesA, bytesB, docBytes = append(bytesA, p.bytesA), append(bytesB, p.bytesB), append(docBytes, p.docBytes)
			}
		})
		r.endPhase()
		r.converge(ctx, groups)
		r.extraSet("resumeMs", resume.summary())
		r.extraSet("bytesOnResume", intStats(bytesA))
		r.extraSet("peerBytesOnResume", intStats(bytesB))
		r.extraSet("docBytes", intStats(docBytes))
		return nil
	})
}

// pair is one offline/online pair of clients and its measurements.
type pair struct {
	r                        *run
	i                        int
	dir                      string
	initial, apart, size     int
	g                        *docGroup
	resume                   time.Duration
	bytesA, bytesB, docBytes int64
}

func (p *pair) run(ctx context.Context) error {
	r := p.r
	peerA, peerB := fmt.Sprintf("offline-%d-a", p.i), fmt.Sprintf("offline-%d-b", p.i)
	optsA := r.options(peerA)
	optsA.Dir = p.dir
	a, b := r.dial(ctx, optsA), r.dial(ctx, r.options(peerB))
	if a == nil || b == nil {
		return errors.New("pair not connected")
	}
	g, err := share(ctx, []*client.Client{a, b}, nil, "")
	if err != nil {
		return err
	}
	hA, hB := g.hs[0], g.hs[1]
	for j := range p.initial {
		if err := p.write([]*client.Handle{hA, hB}[j%2], j); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, setupTimeout, func() bool { return sameHeads(hA, hB) && hA.InSync() }); err != nil {
		return fmt.Errorf("pair did not sync before going offline: %w", err)
	}
	r.release(a) // offline: its Dir keeps the document and the sync state

	off, err := client.New(ctx, client.Options{URLs: []string{offlineURL}, PeerID: peerA, Dir: p.dir, MinBackoff: time.Hour})
	if err != nil {
		return err
	}
	hOff, err := find(ctx, off, g.url)
	if err != nil {
		off.Close()
		return fmt.Errorf("offline find: %w", err)
	}
	var wg sync.WaitGroup
	var errOff error
	wg.Go(func() {
		for j := range p.apart {
			if errOff = p.write(hOff, p.initial+j); errOff != nil {
				return
			}
		}
	})
	for j := range p.apart {
		if err := p.write(hB, p.initial+j); err != nil {
			return err
		}
	}
	wg.Wait()
	if err := errors.Join(errOff, off.Close()); err != nil {
		return fmt.Errorf("offline edits: %w", err)
	}

	t0 := time.Now()
	before := b.Stats()
	a2 := r.dial(ctx, optsA)
	if a2 == nil {
		return errors.New("offline client did not reconnect")
	}
	h2, err := find(ctx, a2, g.url)
	if err != nil {
		return fmt.Errorf("resume find: %w", err)
	}
	p.g = &docGroup{url: g.url}
	p.g.add(a2, h2)
	p.g.add(b, hB)
	if err := waitFor(ctx, r.settleFor, func() bool { return sameHeads(h2, hB) }); err != nil {
		return fmt.Errorf("resume: heads differ after -settle")
	}
	p.resume = time.Since(t0)
	sa, sb := a2.Stats(), b.Stats()
	p.bytesA = sa.BytesIn + sa.BytesOut
	p.bytesB = sb.BytesIn + sb.BytesOut - before.BytesIn - before.BytesOut
	return h2.View(func(d *automerge.Doc) error {
		p.docBytes = int64(len(d.Save()))
		return nil
	})
}

// write sets a fresh key of h to p.size random letters.
func (p *pair) write(h *client.Handle, j int) error {
	v := make([]byte, p.size)
	for k := range v {
		v[k] = byte('a' + rand.IntN(26))
	}
	if err := h.Change(func(d *automerge.Doc) error { return d.RootMap().Set(fmt.Sprintf("v/%d", j), string(v)) }); err != nil {
		return fmt.Errorf("edit: %w", err)
	}
	p.r.edits.Add(1)
	return nil
}

func sameHeads(a, b *client.Handle) bool { return slices.Equal(a.Heads(), b.Heads()) }

// intStats returns the mean, median and max of v.
func intStats(v []int64) map[string]int64 {
	if len(v) == 0 {
		return map[string]int64{"count": 0}
	}
	s := slices.Sorted(slices.Values(v))
	var sum int64
	for _, x := range s {
		sum += x
	}
	return map[string]int64{"count": int64(len(s)), "mean": sum / int64(len(s)), "p50": s[(len(s)-1)/2], "max": s[len(s)-1]}
}
