package syncengine

// Benchmarks of the server's CPU per edit, engine ("after") against one
// automerge-go SyncState per peer ("before"), at histories of 1,000,
// 10,000 and 100,000 changes. automerge-go costs O(history) per message,
// about 300 ms per edit at 100,000 changes; the engine about 15-30 us.
// Give the edit benchmarks a fixed count of iterations (the first command
// takes about 1.5 minutes, most of it automerge-go at 100,000):
//
//	go test -run '^$' -bench 'ServerEdit|ReceiveChange|GenerateInSync' -benchtime 200x ./pkg/syncengine
//	go test -run '^$' -bench 'Load' -benchtime 3x ./pkg/syncengine
//
// Each iteration of BenchmarkServerEdit and BenchmarkReceiveChange adds one
// change to the document, so "history=N" is the size at the start of a
// run: -benchtime 200x keeps it within N+200. A run stops with b.Fatal
// past benchMaxEdits edits (the default -benchtime 1s would make the
// engine's rows grow their history by tens of thousands of changes).
//
// The first run builds the history with automerge-go (a few seconds for
// 100,000 changes); it is cached for the process, and smaller sizes are
// prefixes of larger ones.

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

var benchSizes = []int{1_000, 10_000, 100_000}

// benchMaxEdits bounds the edits of one sub-benchmark run.
const benchMaxEdits = 100_000

// benchPeers is the peers of a document in BenchmarkServerEdit.
const benchPeers = 5

// ---------------------------------------------------------------------
// History

// benchHistory is a realistic document history: 20 actors taking turns
// (a run of a few changes each), about 60% text inserts (typing, at the
// cursor or elsewhere), 10% text deletions, 30% map puts on 100 keys, and
// every 16th change concurrent with the one before it (a change of
// another actor on the same dependencies, merged by the next change).
// Changes are written by automerge-go, the concurrent ones by amsync.
type benchHistory struct {
	mu      sync.Mutex
	doc     *automerge.Doc
	text    *automerge.Text
	rng     *rand.Rand
	actors  []string // hex
	actor   int
	cursor  int
	textLen int
	when    time.Time
	seqs    map[string]uint64

	chunks  [][]byte
	maxOp   []uint64 // maxOp[i]: the highest op counter of chunks[:i+1]
	textObj amsync.OpID
}

var benchHist = &benchHistory{}

// prefix returns the first n changes of the history (in causal order),
// the highest op counter among them and the text object's id.
func (g *benchHistory) prefix(tb testing.TB, n int) (chunks [][]byte, maxOp uint64, textObj amsync.OpID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.doc == nil {
		g.doc = automerge.New()
		g.rng = rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 20; i++ {
			g.actors = append(g.actors, fmt.Sprintf("%032x", 0xa0000+i))
		}
		g.when = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		g.seqs = map[string]uint64{}
		if err := g.doc.SetActorID(g.actors[0]); err != nil {
			tb.Fatal(err)
		}
		if err := g.doc.RootMap().Set("text", automerge.NewText("")); err != nil {
			tb.Fatal(err)
		}
		g.commit(tb)
		v, err := g.doc.RootMap().Get("text")
		if err != nil {
			tb.Fatal(err)
		}
		g.text = v.Text()
	}
	if len(g.chunks) < n {
		start := time.Now()
		for len(g.chunks) < n {
			g.step(tb)
		}
		tb.Logf("built a history of %d changes in %v", len(g.chunks), time.Since(start).Round(time.Millisecond))
	}
	return g.chunks[:n:n], g.maxOp[n-1], g.textObj
}

func (g *benchHistory) step(tb testing.TB) {
	if len(g.chunks)%16 == 15 {
		g.concurrent(tb)
		return
	}
	if g.rng.IntN(4) == 0 {
		g.actor = g.rng.IntN(len(g.actors))
		if err := g.doc.SetActorID(g.actors[g.actor]); err != nil {
			tb.Fatal(err)
		}
		g.cursor = g.rng.IntN(g.textLen + 1)
	}
	var err error
	switch r := g.rng.IntN(10); {
	case r < 6 || g.textLen == 0: // typing
		s := string(rune('a' + g.rng.IntN(26)))
		if err = g.text.Insert(g.cursor, s); err == nil {
			g.cursor++
			g.textLen++
		}
	case r < 7:
		pos := g.rng.IntN(g.textLen)
		if err = g.text.Delete(pos, 1); err == nil {
			g.textLen--
			g.cursor = min(g.cursor, g.textLen)
		}
	default:
		err = g.doc.RootMap().Set(fmt.Sprintf("k%d", g.rng.IntN(100)), int64(len(g.chunks)))
	}
	if err != nil {
		tb.Fatal(err)
	}
	g.commit(tb)
}

