package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
)

// setupTimeout bounds each connection and document set-up.
const setupTimeout = 30 * time.Second

// options returns the client options of peer for the run's target. With
// several URLs, successive clients start on successive ones.
func (r *run) options(peer string) client.Options {
	urls := r.tg.urls()
	k := int(r.nextURL.Add(1)-1) % len(urls)
	urls = slices.Concat(urls[k:], urls[:k])
	return client.Options{URLs: urls, PeerID: peer, HTTPClient: r.hc, MinBackoff: r.minBackoff, IndexOnly: !r.materialize}
}

// dial starts a client and waits until it is connected, recording the
// set-up time, and tracks it. On failure it records why and returns nil.
func (r *run) dial(ctx context.Context, o client.Options) *client.Client {
	t0 := time.Now()
	c, err := client.New(ctx, o)
	if err != nil {
		r.connectFailed(err.Error())
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	if err := c.WaitConnected(wctx); err != nil {
		why := c.Stats().LastError
		if why == "" {
			why = err.Error()
		}
		_ = c.Close()
		r.connectFailed(why)
		return nil
	}
	r.connects.add(time.Since(t0))
	r.track(c)
	return c
}

// dialAll starts n clients, -parallel at a time; failed ones are nil.
func (r *run) dialAll(ctx context.Context, n int, peer func(i int) string) []*client.Client {
	r.setPhase("connecting")
	cs := make([]*client.Client, n)
	r.each(ctx, n, func(i int) { cs[i] = r.dial(ctx, r.options(peer(i))) })
	return cs
}

// docGroup is a document and its handle on each client that has it.
type docGroup struct {
	url     string
	clients []*client.Client
	peers   []string
	hs      []*client.Handle
}

// initDoc makes a new document's first change: a title, then init (may be
// nil).
func initDoc(d *automerge.Doc, init func(d *automerge.Doc) error) error {
	if err := d.RootMap().Set("title", "loadtest"); err != nil || init == nil {
		return err
	}
	return init(d)
}

// share gives the clients cs a document: the one at url (already on the
// server) if url is set, else one it creates on the first client (initDoc
// with init) and waits until the server has. The others find it. Nil
// clients are skipped. It returns the clients that have it.
func share(ctx context.Context, cs []*client.Client, init func(d *automerge.Doc) error, url string) (*docGroup, error) {
	g := &docGroup{url: url}
	for _, c := range cs {
		if c == nil {
			continue
		}
		if g.url == "" {
			// A document needs a change to exist on the server.
			h, err := c.Create(func(d *automerge.Doc) error { return initDoc(d, init) })
			if err != nil {
				return g, fmt.Errorf("create: %w", err)
			}
			if err := waitFor(ctx, setupTimeout, h.InSync); err != nil {
				return g, fmt.Errorf("create: the server did not acknowledge a new document: %w", err)
			}
			g.url = h.URL()
			g.add(c, h)
			continue
		}
		h, err := find(ctx, c, g.url)
		if err != nil {
			return g, fmt.Errorf("find: %w", err)
		}
		g.add(c, h)
	}
	return g, nil
}

// find is c.Find bounded by setupTimeout.
func find(ctx context.Context, c *client.Client, url string) (*client.Handle, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	return c.Find(ctx, url)
}

func (g *docGroup) add(c *client.Client, h *client.Handle) {
	g.clients = append(g.clients, c)
	g.peers = append(g.peers, c.PeerID())
	g.hs = append(g.hs, h)
}

// converge waits up to -settle for the clients of every document to have
// the same heads, and records the documents whose clients do not.
func (r *run) converge(ctx context.Context, gs []*docGroup) {
	r.setPhase("settling")
	var bad []NotConverged
	_ = waitFor(ctx, r.settleFor, func() bool {
		bad = notConverged(gs)
		return len(bad) == 0
	})
	r.mu.Lock()
	r.notConverged = append(r.notConverged, bad...)
	r.mu.Unlock()
}

// notConverged returns, for each group whose handles differ, the peers
// whose heads are not the group's most common heads.
func notConverged(gs []*docGroup) []NotConverged {
	var out []NotConverged
	for _, g := range gs {
		keys := make([]string, len(g.hs))
		n := map[string]int{}
		for i, h := range g.hs {
			keys[i] = headsKey(h.Heads())
			n[keys[i]]++
		}
		if len(n) <= 1 {
			continue
		}
		best := keys[0]
		for _, k := range keys {
			if n[k] > n[best] {
				best = k
			}
		}
		nc := NotConverged{Doc: g.url}
		for i, k := range keys {
			if k != best {
				nc.Clients = append(nc.Clients, g.peers[i])
			}
		}
		out = append(out, nc)
	}
	return out
}

func headsKey(hs []client.Hash) string {
	b := make([]byte, 0, len(hs)*len(client.Hash{}))
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return string(b)
}
