package syncengine

// Differential tests against automerge-go (the Rust core, the oracle).
//
// TestDiffSync runs random scripts: a hub (one Doc, one State per peer)
// and 2 to 6 client peers. Most peers are automerge-go documents syncing
// with automerge-go SyncStates (the Rust implementation); in some seeds one
// or two peers are engine peers (an automerge-go document for the content,
// a Doc and a State for the protocol), so engine<->engine is covered too.
// A script interleaves local edits (concurrent ones included), FIFO
// delivery on each connection in random order between connections,
// disconnects (the queued messages are lost), reconnects with fresh or
// saved sync states on either side (a peer sometimes resumes from an older
// saved state), replays on a new connection of copies of messages sent on
// earlier connections (duplicated, reordered, stale), and rarely a peer
// that loses all its data and comes back empty under a new actor. Every
// run ends by reconnecting everyone and syncing to quiescence (bounded:
// not quiescent after 200 rounds is a livelock), then every peer must have
// the hub's heads and the hub's changes, loaded into automerge-go, must
// give every peer's content.
//
// Every run is deterministic given its seed (fixed actors and commit
// times). Flags:
//
//	go test ./pkg/syncengine -run Diff                        # 1000 seeds
//	go test ./pkg/syncengine -run Diff -diff.seeds=20000      # a long run
//	go test ./pkg/syncengine -run Diff -diff.seed=123 -v      # one seed, traced
//
// PLAIT_DIFF_SEEDS=N sets the number of seeds too (the flag wins).
//
// TestDiffWalks checks the walks (changesSince, removeAncestors) against
// brute force on random DAGs of real automerge-go changes.

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

var (
	diffSeeds = flag.Int("diff.seeds", 0, "number of seeds of TestDiffSync (default 1000, or $PLAIT_DIFF_SEEDS)")
	diffSeed  = flag.Int64("diff.seed", -1, "run only this seed of TestDiffSync, with a trace")
	diffFirst = flag.Uint64("diff.first", 0, "first seed of TestDiffSync")
	diffHub   = flag.String("diff.hub", "", "hub of TestDiffSync: engine, twin (engine, shadowed by automerge-go, messages compared byte for byte), rust (automerge-go only, engine peers too: to tell a protocol problem from an engine bug) or cut (engine, and engine peers, with MaxSendBytes 1: one change per message); default: twin for odd seeds, engine for even ones")
)

// Hub modes of a run.
const (
	hubEngine = iota // the hub is a Doc
	hubTwin          // a Doc, shadowed by an automerge-go doc: every message must be the same bytes
	hubRust          // automerge-go only (and engine peers are automerge-go peers)
)

func diffSeedCount(t *testing.T) int {
	if *diffSeeds > 0 {
		return *diffSeeds
	}
	if s := os.Getenv("PLAIT_DIFF_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("PLAIT_DIFF_SEEDS=%q: not a positive number", s)
		}
		return n
	}
	return 1000
}

// diffTotals add up over all runs.
var diffTotals struct {
	runs, msgs, bytes, changes, replays, reconnects, losses, stalls, rustStalls atomic.Int64
}

func TestDiffSync(t *testing.T) {
	if *diffSeed >= 0 {
		s := uint64(*diffSeed)
		st, err := runDiff(s, *diffHub, t.Logf)
		if err != nil {
			t.Fatalf("seed %d: %v", s, err)
		}
		t.Logf("seed %d: %s", s, st)
		return
	}
	runDiffSeeds(t, diffSeedCount(t), *diffFirst, *diffHub)
	t.Logf("%d runs: %d messages, %d bytes, %d changes, %d replayed messages, %d reconnects, %d data losses; %d runs stalled (%d of them stall with automerge-go only too)",
		diffTotals.runs.Load(), diffTotals.msgs.Load(), diffTotals.bytes.Load(), diffTotals.changes.Load(),
		diffTotals.replays.Load(), diffTotals.reconnects.Load(), diffTotals.losses.Load(),
		diffTotals.stalls.Load(), diffTotals.rustStalls.Load())
}

// runDiffSeeds runs n seeds from first with the given hub, in parallel
// groups. A run that stalls must stall with automerge-go alone too.
func runDiffSeeds(t *testing.T, n int, first uint64, hub string) {
	const group = 25
	t.Run("seeds", func(t *testing.T) {
		for g := 0; g < n; g += group {
			lo, hi := first+uint64(g), first+uint64(min(g+group, n))
			t.Run(fmt.Sprintf("%d-%d", lo, hi-1), func(t *testing.T) {
				t.Parallel()
				for s := lo; s < hi; s++ {
					st, err := runDiff(s, hub, nil)
					if err != nil {
						t.Errorf("seed %d: %v\n\trerun: go test ./pkg/syncengine -run 'TestDiffSync$' -diff.seed=%d -diff.hub=%s -v", s, err, s, hub)
						continue
					}
					if len(st.stalls) > 0 {
						// The same script with automerge-go everywhere.
						rst, rerr := runDiff(s, "rust", nil)
						diffTotals.stalls.Add(1)
						if len(rst.stalls) > 0 || rerr != nil {
							diffTotals.rustStalls.Add(1)
						}
						if len(rst.stalls) == 0 && rerr == nil {
							// The core does not stall on this script: the engine must not either.
							t.Errorf("seed %d stalled (%q) where automerge-go alone does not\n\trerun: go test ./pkg/syncengine -run 'TestDiffSync$' -diff.seed=%d -diff.hub=%s -v", s, st.stalls, s, hub)
							continue
						}
						t.Logf("seed %d stalled (%q) as automerge-go alone does (%q), then converged after fresh reconnects", s, st.stalls, rst.stalls)
					}
				}
			})
		}
	})
}