func (g *benchHistory) commit(tb testing.TB) {
	g.when = g.when.Add(time.Second)
	h, err := g.doc.Commit("", automerge.CommitOptions{Time: &g.when})
	if err != nil {
		tb.Fatal(err)
	}
	ch, err := g.doc.Change(h)
	if err != nil {
		tb.Fatal(err)
	}
	g.record(tb, ch.Save())
}

func (g *benchHistory) record(tb testing.TB, raw []byte) {
	c, err := amsync.ParseChange(raw)
	if err != nil {
		tb.Fatal(err)
	}
	ops, err := c.Ops()
	if err != nil {
		tb.Fatal(err)
	}
	if len(g.chunks) == 0 {
		g.textObj = ops[0].ID
	}
	top := c.StartOp + uint64(len(ops)) - 1
	if n := len(g.maxOp); n > 0 {
		top = max(top, g.maxOp[n-1])
	}
	g.seqs[string(c.Actor)] = c.Seq
	g.chunks = append(g.chunks, raw)
	g.maxOp = append(g.maxOp, top)
}

// concurrent adds a change of another actor on the dependencies of the
// latest change: a put of a fresh key, which the next change merges.
func (g *benchHistory) concurrent(tb testing.TB) {
	last, err := amsync.ParseChange(g.chunks[len(g.chunks)-1])
	if err != nil {
		tb.Fatal(err)
	}
	other := (g.actor + 1 + g.rng.IntN(len(g.actors)-1)) % len(g.actors)
	actor := mustActor(tb, g.actors[other])
	c := &amsync.Change{
		Deps:    last.Deps,
		Actor:   actor,
		Seq:     g.seqs[string(actor)] + 1,
		StartOp: last.StartOp,
		Time:    g.when.UnixMilli(),
	}
	c.SetOps([]amsync.Op{{
		ID:     amsync.OpID{Counter: last.StartOp, Actor: string(actor)},
		Key:    amsync.Key{Kind: amsync.KeyProp, Prop: fmt.Sprintf("c%d", len(g.chunks))},
		Action: amsync.ActionPut,
		Value:  amsync.IntValue(int64(len(g.chunks))),
	}})
	raw := c.Encode()
	if err := g.doc.LoadIncremental(raw); err != nil {
		tb.Fatal(err)
	}
	g.record(tb, raw)
}

