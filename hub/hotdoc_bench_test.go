package hub_test

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// BenchmarkHubHotDoc: the whole hub (sessions, frames, the document's
// owner, the sync engine, the store) under the loadtest's hotdoc load,
// without sockets: P peers on one document, each edit of one peer
// delivered to the P-1 others, up to P edits in flight at once (every
// typist typing). The peers are sync engines in the same process, so
// ns/op is hub and peers together (the peers do what the hub does once per
// message, in a lighter form); use the CPU profile to split it.
//
// With branches each peer's change depends only on its own last change,
// as the loadtest's index-only clients write them: the document then has
// one head per peer and every message carries all of them.
//
//	go test -run '^$' -bench HubHotDoc -benchtime 2000x ./hub
func BenchmarkHubHotDoc(b *testing.B) {
	for _, branches := range []bool{false, true} {
		for _, peers := range []int{16, 50} {
			b.Run(fmt.Sprintf("branches=%v/peers=%d", branches, peers), func(b *testing.B) {
				benchHotDoc(b, peers, branches)
			})
		}
	}
}

type hdPeer struct {
	cl       *client
	id       protocol.DocumentID
	eng      *syncengine.Doc
	st       *syncengine.State
	actor    []byte
	seq      uint64
	maxOp    uint64
	last     []syncengine.Hash
	branches bool
	edits    chan struct{}
	got      *atomic.Int64 // changes of others applied, over all peers
	fail     chan error
}

func benchHotDoc(b *testing.B, peers int, branches bool) {
	h := newHub(b, memstore.New(), func(o *hub.Options) { o.IdleDocTimeout = time.Minute })
	id := protocol.NewDocumentID()
	var got atomic.Int64
	fail := make(chan error, peers)
	ps := make([]*hdPeer, peers)
	for i := range ps {
		ps[i] = &hdPeer{
			cl: connect(b, h, fmt.Sprintf("peer-%d", i), fmt.Sprintf("storage-%d", i)), id: id,
			eng: syncengine.New(syncengine.Options{}), st: syncengine.NewState(),
			actor: []byte(fmt.Sprintf("hotdoc-actor-%03d", i)), branches: branches,
			edits: make(chan struct{}, 1024), got: &got, fail: fail,
		}
	}
	// The first peer creates the document, the others find it.
	ps[0].edit(b)
	ps[0].sendSync(b, protocol.TypeSync)
	for _, p := range ps {
		go p.run()
	}
	for _, p := range ps[1:] {
		p.edits <- struct{}{} // a no-op nudge: see run
	}
	waitGot(b, &got, int64(peers-1), fail)

	b.ResetTimer()
	edits := 0
	for b.Loop() {
		p := ps[edits%peers]
		edits++
		// At most one edit in flight per peer.
		if edits > peers {
			waitGot(b, &got, int64((edits-peers)*(peers-1)+peers-1), fail)
		}
		p.edits <- struct{}{}
	}
	waitGot(b, &got, int64(edits*(peers-1)+peers-1), fail)
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(edits*(peers-1)), "ns/delivery")
	var heads []syncengine.Hash
	for _, p := range ps {
		p.cl.c.Close(protocol.CloseNormal, "")
		if heads == nil {
			heads = p.eng.Heads()
		}
	}
	b.ReportMetric(float64(len(heads)), "heads")
}

func waitGot(b *testing.B, got *atomic.Int64, want int64, fail chan error) {
	deadline := time.Now().Add(60 * time.Second)
	for got.Load() < want {
		select {
		case err := <-fail:
			b.Fatal(err)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("deliveries stalled at %d of %d", got.Load(), want)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// run is the peer: it makes an edit when asked (the first nudge of a
// peer that did not create the document asks for it instead), and
// answers every sync message as an automerge-repo peer does.
func (p *hdPeer) run() {
	first := p.seq == 0
	for {
		select {
		case <-p.edits:
			if first {
				first = false
				p.sendSync(nil, protocol.TypeRequest)
				continue
			}
			p.edit(nil)
			p.sendSync(nil, protocol.TypeSync)
		case frame := <-p.cl.c.fromHub:
			m, err := protocol.Decode(frame)
			if err != nil {
				p.fail <- err
				return
			}
			if m.Type != protocol.TypeSync {
				continue
			}
			applied, err := p.eng.ReceiveMessage(p.st, m.Data, nil)
			if err != nil {
				p.fail <- err
				return
			}
			for _, c := range applied {
				p.maxOp = max(p.maxOp, c.StartOp)
			}
			p.got.Add(int64(len(applied)))
			p.sendSync(nil, protocol.TypeSync)
		case <-p.cl.c.done:
			return
		}
	}
}

func (p *hdPeer) edit(b *testing.B) {
	p.seq++
	p.maxOp++
	deps := slices.Clone(p.eng.Heads())
	if p.branches && p.last != nil {
		deps = p.last
	}
	c := &amsync.Change{Deps: deps, Actor: p.actor, Seq: p.seq, StartOp: p.maxOp, Time: time.Now().UnixMilli()}
	c.SetOps([]amsync.Op{{ID: amsync.OpID{Counter: p.maxOp, Actor: string(p.actor)},
		Key: amsync.Key{Kind: amsync.KeyProp, Prop: "k" + string(p.actor)}, Action: amsync.ActionPut, Value: amsync.IntValue(int64(p.seq))}})
	applied, err := p.eng.AddChanges(nil, c.Encode())
	if err != nil || len(applied) != 1 {
		err = fmt.Errorf("peer edit: %d applied, %v", len(applied), err)
		if b != nil {
			b.Fatal(err)
		}
		p.fail <- err
		return
	}
	p.last = []syncengine.Hash{applied[0].Hash}
}

func (p *hdPeer) sendSync(b *testing.B, typ string) {
	data := p.eng.GenerateMessage(p.st)
	if data == nil && typ != protocol.TypeRequest {
		return
	}
	if data == nil {
		data = emptySyncMessage()
	}
	frame, err := protocol.Encode(&protocol.Message{Type: typ, SenderID: p.cl.id, TargetID: p.cl.hub, DocumentID: p.id, Data: data})
	if err != nil {
		p.fail <- err
		return
	}
	p.cl.c.toHub <- frame
}