// TestDiffSyncCut runs the scripts of TestDiffSync with an engine hub and
// engine peers whose messages carry one change each (MaxSendBytes 1):
// every history that takes more than one change to send arrives in
// several messages, as the peer answers. Sync must converge as it does
// with whole messages, with any mix of peers, reconnects, replays and
// data losses.
func TestDiffSyncCut(t *testing.T) {
	runs, msgs, changes := diffTotals.runs.Load(), diffTotals.msgs.Load(), diffTotals.changes.Load()
	stalls, rustStalls := diffTotals.stalls.Load(), diffTotals.rustStalls.Load()
	// Seeds that once livelocked: 5 (a peer's Bloom filter missed changes
	// its heads show it has: resent one at a time, they made no progress)
	// and 8522 (a part the peer could not apply, never acknowledged).
	for _, seed := range []uint64{5, 8522} {
		st, err := runDiff(seed, "cut", nil)
		if err != nil || len(st.stalls) > 0 {
			t.Errorf("seed %d: %v, stalls %q", seed, err, st.stalls)
		}
	}
	runDiffSeeds(t, diffSeedCount(t)/2, *diffFirst, "cut")
	t.Logf("%d runs: %d messages, %d changes; %d runs stalled (%d of them stall with automerge-go only too)",
		diffTotals.runs.Load()-runs, diffTotals.msgs.Load()-msgs, diffTotals.changes.Load()-changes,
		diffTotals.stalls.Load()-stalls, diffTotals.rustStalls.Load()-rustStalls)
}

// dPeer is a client: an automerge-go document, synced with the hub either
// by an automerge-go SyncState (ss) or by an engine Doc and State (eng, es).
type dPeer struct {
	n   int
	gen int // incremented by a data loss: new actor
	am  *automerge.Doc
	eng *Doc
	es  *State
	ss  *automerge.SyncState

	connected bool
	conn      int    // connection number
	hs        *State // the hub's state for this peer
	up, down  [][]byte
	// Messages sent on the current connection, and on earlier ones.
	curUp, curDown   [][]byte
	histUp, histDown [][]byte
	// Saved states: the peer's (latest last), the hub's for the peer.
	savedPeer [][]byte
	savedHub  []byte
	// The automerge-go hub's state for the peer, and its saved state.
	rs        *automerge.SyncState
	savedRust []byte
}

func (p *dPeer) engine() bool { return p.eng != nil }

type dNet struct {
	seed  uint64
	r     *rand.Rand
	hub   *Doc
	opts  Options // of the hub and the engine peers
	mode  int
	rhub  *automerge.Doc // the automerge-go hub (modes twin and rust)
	err   error          // first difference between the hubs (mode twin)
	peers []*dPeer
	now   time.Time
	logf  func(string, ...any)

	msgs, bytes, replays, reconnects, losses int
}

type dStats struct {
	msgs, bytes, changes, replays, reconnects, losses int
	stalls                                            []string
}

func (s dStats) String() string {
	return fmt.Sprintf("%d messages, %d bytes, %d changes, %d replays, %d reconnects, %d losses, stalls %q",
		s.msgs, s.bytes, s.changes, s.replays, s.reconnects, s.losses, s.stalls)
}

func (nw *dNet) tracef(format string, args ...any) {
	if nw.logf != nil {
		nw.logf(format, args...)
	}
}

// shortHashes shows the first 2 bytes of each hash.
func shortHashes(hs []Hash) string {
	var b strings.Builder
	for i, h := range hs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%x", h[:2])
	}
	return b.String()
}

// traceMsg describes a message in a trace: short hashes.
func traceMsg(msg []byte) string {
	m, err := amsync.ParseMessage(msg)
	if err != nil {
		return err.Error()
	}
	short := shortHashes
	var have []string
	for _, h := range m.Have {
		entries := "?"
		if f, err := amsync.ParseBloom(h.Bloom); err == nil {
			entries = strconv.Itoa(int(f.NumEntries))
		}
		have = append(have, "lastSync["+short(h.LastSync)+"] bloom "+entries)
	}
	var chs []Hash
	for _, raw := range m.Changes {
		c, err := amsync.ParseChange(raw)
		if err != nil {
			return err.Error()
		}
		chs = append(chs, c.Hash)
	}
	return fmt.Sprintf("heads[%s] need[%s] have%v changes[%s]", short(m.Heads), short(m.Need), have, short(chs))
}