func mustActor(tb testing.TB, hexID string) []byte {
	b, err := hex.DecodeString(hexID)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// ---------------------------------------------------------------------
// Servers

// benchServer is the server side of one document with its peers.
type benchServer interface {
	receive(peer int, msg []byte) error
	generate(peer int) []byte
	heads() []Hash
}

type engineServer struct {
	d  *Doc
	st []*State
}

func newEngineServer(tb testing.TB, chunks [][]byte, peers int) *engineServer {
	d := New(Options{})
	if _, err := d.AddChanges(nil, chunks...); err != nil {
		tb.Fatal(err)
	}
	if d.Len() != len(chunks) {
		tb.Fatalf("engine applied %d of %d changes", d.Len(), len(chunks))
	}
	s := &engineServer{d: d}
	for range peers {
		s.st = append(s.st, NewState())
	}
	return s
}

func (s *engineServer) receive(p int, msg []byte) error {
	_, err := s.d.ReceiveMessage(s.st[p], msg, p)
	return err
}
func (s *engineServer) generate(p int) []byte { return s.d.GenerateMessage(s.st[p]) }
func (s *engineServer) heads() []Hash         { return s.d.Heads() }

type amServer struct {
	d  *automerge.Doc
	st []*automerge.SyncState
}

func newAMServer(tb testing.TB, chunks [][]byte, peers int) *amServer {
	d, err := automerge.Load(slices.Concat(chunks...))
	if err != nil {
		tb.Fatal(err)
	}
	s := &amServer{d: d}
	for range peers {
		s.st = append(s.st, automerge.NewSyncState(d))
	}
	return s
}

func (s *amServer) receive(p int, msg []byte) error {
	_, err := s.st[p].ReceiveMessage(msg)
	return err
}

func (s *amServer) generate(p int) []byte {
	if m, ok := s.st[p].GenerateMessage(); ok {
		return m.Bytes()
	}
	return nil
}
func (s *amServer) heads() []Hash { return hashes(s.d.Heads()) }

// ---------------------------------------------------------------------
// Peers

// benchPeerSet is the peers of a server. They hold the same
// changes at the end of every edit, so they share one Doc, with one State
// each (their sync state for the server): receiving a change the Doc
// already has is a no-op, and what each peer says to the server is what
// five separate Docs would say, for a fifth of the memory and loading.
// Each peer has its own actor; its edits alternate between a put of its
// own map key and typing in the document's text.
type benchPeerSet struct {
	doc     *Doc
	st      []*State
	actors  [][]byte
	seq     []uint64
	lastPut []amsync.OpID
	cursor  []amsync.OpID
	maxOp   uint64
	textObj amsync.OpID
	ops     []amsync.Op
	// branches makes each peer's change depend on its own last change
	// only, as a client that does not apply others' changes writes them
	// (the loadtest's index-only clients): the document keeps one head
	// per peer.
	branches bool
	last     [][]Hash
}

func newBenchPeers(tb testing.TB, chunks [][]byte, maxOp uint64, textObj amsync.OpID, peers int) *benchPeerSet {
	d := New(Options{})
	if _, err := d.AddChanges(nil, chunks...); err != nil {
		tb.Fatal(err)
	}
	ps := &benchPeerSet{doc: d, maxOp: maxOp, textObj: textObj}
	for i := range peers {
		ps.st = append(ps.st, NewState())
		ps.actors = append(ps.actors, []byte(fmt.Sprintf("peer-%d-actor-id", i)))
	}
	ps.seq = make([]uint64, peers)
	ps.lastPut = make([]amsync.OpID, peers)
	ps.cursor = make([]amsync.OpID, peers)
	ps.last = make([][]Hash, peers)
	ps.ops = make([]amsync.Op, 1)
	return ps
}

// edit makes peer p's next change, on the current heads, and applies it
// to the peers' Doc.
func (ps *benchPeerSet) edit(tb testing.TB, p int) {
	ps.seq[p]++
	ps.maxOp++
	id := amsync.OpID{Counter: ps.maxOp, Actor: string(ps.actors[p])}
	op := &ps.ops[0]
	if ps.seq[p]%2 == 1 || ps.branches {
		*op = amsync.Op{ID: id, Key: amsync.Key{Kind: amsync.KeyProp, Prop: fmt.Sprintf("peer%d", p)},
			Action: amsync.ActionPut, Value: amsync.IntValue(int64(ps.seq[p]))}
		if !ps.lastPut[p].IsZero() {
			op.Pred = []amsync.OpID{ps.lastPut[p]}
		}
		ps.lastPut[p] = id
	} else {
		*op = amsync.Op{ID: id, Obj: ps.textObj, Key: amsync.Key{Kind: amsync.KeyElem, Elem: ps.cursor[p]},
			Insert: true, Action: amsync.ActionPut, Value: amsync.StringValue("x")}
		ps.cursor[p] = id
	}
	deps := slices.Clone(ps.doc.Heads())
	if ps.branches && ps.last[p] != nil {
		deps = ps.last[p]
	}
	c := &amsync.Change{Deps: deps, Actor: ps.actors[p], Seq: ps.seq[p], StartOp: ps.maxOp}
	c.SetOps(ps.ops)
	raw := c.Encode()
	if _, err := ps.doc.AddChanges(nil, raw); err != nil {
		tb.Fatalf("peer %d edit: %v", p, err)
	}
	if parsed, err := amsync.ParseChange(raw); err == nil {
		ps.last[p] = []Hash{parsed.Hash}
	}
}

// exchange runs the sync protocol between the server and the peers until
// no one has anything to say, the peers in from speaking first. It
// returns the time spent in the server's calls and the number of messages.
func exchange(tb testing.TB, srv benchServer, ps *benchPeerSet, from ...int) (time.Duration, int) {
	var spent time.Duration
	in := make([][]byte, len(ps.st))
	out := make([][]byte, len(ps.st))
	msgs := 0
	for _, p := range from {
		if in[p] = ps.doc.GenerateMessage(ps.st[p]); in[p] == nil {
			tb.Fatalf("peer %d has nothing to say", p)
		}
		msgs++
	}
	for round := 0; ; round++ {
		if round > 50 {
			tb.Fatal("sync did not settle in 50 rounds")
		}
		// The server: receive what came, then generate for each peer.
		t0 := time.Now()
		for p, m := range in {
			if m != nil {
				if err := srv.receive(p, m); err != nil {
					tb.Fatalf("server refused peer %d's message: %v", p, err)
				}
			}
		}
		for p := range out {
			out[p] = srv.generate(p)
		}
		spent += time.Since(t0)
		// The peers: receive, answer.
		quiet := true
		for p, m := range out {
			in[p] = nil
			if m == nil {
				continue
			}
			msgs++
			if _, err := ps.doc.ReceiveMessage(ps.st[p], m, nil); err != nil {
				tb.Fatalf("peer %d refused the server's message: %v", p, err)
			}
			in[p] = ps.doc.GenerateMessage(ps.st[p])
			if in[p] != nil {
				msgs++
				quiet = false
			}
		}
		if quiet {
			return spent, msgs
		}
	}
}

func benchSetup(b *testing.B, n, peers int, mk func(testing.TB, [][]byte, int) benchServer) (benchServer, *benchPeerSet) {
	chunks, maxOp, textObj := benchHist.prefix(b, n)
	srv := mk(b, chunks, peers)
	ps := newBenchPeers(b, chunks, maxOp, textObj, peers)
	// The peers connect: each sends its heads and a Bloom filter of the
	// whole history, the server acknowledges.
	all := make([]int, peers)
	for p := range all {
		all[p] = p
	}
	exchange(b, srv, ps, all...)
	// Until a peer answers a message of the server, the server's state for
	// it has no shared heads, and each message it generates for the peer
	// (engine and core alike) carries a Bloom filter of the whole history.
	// Two edits of each peer, outside the timer, reach the steady state.
	for i := range 2 * peers {
		ps.edit(b, i%peers)
		exchange(b, srv, ps, i%peers)
	}
	if !slices.Equal(srv.heads(), ps.doc.Heads()) {
		b.Fatal("server and peers differ after the initial sync")
	}
	return srv, ps
}

var benchImpls = []struct {
	name string
	mk   func(testing.TB, [][]byte, int) benchServer
}{
	{"engine", func(tb testing.TB, c [][]byte, peers int) benchServer { return newEngineServer(tb, c, peers) }},
	{"automerge-go", func(tb testing.TB, c [][]byte, peers int) benchServer { return newAMServer(tb, c, peers) }},
}

// BenchmarkServerEdit measures the server's CPU per edit with five peers
// in sync: peer i%5 sends a change; the server receives it and generates
// for every peer (the ack, the change to the four others); the peers
// answer (their new heads and a Bloom filter); the server receives the
// answers and generates again (nothing, normally).
//
// The peers' work is in the loop but not in the metrics: the server's
// calls are timed with time.Now around them (two intervals per edit, well
// under a microsecond of overhead) and reported as server-ns/edit and
// edits/s. ns/op is the whole iteration, peers included. (b.StopTimer
// would stop the world for runtime.ReadMemStats twice per iteration.)
func BenchmarkServerEdit(b *testing.B) {
	for _, impl := range benchImpls {
		b.Run(impl.name, func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(fmt.Sprintf("history=%d", n), func(b *testing.B) {
					srv, ps := benchSetup(b, n, benchPeers, impl.mk)
					var server time.Duration
					edits, msgs := 0, 0
					for b.Loop() {
						if edits++; edits > benchMaxEdits {
							b.Fatalf("more than %d edits: run with -benchtime %dx or less", benchMaxEdits, benchMaxEdits)
						}
						p := edits % benchPeers
						ps.edit(b, p)
						spent, n := exchange(b, srv, ps, p)
						server += spent
						msgs += n
					}
					if !slices.Equal(srv.heads(), ps.doc.Heads()) {
						b.Fatal("server and peers differ")
					}
					b.ReportMetric(float64(server.Nanoseconds())/float64(edits), "server-ns/edit")
					b.ReportMetric(float64(edits)/server.Seconds(), "edits/s")
					b.ReportMetric(float64(msgs)/float64(edits), "msgs/edit")
				})
			}
		})
	}
}

