package node

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// A measurement (make bench-cluster runs it at size):
//
//	go test -run TestClusterEditLatency -cluster.latency 30s -cluster.docs 300 -v ./server/node
//
// By default (make test) it runs a 3-second smoke of 30 documents. Three nodes on one real redis-server; each document has a writer on one
// node and a reader on the next; writers edit every document at
// -cluster.rate edits/s. The latency is from the writer's edit to the
// reader having applied it (both in this process, one clock). It fails if
// an edit never arrives.
var (
	latencyRun  = flag.Duration("cluster.latency", 3*time.Second, "how long TestClusterEditLatency edits")
	latencyDocs = flag.Int("cluster.docs", 30, "documents in TestClusterEditLatency")
	latencyRate = flag.Float64("cluster.rate", 1, "edits per second per document in TestClusterEditLatency")
)

type latDoc struct {
	mu     sync.Mutex
	id     protocol.DocumentID
	doc    *automerge.Doc
	ss     *automerge.SyncState
	peer   *goPeer
	writer bool
	seen   int64 // reader: highest edit number applied
}

func TestClusterEditLatency(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Persist: true})
	nodes := startClusterNodes(t, srv.URL(), 3)
	writers := make([]*goPeer, 3)
	readers := make([]*goPeer, 3)
	for i, n := range nodes {
		writers[i] = dialPeer(t, n.URL, fmt.Sprintf("w%d", i))
		readers[i] = dialPeer(t, n.URL, fmt.Sprintf("r%d", i))
	}
	type pair struct{ w, r *latDoc }
	var mu sync.Mutex
	var lat []time.Duration
	docs := map[*goPeer]map[protocol.DocumentID]*latDoc{}
	var pairs []pair
	for i := 0; i < *latencyDocs; i++ {
		id := protocol.NewDocumentID()
		w := &latDoc{id: id, doc: automerge.New(), peer: writers[i%3], writer: true}
		w.ss = automerge.NewSyncState(w.doc)
		r := &latDoc{id: id, doc: automerge.New(), peer: readers[(i+1)%3]}
		r.ss = automerge.NewSyncState(r.doc)
		for _, d := range []*latDoc{w, r} {
			if docs[d.peer] == nil {
				docs[d.peer] = map[protocol.DocumentID]*latDoc{}
			}
			docs[d.peer][id] = d
		}
		pairs = append(pairs, pair{w, r})
	}
	send := func(d *latDoc, typ string) {
		if sm, ok := d.ss.GenerateMessage(); ok {
			d.peer.send(&protocol.Message{Type: typ, SenderID: d.peer.id, TargetID: d.peer.server, DocumentID: d.id, Data: sm.Bytes()})
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for p, byID := range docs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				m, err := p.next(200 * time.Millisecond)
				if err != nil {
					continue
				}
				d := byID[m.DocumentID]
				if d == nil || m.Type != protocol.TypeSync {
					continue
				}
				d.mu.Lock()
				if _, err := d.ss.ReceiveMessage(m.Data); err != nil {
					d.mu.Unlock()
					t.Errorf("receive: %v", err)
					return
				}
				if !d.writer {
					if v, err := d.doc.RootMap().Get("n"); err == nil && v.Kind() == automerge.KindInt64 && v.Int64() > d.seen {
						tv, _ := d.doc.RootMap().Get("t")
						d.seen = v.Int64()
						mu.Lock()
						lat = append(lat, time.Since(time.Unix(0, tv.Int64())))
						mu.Unlock()
					}
				}
				send(d, protocol.TypeSync)
				d.mu.Unlock()
			}
		}()
	}
	// Create every document on its writer's node and open it on the reader's.
	for _, pr := range pairs {
		pr.w.mu.Lock()
		if err := pr.w.doc.RootMap().Set("n", int64(0)); err != nil {
			t.Fatal(err)
		}
		_ = pr.w.doc.RootMap().Set("t", time.Now().UnixNano())
		_, _ = pr.w.doc.Commit("create")
		send(pr.w, protocol.TypeSync)
		pr.w.mu.Unlock()
	}
	time.Sleep(2 * time.Second)
	for _, pr := range pairs {
		pr.r.mu.Lock()
		send(pr.r, protocol.TypeRequest)
		pr.r.mu.Unlock()
	}
	time.Sleep(2 * time.Second)
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()

	cpu0, _ := srv.CPUSeconds(context.Background())
	start := time.Now()
	interval := time.Duration(float64(time.Second) / *latencyRate)
	var edits int64
	for round := int64(1); time.Since(start) < *latencyRun; round++ {
		roundStart := time.Now()
		for i, pr := range pairs {
			// Spread each round's edits over the interval.
			if d := time.Duration(i) * interval / time.Duration(len(pairs)); time.Since(roundStart) < d {
				time.Sleep(d - time.Since(roundStart))
			}
			pr.w.mu.Lock()
			_ = pr.w.doc.RootMap().Set("n", round)
			_ = pr.w.doc.RootMap().Set("t", time.Now().UnixNano())
			_, _ = pr.w.doc.Commit("edit")
			send(pr.w, protocol.TypeSync)
			pr.w.mu.Unlock()
			edits++
		}
	}
	elapsed := time.Since(start)
	cpu1, _ := srv.CPUSeconds(context.Background())
	time.Sleep(3 * time.Second) // let the last edits arrive
	cancel()
	wg.Wait()
	for _, pr := range pairs {
		pr.r.mu.Lock()
		if v, _ := pr.w.doc.RootMap().Get("n"); pr.r.seen != v.Int64() {
			t.Errorf("document %s: the reader saw edit %d of %d", pr.r.id, pr.r.seen, v.Int64())
		}
		pr.r.mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("3 nodes, %d docs, %.1f edits/s/doc (%.0f edits/s in all) for %s: %d edits, %d deliveries measured",
		len(pairs), *latencyRate, float64(edits)/elapsed.Seconds(), elapsed.Round(time.Millisecond), edits, len(lat))
	t.Logf("edit-to-peer across nodes: p50 %s, p90 %s, p99 %s, max %s",
		q(0.50).Round(10*time.Microsecond), q(0.90).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(time.Millisecond))
	t.Logf("redis-server CPU: %.1f%% of one core (%.2f s over %s)", 100*(cpu1-cpu0)/elapsed.Seconds(), cpu1-cpu0, elapsed.Round(time.Millisecond))
}