func runDiff(seed uint64, hub string, logf func(string, ...any)) (st dStats, err error) {
	defer func() {
		// automerge-go panics on some internal errors (must): report the seed.
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	r := rand.New(rand.NewPCG(seed, 0x706c616974))
	nw := &dNet{seed: seed, r: r, now: time.UnixMilli(1_700_000_000_000), logf: logf}
	switch hub {
	case "engine":
		nw.mode = hubEngine
	case "cut":
		nw.mode = hubEngine
		nw.opts.MaxSendBytes = 1
	case "twin":
		nw.mode = hubTwin
	case "rust":
		nw.mode = hubRust
	case "":
		nw.mode = hubEngine
		if seed%2 == 1 {
			nw.mode = hubTwin
		}
	default:
		return st, fmt.Errorf("-diff.hub=%q: want engine, twin or rust", hub)
	}
	nw.hub = New(nw.opts)
	if nw.mode != hubEngine {
		nw.rhub = automerge.New()
	}
	// Where the engine departs from the core on purpose (doc.go, "Where
	// the engine differs"), the twin comparison would fail: in twin mode
	// the hub behaves as the core (coreStrict, no Forget) and the peers
	// make no empty changes.
	nw.hub.coreStrict = nw.mode == hubTwin
	nPeers := 2 + r.IntN(5)
	nEngine := 0
	if r.IntN(2) == 0 {
		nEngine = 1 + r.IntN(2)
	}
	for i := 0; i < nPeers; i++ {
		p := &dPeer{n: i}
		if err := nw.reset(p, i < nEngine); err != nil {
			return st, err
		}
		nw.peers = append(nw.peers, p)
	}
	nw.tracef("seed %d: %d peers, %d engine peers, hub mode %d", seed, nPeers, nEngine, nw.mode)
	for _, p := range nw.peers {
		if r.IntN(5) != 0 {
			if err := nw.connect(p); err != nil {
				return st, err
			}
		}
	}
	steps := 10 + r.IntN(31)
	for step := 0; step < steps; step++ {
		if err := nw.step(); err != nil {
			return st, fmt.Errorf("step %d: %w", step, err)
		}
		if nw.err != nil {
			return st, fmt.Errorf("step %d: %w", step, nw.err)
		}
	}
	// Settle. A run can end quiescent but not converged, or never
	// quiescent: the Rust core does the same (see stallNote); the run
	// then records a stall, reconnects everyone with fresh states on both
	// sides (as a restarted client would) and must converge then.
	for attempt := 0; ; attempt++ {
		quiet, err := nw.settle()
		if err != nil {
			return st, err
		}
		if nw.err != nil {
			return st, nw.err
		}
		why := ""
		switch {
		case !quiet:
			why = "not quiescent after 200 rounds"
		case !nw.converged():
			why = "quiescent but not converged"
		}
		if why == "" {
			break
		}
		if attempt == 3 {
			return st, fmt.Errorf("%s, even after %d fresh reconnects", why, attempt)
		}
		st.stalls = append(st.stalls, why)
		nw.tracef("STALL: %s; everyone reconnects with fresh states", why)
		for _, p := range nw.peers {
			if err := nw.disconnect(p); err != nil {
				return st, err
			}
			p.savedHub, p.savedPeer = nil, nil
		}
	}
	if err := nw.check(); err != nil {
		return st, err
	}
	nch := nw.hub.Len()
	if nw.mode == hubRust {
		chs, _ := nw.rhub.Changes()
		nch = len(chs)
	}
	st.msgs, st.bytes, st.changes, st.replays, st.reconnects, st.losses = nw.msgs, nw.bytes, nch, nw.replays, nw.reconnects, nw.losses
	diffTotals.runs.Add(1)
	diffTotals.msgs.Add(int64(st.msgs))
	diffTotals.bytes.Add(int64(st.bytes))
	diffTotals.changes.Add(int64(st.changes))
	diffTotals.replays.Add(int64(st.replays))
	diffTotals.reconnects.Add(int64(st.reconnects))
	diffTotals.losses.Add(int64(st.losses))
	return st, nil
}

// reset gives p new, empty documents under a new actor (at the start, and
// when the peer loses its data).
func (nw *dNet) reset(p *dPeer, engine bool) error {
	p.gen++
	p.am = automerge.New()
	if err := p.am.SetActorID(fmt.Sprintf("%016x%08x%08x", nw.seed, p.n, p.gen)); err != nil {
		return err
	}
	p.eng, p.es, p.ss = nil, nil, nil
	if engine && nw.mode != hubRust {
		p.eng = New(nw.opts)
		p.es = NewState()
	} else {
		p.ss = automerge.NewSyncState(p.am)
	}
	p.savedPeer = nil
	return nil
}

func (nw *dNet) step() error {
	r := nw.r
	var conn, disc, hist []*dPeer
	for _, p := range nw.peers {
		if p.connected {
			conn = append(conn, p)
			if len(p.histUp)+len(p.histDown) > 0 {
				hist = append(hist, p)
			}
		} else {
			disc = append(disc, p)
		}
	}
	switch k := r.IntN(100); {
	case k < 20: // one edit
		return nw.edit(nw.peers[r.IntN(len(nw.peers))])
	case k < 30: // concurrent edits on several peers, then they speak
		ps := slices.Clone(nw.peers)
		r.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		ps = ps[:min(len(ps), 2+r.IntN(2))]
		for _, p := range ps {
			if err := nw.edit(p); err != nil {
				return err
			}
		}
		return nil
	case k < 66: // deliveries
		for i := 1 + r.IntN(4); i > 0; i-- {
			if err := nw.deliverOne(); err != nil {
				return err
			}
		}
		return nil
	case k < 70: // a side generates unprompted
		if len(conn) > 0 {
			p := conn[r.IntN(len(conn))]
			if r.IntN(2) == 0 {
				nw.hubGen(p)
			} else {
				return nw.peerGen(p)
			}
		}
		return nil
	case k < 77:
		if len(conn) > 0 {
			return nw.disconnect(conn[r.IntN(len(conn))])
		}
		return nil
	case k < 86:
		if len(disc) > 0 {
			return nw.connect(disc[r.IntN(len(disc))])
		}
		return nil
	case k < 98:
		if len(hist) > 0 {
			nw.replay(hist[r.IntN(len(hist))])
		}
		return nil
	default: // a peer loses everything and comes back empty
		p := nw.peers[r.IntN(len(nw.peers))]
		if p.connected {
			if err := nw.disconnect(p); err != nil {
				return err
			}
		}
		nw.losses++
		nw.tracef("peer %d loses its data", p.n)
		return nw.reset(p, p.engine())
	}
}

// edit makes one change on p, then p speaks to the hub if connected.
func (nw *dNet) edit(p *dPeer) error {
	r := nw.r
	root := p.am.RootMap()
	key := func() string { return fmt.Sprintf("k%d", r.IntN(6)) }
	for n := 1 + r.IntN(3); n > 0; n-- {
		var err error
		switch r.IntN(9) {
		case 0, 1:
			err = root.Set(key(), int64(r.IntN(1000)))
		case 2:
			err = root.Set(key(), fmt.Sprintf("s%d-%d", p.n, r.IntN(1000)))
		case 3:
			k := key()
			var v *automerge.Value
			if v, err = root.Get(k); err == nil && !v.IsVoid() {
				err = root.Delete(k)
			} else if err == nil && nw.mode == hubTwin {
				err = root.Set(k, int64(1)) // no empty change: see runDiff
			} else if err == nil {
				err = root.Set(k, int64(1))
			}
		case 4: // nested map
			var v *automerge.Value
			if v, err = diffObj(root, "m", automerge.KindMap, func() any { return automerge.NewMap() }); err == nil {
				m := v.Map()
				switch r.IntN(3) {
				case 0:
					err = m.Set(key(), []any{int64(r.IntN(10)), "x"})
				default:
					err = m.Set(key(), int64(r.IntN(1000)))
				}
			}
		case 5: // list
			var v *automerge.Value
			if v, err = diffObj(root, "l", automerge.KindList, func() any { return automerge.NewList() }); err == nil {
				l := v.List()
				if n := l.Len(); n > 0 && r.IntN(3) == 0 {
					err = l.Delete(r.IntN(n))
				} else {
					err = l.Insert(r.IntN(n+1), int64(r.IntN(1000)))
				}
			}
		case 6, 7: // text
			var v *automerge.Value
			if v, err = diffObj(root, "t", automerge.KindText, func() any { return automerge.NewText("") }); err == nil {
				tx := v.Text()
				n := tx.Len()
				pos := r.IntN(n + 1)
				del := 0
				if pos < n && r.IntN(3) == 0 {
					del = 1 + r.IntN(min(3, n-pos))
				}
				err = tx.Splice(pos, del, string(rune('a'+p.n))+strconv.Itoa(r.IntN(10)))
			}
		case 8: // counter
			var v *automerge.Value
			if v, err = root.Get("c"); err == nil {
				if v.Kind() == automerge.KindCounter {
					err = v.Counter().Inc(int64(r.IntN(7) - 3))
				} else {
					err = root.Set("c", automerge.NewCounter(int64(r.IntN(5))))
				}
			}
		}
		if err != nil {
			return fmt.Errorf("peer %d edit: %w", p.n, err)
		}
	}
	nw.now = nw.now.Add(time.Millisecond)
	now := nw.now
	h, err := p.am.Commit("", automerge.CommitOptions{AllowEmpty: true, Time: &now})
	if err != nil {
		return fmt.Errorf("peer %d commit: %w", p.n, err)
	}
	nw.tracef("peer %d commits %x", p.n, h[:2])
	if p.engine() {
		ch, err := p.am.Change(h)
		if err != nil {
			return err
		}
		applied, err := p.eng.AddChanges("local", ch.Save())
		if err != nil {
			return fmt.Errorf("engine peer %d refused its own change: %w", p.n, err)
		}
		if len(applied) != 1 || applied[0].Hash != Hash(h) {
			return fmt.Errorf("engine peer %d: AddChanges of its own change applied %d changes", p.n, len(applied))
		}
	}
	if p.connected && nw.r.IntN(4) != 0 {
		return nw.peerGen(p)
	}
	return nil
}

// diffObj returns the object of kind k at root[key], creating it if the
// key holds something else.
func diffObj(root *automerge.Map, key string, k automerge.Kind, mk func() any) (*automerge.Value, error) {
	v, err := root.Get(key)
	if err != nil || v.Kind() == k {
		return v, err
	}
	if err := root.Set(key, mk()); err != nil {
		return nil, err
	}
	return root.Get(key)
}

func (nw *dNet) send(p *dPeer, q, cur *[][]byte, msg []byte) {
	*q = append(*q, msg)
	*cur = append(*cur, msg)
	if nw.logf != nil {
		dir := "hub -> peer"
		if q == &p.up {
			dir = "hub <- peer"
		}
		nw.tracef("  %s %d sends %s", dir, p.n, traceMsg(msg))
	}
	nw.msgs++
	nw.bytes += len(msg)
}

func (nw *dNet) hubGen(p *dPeer) {
	var msg []byte
	if nw.mode != hubRust {
		msg = nw.hub.GenerateMessage(p.hs)
	}
	if nw.rhub != nil {
		var rmsg []byte
		if sm, ok := p.rs.GenerateMessage(); ok {
			rmsg = sm.Bytes()
		}
		if nw.mode == hubRust {
			msg = rmsg
		} else if !bytes.Equal(msg, rmsg) && nw.err == nil {
			nw.err = fmt.Errorf("hub -> peer %d: the engine's message differs from automerge-go's:\nengine %s\nrust   %s", p.n, traceMsg(msg), traceMsg(rmsg))
		}
	}
	if msg != nil {
		nw.send(p, &p.down, &p.curDown, msg)
	}
}

func (nw *dNet) peerGen(p *dPeer) error {
	var msg []byte
	if p.engine() {
		msg = p.eng.GenerateMessage(p.es)
	} else if sm, ok := p.ss.GenerateMessage(); ok {
		msg = sm.Bytes()
	}
	if msg != nil {
		nw.send(p, &p.up, &p.curUp, msg)
	}
	return nil
}

// deliverOne delivers the first message of a random non-empty queue.
func (nw *dNet) deliverOne() error {
	type q struct {
		p  *dPeer
		up bool
	}
	var qs []q
	for _, p := range nw.peers {
		if len(p.up) > 0 {
			qs = append(qs, q{p, true})
		}
		if len(p.down) > 0 {
			qs = append(qs, q{p, false})
		}
	}
	if len(qs) == 0 {
		return nil
	}
	c := qs[nw.r.IntN(len(qs))]
	if c.up {
		return nw.deliverUp(c.p)
	}
	return nw.deliverDown(c.p)
}

func (nw *dNet) deliverUp(p *dPeer) error {
	msg := p.up[0]
	p.up = p.up[1:]
	var applied []*amsync.Change
	if nw.mode != hubRust {
		var err error
		if applied, err = nw.hub.ReceiveMessage(p.hs, msg, p); err != nil {
			return fmt.Errorf("hub refused a message of peer %d: %w", p.n, err)
		}
	}
	if nw.rhub != nil {
		before := nw.rhub.Heads()
		if _, err := p.rs.ReceiveMessage(msg); err != nil {
			return fmt.Errorf("automerge-go hub refused a message of peer %d: %w", p.n, err)
		}
		if nw.mode == hubRust {
			if !slices.Equal(before, nw.rhub.Heads()) {
				applied = make([]*amsync.Change, 1) // (only counted)
			}
		} else if got, want := nw.hub.Heads(), hashes(nw.rhub.Heads()); !slices.Equal(got, want) && nw.err == nil {
			nw.err = fmt.Errorf("hub <- peer %d: engine heads %x, automerge-go %x", p.n, got, want)
		}
	}
	nw.tracef("hub <- peer %d: %d bytes, %d applied", p.n, len(msg), len(applied))
	nw.hubGen(p)
	if len(applied) > 0 {
		for _, o := range nw.peers {
			if o != p && o.connected {
				nw.hubGen(o)
			}
		}
	}
	return nil
}

func (nw *dNet) deliverDown(p *dPeer) error {
	msg := p.down[0]
	p.down = p.down[1:]
	if p.engine() {
		applied, err := p.eng.ReceiveMessage(p.es, msg, "hub")
		if err != nil {
			return fmt.Errorf("engine peer %d refused a hub message: %w", p.n, err)
		}
		if len(applied) > 0 {
			var raw []byte
			for _, c := range applied {
				raw = append(raw, c.Raw...)
			}
			if err := p.am.LoadIncremental(raw); err != nil {
				return fmt.Errorf("engine peer %d: automerge-go refused the applied changes: %w", p.n, err)
			}
		}
		nw.tracef("peer %d (engine) <- hub: %d bytes, %d applied", p.n, len(msg), len(applied))
	} else {
		if _, err := p.ss.ReceiveMessage(msg); err != nil {
			return fmt.Errorf("automerge-go peer %d refused a hub message: %w", p.n, err)
		}
		nw.tracef("peer %d <- hub: %d bytes", p.n, len(msg))
	}
	return nw.peerGen(p)
}

// connect opens a connection, each side with a fresh or a saved state.
func (nw *dNet) connect(p *dPeer) error {
	r := nw.r
	p.connected = true
	p.conn++
	nw.reconnects++
	hubMode, peerMode := "fresh", "fresh"
	p.hs = NewState()
	if p.savedHub != nil && r.IntN(3) != 0 {
		s, err := DecodeState(p.savedHub)
		if err != nil {
			return fmt.Errorf("hub state of peer %d: %w", p.n, err)
		}
		p.hs, hubMode = s, "saved"
		if nw.rhub != nil {
			if p.rs, err = automerge.LoadSyncState(nw.rhub, p.savedRust); err != nil {
				return fmt.Errorf("automerge-go hub state of peer %d: %w", p.n, err)
			}
		}
	} else if nw.rhub != nil {
		p.rs = automerge.NewSyncState(nw.rhub)
	}
	var saved []byte
	if n := len(p.savedPeer); n > 0 && r.IntN(3) != 0 {
		saved, peerMode = p.savedPeer[n-1], "saved"
		if n > 1 && r.IntN(4) == 0 {
			saved, peerMode = p.savedPeer[r.IntN(n-1)], "older saved"
		}
	}
	if p.engine() {
		p.es = NewState()
		if saved != nil {
			s, err := DecodeState(saved)
			if err != nil {
				return fmt.Errorf("engine peer %d state: %w", p.n, err)
			}
			p.es = s
		}
	} else {
		p.ss = automerge.NewSyncState(p.am)
		if saved != nil {
			s, err := automerge.LoadSyncState(p.am, saved)
			if err != nil {
				return fmt.Errorf("peer %d state: %w", p.n, err)
			}
			p.ss = s
		}
	}
	nw.tracef("peer %d connects (#%d): hub state %s, peer state %s", p.n, p.conn, hubMode, peerMode)
	if r.IntN(2) == 0 {
		nw.hubGen(p)
		return nw.peerGen(p)
	}
	if err := nw.peerGen(p); err != nil {
		return err
	}
	nw.hubGen(p)
	return nil
}

// disconnect drops both queues; each side saves its state.
func (nw *dNet) disconnect(p *dPeer) error {
	nw.tracef("peer %d disconnects, %d+%d messages lost", p.n, len(p.up), len(p.down))
	p.connected = false
	p.savedHub = p.hs.Encode()
	if nw.rhub != nil {
		p.savedRust = p.rs.Save()
		if nw.mode == hubTwin && !bytes.Equal(p.savedHub, p.savedRust) && nw.err == nil {
			nw.err = fmt.Errorf("hub's saved state for peer %d: engine %x, automerge-go %x", p.n, p.savedHub, p.savedRust)
		}
	}
	if p.engine() {
		p.savedPeer = append(p.savedPeer, p.es.Encode())
		p.eng.Forget("hub")
	} else {
		p.savedPeer = append(p.savedPeer, p.ss.Save())
	}
	if nw.mode != hubTwin {
		nw.hub.Forget(p)
	}
	p.histUp = append(p.histUp, p.curUp...)
	p.histDown = append(p.histDown, p.curDown...)
	p.up, p.down, p.curUp, p.curDown, p.hs = nil, nil, nil, nil, nil
	return nil
}

// replay puts copies of messages of earlier connections into the current
// one's queues, at random places, in random order.
func (nw *dNet) replay(p *dPeer) {
	r := nw.r
	for n := 1 + r.IntN(3); n > 0; n-- {
		q, hist := &p.up, p.histUp
		if r.IntN(2) == 0 {
			q, hist = &p.down, p.histDown
		}
		if len(hist) == 0 {
			continue
		}
		msg := hist[r.IntN(len(hist))]
		*q = slices.Insert(*q, r.IntN(len(*q)+1), msg)
		nw.replays++
		if nw.logf != nil {
			nw.tracef("replay on peer %d's connection (up %v): %s", p.n, q == &p.up, traceMsg(msg))
		}
	}
}

// settle reconnects everyone and syncs until nothing moves.
func (nw *dNet) settle() (quiet bool, err error) {
	for _, p := range nw.peers {
		if !p.connected {
			if err := nw.connect(p); err != nil {
				return false, err
			}
		}
	}
	for round := 0; round < 200; round++ {
		moved := false
		n := 0
		for _, p := range nw.peers {
			n += len(p.up) + len(p.down)
		}
		for ; n > 0; n-- {
			if err := nw.deliverOne(); err != nil {
				return false, fmt.Errorf("settle round %d: %w", round, err)
			}
			moved = true
		}
		before := nw.msgs
		for _, p := range nw.peers {
			nw.hubGen(p)
			if err := nw.peerGen(p); err != nil {
				return false, err
			}
		}
		if nw.msgs != before {
			moved = true
		}
		if !moved {
			return true, nil
		}
	}
	return false, nil
}

// converged reports whether every peer has the hub's heads and nothing is
// queued.
func (nw *dNet) converged() bool {
	var want []Hash
	if nw.mode == hubRust {
		want = hashes(nw.rhub.Heads())
	} else {
		if nw.hub.Queued() != 0 && !nw.orphaned() {
			return false
		}
		want = nw.hub.Heads()
	}
	for _, p := range nw.peers {
		if !slices.Equal(hashes(p.am.Heads()), want) || p.engine() && (p.eng.Queued() != 0 || !slices.Equal(p.eng.Heads(), want)) {
			return false
		}
	}
	return true
}

// orphaned reports whether every change the hub still queues waits for a
// dependency that no peer has: its author lost its data before sending it
// (a replayed message brought the change back). Nobody can complete such
// a change; it stays queued until the peer that sent it leaves (Forget),
// and it does not keep anyone from converging.
func (nw *dNet) orphaned() bool {
	for _, qc := range nw.hub.queue {
		for _, dep := range qc.c.Deps {
			if nw.hub.Has(dep) || nw.hub.queue[dep] != nil {
				continue
			}
			for _, p := range nw.peers {
				if _, err := p.am.Change(automerge.ChangeHash(dep)); err == nil {
					return false
				}
			}
		}
	}
	return true
}

func (nw *dNet) check() error {
	if nw.mode == hubRust {
		return nw.checkPeers(hashes(nw.rhub.Heads()), nw.rhub, -1)
	}
	want := nw.hub.Heads()
	if q := nw.hub.Queued(); q != 0 && !nw.orphaned() {
		var desc []string
		for h, qc := range nw.hub.queue {
			var missing []string
			for _, dep := range qc.c.Deps {
				if !nw.hub.Has(dep) {
					missing = append(missing, fmt.Sprintf("%x", dep[:2]))
				}
			}
			desc = append(desc, fmt.Sprintf("%x (missing deps %v)", h[:2], missing))
		}
		return fmt.Errorf("hub still has %d queued changes: %v; hub heads %s", q, desc, shortHashes(nw.hub.Heads()))
	}
	var all []byte
	nw.hub.All(func(raw []byte) bool { all = append(all, raw...); return true })
	doc, err := automerge.Load(all)
	if err != nil {
		return fmt.Errorf("automerge-go does not load the hub's changes: %w", err)
	}
	if got := hashes(doc.Heads()); !slices.Equal(got, want) {
		return fmt.Errorf("hub's changes load with heads %x, hub has %x", got, want)
	}
	if nw.rhub != nil {
		if got := hashes(nw.rhub.Heads()); !slices.Equal(got, want) {
			return fmt.Errorf("automerge-go hub has heads %x, engine hub %x", got, want)
		}
	}
	return nw.checkPeers(want, doc, nw.hub.Len())
}

// checkPeers compares every peer with the hub: its heads, and its content
// with that of hubDoc. hubLen is the number of the hub's changes (-1: not
// checked).
func (nw *dNet) checkPeers(want []Hash, hubDoc *automerge.Doc, hubLen int) error {
	doc := hubDoc
	hubContent, err := diffDump(doc)
	if err != nil {
		return err
	}
	for _, p := range nw.peers {
		if got := hashes(p.am.Heads()); !slices.Equal(got, want) {
			return fmt.Errorf("peer %d (engine %v) has heads [%s], hub [%s]", p.n, p.engine(), shortHashes(got), shortHashes(want))
		}
		if p.engine() {
			if got := p.eng.Heads(); !slices.Equal(got, want) {
				return fmt.Errorf("engine peer %d: Doc heads %x, hub %x", p.n, got, want)
			}
			if p.eng.Len() != hubLen || p.eng.Queued() != 0 {
				return fmt.Errorf("engine peer %d: %d changes (%d queued), hub %d", p.n, p.eng.Len(), p.eng.Queued(), hubLen)
			}
		}
		c, err := diffDump(p.am)
		if err != nil {
			return err
		}
		if c != hubContent {
			return fmt.Errorf("peer %d content differs:\npeer %s\nhub  %s", p.n, c, hubContent)
		}
	}
	return nil
}

// diffDump is a deterministic rendering of a document's content.
func diffDump(d *automerge.Doc) (string, error) {
	var b strings.Builder
	err := dumpValue(&b, d.Root())
	return b.String(), err
}

func dumpValue(b *strings.Builder, v *automerge.Value) error {
	switch v.Kind() {
	case automerge.KindMap:
		vals, err := v.Map().Values()
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(vals))
		for k := range vals {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("{")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(b, "%q:", k)
			if err := dumpValue(b, vals[k]); err != nil {
				return err
			}
		}
		b.WriteString("}")
	case automerge.KindList:
		vals, err := v.List().Values()
		if err != nil {
			return err
		}
		b.WriteString("[")
		for i, e := range vals {
			if i > 0 {
				b.WriteString(",")
			}
			if err := dumpValue(b, e); err != nil {
				return err
			}
		}
		b.WriteString("]")
	case automerge.KindText:
		s, err := v.Text().Get()
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "text(%q)", s)
	case automerge.KindCounter:
		n, err := v.Counter().Get()
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "counter(%d)", n)
	case automerge.KindStr:
		fmt.Fprintf(b, "%q", v.Str())
	case automerge.KindInt64:
		fmt.Fprintf(b, "int(%d)", v.Int64())
	default:
		fmt.Fprintf(b, "%v(%v)", v.Kind(), v.Interface())
	}
	return nil
}