// BenchmarkHotDoc is BenchmarkServerEdit with many peers on one document
// (the loadtest's hotdoc scenario): every edit is a message to each other
// peer and an acknowledgement back from each. Peers in the same state get
// the same message.
//
// With branches, each peer's change depends on its own last change only
// (as the loadtest's index-only clients write them): the document has a
// head per peer, and every message carries them all.
func BenchmarkHotDoc(b *testing.B) {
	for _, branches := range []bool{false, true} {
		for _, peers := range []int{16, 50} {
			b.Run(fmt.Sprintf("branches=%v/peers=%d", branches, peers), func(b *testing.B) {
				n := 1_000
				srv, ps := benchSetup(b, n, peers, benchImpls[0].mk)
				ps.branches = branches
				var server time.Duration
				edits := 0
				for b.Loop() {
					if edits++; edits > benchMaxEdits {
						b.Fatalf("more than %d edits", benchMaxEdits)
					}
					p := edits % peers
					ps.edit(b, p)
					spent, _ := exchange(b, srv, ps, p)
					server += spent
				}
				if !slices.Equal(srv.heads(), ps.doc.Heads()) {
					b.Fatal("server and peers differ")
				}
				b.ReportMetric(float64(server.Nanoseconds())/float64(edits), "server-ns/edit")
				b.ReportMetric(float64(server.Nanoseconds())/float64(edits*(peers-1)), "server-ns/delivery")
				b.ReportMetric(float64(len(srv.heads())), "heads")
			})
		}
	}
}