// TestDiffWalks compares changesSince and removeAncestors with brute force
// on random DAGs of automerge-go changes from several actors, applied to
// the Doc in random orders (so that indexes are one topological order
// among many).
func TestDiffWalks(t *testing.T) {
	dags := 100
	if testing.Short() {
		dags = 20
	}
	for seed := uint64(0); seed < uint64(dags); seed++ {
		if err := walkCase(seed); err != nil {
			t.Fatalf("dag seed %d: %v", seed, err)
		}
	}
}

func walkCase(seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 0x77616c6b))
	nActors := 2 + r.IntN(3)
	docs := make([]*automerge.Doc, nActors)
	for i := range docs {
		docs[i] = automerge.New()
		if err := docs[i].SetActorID(fmt.Sprintf("%016x%016x", seed, i)); err != nil {
			return err
		}
	}
	now := time.UnixMilli(1_700_000_000_000)
	for step := 10 + r.IntN(50); step > 0; step-- {
		i := r.IntN(nActors)
		d := docs[i]
		if r.IntN(4) == 0 {
			// (merging a doc into itself deadlocks automerge-go)
			if _, err := d.Merge(docs[(i+1+r.IntN(nActors-1))%nActors]); err != nil {
				return err
			}
			continue
		}
		if err := d.RootMap().Set(fmt.Sprintf("k%d", r.IntN(5)), int64(step)); err != nil {
			return err
		}
		now = now.Add(time.Millisecond)
		if _, err := d.Commit("", automerge.CommitOptions{Time: &now}); err != nil {
			return err
		}
	}
	union := automerge.New()
	for _, d := range docs {
		if _, err := union.Merge(d); err != nil {
			return err
		}
	}
	chs, err := union.Changes()
	if err != nil {
		return err
	}
	deps := make(map[Hash][]Hash, len(chs))
	var all []Hash
	raws := make([][]byte, len(chs))
	for i, c := range chs {
		h := Hash(c.Hash())
		all = append(all, h)
		for _, dep := range c.Dependencies() {
			deps[h] = append(deps[h], Hash(dep))
		}
		raws[i] = c.Save()
	}
	// Apply in a random topological order (random among the ready
	// changes), so that indexes are one topological order among many.
	// (Not through the queue: see TestDiffQueuedTwoMissingDeps.)
	d := New(Options{})
	byHash := make(map[Hash][]byte, len(raws))
	for i, c := range chs {
		byHash[Hash(c.Hash())] = raws[i]
	}
	done := make(map[Hash]bool)
	for len(done) < len(all) {
		var ready []Hash
		for _, h := range all {
			if done[h] {
				continue
			}
			ok := true
			for _, dep := range deps[h] {
				ok = ok && done[dep]
			}
			if ok {
				ready = append(ready, h)
			}
		}
		h := ready[r.IntN(len(ready))]
		if _, err := d.AddChanges("x", byHash[h]); err != nil {
			return err
		}
		done[h] = true
	}
	if d.Len() != len(all) || d.Queued() != 0 {
		return fmt.Errorf("doc has %d changes (%d queued), want %d", d.Len(), d.Queued(), len(all))
	}
	if got := hashes(union.Heads()); !slices.Equal(got, d.Heads()) {
		return fmt.Errorf("heads %x, automerge-go %x", d.Heads(), got)
	}
	ancestors := func(x []Hash) map[Hash]bool {
		seen := make(map[Hash]bool)
		stack := slices.Clone(x)
		for len(stack) > 0 {
			h := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if _, known := deps[h]; !known && !slices.Contains(all, h) {
				continue
			}
			if seen[h] {
				continue
			}
			seen[h] = true
			stack = append(stack, deps[h]...)
		}
		return seen
	}
	unknown := Hash{0xde, 0xad, byte(seed)}
	for q := 0; q < 50; q++ {
		var x []Hash
		for n := r.IntN(5); n > 0; n-- {
			x = append(x, all[r.IntN(len(all))])
		}
		if r.IntN(6) == 0 {
			x = append(x, unknown)
		}
		anc := ancestors(x)

		got := d.changesSince(x)
		for k := 1; k < len(got); k++ {
			if got[k-1] >= got[k] {
				return fmt.Errorf("changesSince(%x): indexes not increasing: %v", x, got)
			}
		}
		gotSet := make(map[Hash]bool)
		for _, i := range got {
			gotSet[d.nodes[i].hash] = true
		}
		for _, h := range all {
			if want := !anc[h]; gotSet[h] != want {
				return fmt.Errorf("changesSince(%x): change %x included %v, want %v", x, h, gotSet[h], want)
			}
		}
		if len(gotSet) != len(got) {
			return fmt.Errorf("changesSince(%x): duplicates in %v", x, got)
		}

		set := make(map[Hash]struct{})
		for _, h := range all {
			if r.IntN(3) == 0 {
				set[h] = struct{}{}
			}
		}
		if r.IntN(4) == 0 {
			set[Hash{0xbe, 0xef}] = struct{}{}
		}
		want := make(map[Hash]struct{})
		for h := range set {
			if !anc[h] {
				want[h] = struct{}{}
			}
		}
		before := len(set)
		d.removeAncestors(x, set)
		if len(set) != len(want) {
			return fmt.Errorf("removeAncestors(%x): %d of %d left, want %d", x, len(set), before, len(want))
		}
		for h := range want {
			if _, ok := set[h]; !ok {
				return fmt.Errorf("removeAncestors(%x) removed %x, not an ancestor", x, h)
			}
		}
	}
	return nil
}

// TestDiffQueuedTwoMissingDeps: a change queued for two missing
// dependencies must be applied once both arrive, in separate calls.
// (Found by TestDiffWalks.)
func TestDiffQueuedTwoMissingDeps(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	a, b := automerge.New(), automerge.New()
	if err := a.SetActorID("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"); err != nil {
		t.Fatal(err)
	}
	if err := b.SetActorID("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"); err != nil {
		t.Fatal(err)
	}
	commit := func(d *automerge.Doc, k string) []byte {
		if err := d.RootMap().Set(k, int64(1)); err != nil {
			t.Fatal(err)
		}
		h, err := d.Commit("", automerge.CommitOptions{Time: &now})
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.Change(h)
		if err != nil {
			t.Fatal(err)
		}
		return c.Save()
	}
	ca, cb := commit(a, "a"), commit(b, "b")
	if _, err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	cc := commit(a, "c") // depends on ca and cb
	for _, order := range [][2][]byte{{ca, cb}, {cb, ca}} {
		d := New(Options{})
		for _, raw := range [][]byte{cc, order[0], order[1]} {
			if _, err := d.AddChanges("x", raw); err != nil {
				t.Fatal(err)
			}
		}
		if d.Len() != 3 || d.Queued() != 0 {
			t.Errorf("after c, then its deps one by one: %d changes applied, %d queued; want 3, 0", d.Len(), d.Queued())
		}
	}
}