// BenchmarkReceiveChange measures Doc.ReceiveMessage of a message from a
// peer in sync carrying one new change (as the peer's GenerateMessage
// writes it), into a document of N changes.
func BenchmarkReceiveChange(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("history=%d", n), func(b *testing.B) {
			srv, ps := benchSetup(b, n, benchPeers, benchImpls[0].mk)
			d, st := srv.(*engineServer).d, srv.(*engineServer).st[0]
			if b.N > benchMaxEdits {
				b.Fatalf("more than %d edits: run with -benchtime %dx or less", benchMaxEdits, benchMaxEdits)
			}
			// The messages: a chain of changes of peer 0, made by the
			// peers' Doc, with peer 0's state as after each server ack.
			msgs := make([][]byte, b.N)
			for i := range msgs {
				ps.edit(b, 0)
				msgs[i] = ps.doc.GenerateMessage(ps.st[0])
				heads := ps.doc.Heads()
				ack := (&amsync.Message{Type: amsync.MessageTypeSync, Heads: heads,
					Have: []amsync.Have{{LastSync: heads, Bloom: amsync.NewBloom(nil).Encode()}}}).Encode()
				if _, err := ps.doc.ReceiveMessage(ps.st[0], ack, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := d.ReceiveMessage(st, msgs[i], 0); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if !slices.Equal(d.Heads(), ps.doc.Heads()) {
				b.Fatal("heads differ")
			}
		})
	}
}

// BenchmarkGenerateInSync measures Doc.GenerateMessage for a peer in sync
// (it returns nil).
func BenchmarkGenerateInSync(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("history=%d", n), func(b *testing.B) {
			srv, _ := benchSetup(b, n, benchPeers, benchImpls[0].mk)
			es := srv.(*engineServer)
			for b.Loop() {
				if es.d.GenerateMessage(es.st[0]) != nil {
					b.Fatal("a message for a peer in sync")
				}
			}
		})
	}
}

// BenchmarkLoad measures loading a document's changes from storage:
// Doc.AddChanges of N chunks into a new Doc (engine), automerge.Load of
// the concatenated chunks (automerge-go).
func BenchmarkLoad(b *testing.B) {
	for _, impl := range benchImpls {
		b.Run(impl.name, func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(fmt.Sprintf("history=%d", n), func(b *testing.B) {
					chunks, _, _ := benchHist.prefix(b, n)
					all := slices.Concat(chunks...)
					b.SetBytes(int64(len(all)))
					for b.Loop() {
						if impl.name == "engine" {
							d := New(Options{})
							if _, err := d.AddChanges(nil, chunks...); err != nil {
								b.Fatal(err)
							}
						} else if _, err := automerge.Load(all); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkLoadStored is BenchmarkLoad's engine with AddStored, as the hub
// opens a document from its own store: the chunks are the engine's to
// keep (copied here outside the timer), and the ops are not checked again.
func BenchmarkLoadStored(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("history=%d", n), func(b *testing.B) {
			chunks, _, _ := benchHist.prefix(b, n)
			b.SetBytes(int64(len(slices.Concat(chunks...))))
			for b.Loop() {
				b.StopTimer()
				own := make([][]byte, len(chunks))
				for i, c := range chunks {
					own[i] = slices.Clone(c)
				}
				b.StartTimer()
				d := New(Options{})
				if _, err := d.AddStored(nil, own...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
