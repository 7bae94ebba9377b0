package syncengine

// Fuzz targets of the engine's untrusted inputs: sync messages from peers
// and stored sync states.
//
//	go test -run '^$' -fuzz FuzzReceiveMessage -fuzztime 60s ./pkg/syncengine
//	go test -run '^$' -fuzz FuzzDecodeState -fuzztime 60s ./pkg/syncengine

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

// fzBase is the document the fuzzed messages are sent to, built once by a
// small automerge-go session (deterministic: fixed actors and times, so
// that a crasher reproduces), and the real messages of that session.
type fzBase struct {
	base    [][]byte // the document: changes of A and B, maps, text, list, counter
	held    [][]byte // a1, a2 (A), b1 (B): not in base; a2 depends on a1
	partial []byte   // the first message of a peer that has half of base
	actorB  []byte
	seeds   [][]byte
	execs   int
}

var (
	fzOnce sync.Once
	fzB    *fzBase
	fzErr  error
)

// fzPeer is an automerge-go peer with a fixed actor and clock.
type fzPeer struct {
	*amPeer
	when time.Time
}

func newFZPeer(tb testing.TB, actor string) *fzPeer {
	p := &fzPeer{amPeer: newAMPeer(tb), when: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := p.doc.SetActorID(actor); err != nil {
		tb.Fatal(err)
	}
	return p
}

func (p *fzPeer) commit(tb testing.TB, edit func(root *automerge.Map) error) {
	tb.Helper()
	if err := edit(p.doc.RootMap()); err != nil {
		tb.Fatal(err)
	}
	p.when = p.when.Add(time.Minute)
	if _, err := p.doc.Commit("", automerge.CommitOptions{Time: &p.when}); err != nil {
		tb.Fatal(err)
	}
}

// fzSync is syncPair, recording the messages both ways.
func fzSync(tb testing.TB, d *Doc, p *fzPeer, rec *[][]byte) {
	tb.Helper()
	for round := 0; round < 100; round++ {
		quiet := true
		if sm, ok := p.ss.GenerateMessage(); ok {
			quiet = false
			*rec = append(*rec, sm.Bytes())
			if _, err := d.ReceiveMessage(p.es, sm.Bytes(), p); err != nil {
				tb.Fatalf("engine refused a message: %v", err)
			}
		}
		if msg := d.GenerateMessage(p.es); msg != nil {
			quiet = false
			*rec = append(*rec, msg)
			if _, err := p.ss.ReceiveMessage(msg); err != nil {
				tb.Fatalf("automerge-go refused an engine message: %v", err)
			}
		}
		if quiet {
			return
		}
	}
	tb.Fatal("sync did not settle")
}

func fzText(root *automerge.Map, key string) (*automerge.Text, error) {
	v, err := root.Get(key)
	if err != nil {
		return nil, err
	}
	return v.Text(), nil
}

func fzList(root *automerge.Map, key string) (*automerge.List, error) {
	v, err := root.Get(key)
	if err != nil {
		return nil, err
	}
	return v.List(), nil
}

func buildFZBase(tb testing.TB) *fzBase {
	const actorA, actorB = "aaaa0000aaaa0000aaaa0000aaaa0000", "bbbb0000bbbb0000bbbb0000bbbb0000"
	fb := &fzBase{actorB: mustActor(tb, actorB)}
	d := New(Options{})
	a, b := newFZPeer(tb, actorA), newFZPeer(tb, actorB)
	var rec [][]byte
	a.commit(tb, func(r *automerge.Map) error {
		if err := r.Set("title", "fuzz"); err != nil {
			return err
		}
		if err := r.Set("text", automerge.NewText("hello")); err != nil {
			return err
		}
		if err := r.Set("n", automerge.NewCounter(1)); err != nil {
			return err
		}
		return r.Set("list", automerge.NewList())
	})
	fzSync(tb, d, a, &rec)
	fzSync(tb, d, b, &rec)
	for i := 0; i < 6; i++ {
		a.commit(tb, func(r *automerge.Map) error {
			t, err := fzText(r, "text")
			if err != nil {
				return err
			}
			if err := t.Insert(i, string(rune('A'+i))); err != nil {
				return err
			}
			return r.Set(fmt.Sprintf("a%d", i%3), int64(i))
		})
		b.commit(tb, func(r *automerge.Map) error {
			l, err := fzList(r, "list")
			if err != nil {
				return err
			}
			if err := l.Append(int64(i), "x", 2.5, true, []byte{byte(i)}); err != nil {
				return err
			}
			if i%2 == 1 {
				if err := l.Delete(0); err != nil {
					return err
				}
				t, err := fzText(r, "text")
				if err != nil {
					return err
				}
				if err := t.Delete(0, 1); err != nil {
					return err
				}
			}
			if err := r.Set("sub", automerge.NewMap()); err != nil {
				return err
			}
			return r.Set("title", fmt.Sprintf("b%d", i))
		})
		fzSync(tb, d, a, &rec)
		fzSync(tb, d, b, &rec)
	}
	fzSync(tb, d, a, &rec)
	d.All(func(raw []byte) bool { fb.base = append(fb.base, raw); return true })

	// The held-back changes, and the messages that carry them.
	a.commit(tb, func(r *automerge.Map) error { return r.Set("late", "a1") })
	a.commit(tb, func(r *automerge.Map) error {
		t, err := fzText(r, "text")
		if err != nil {
			return err
		}
		return t.Insert(0, "a2")
	})
	b.commit(tb, func(r *automerge.Map) error {
		l, err := fzList(r, "list")
		if err != nil {
			return err
		}
		return l.Insert(0, "b1")
	})
	for _, p := range []*fzPeer{a, b} {
		chs, err := p.doc.Changes(hashesAM(d.Heads())...)
		if err != nil {
			tb.Fatal(err)
		}
		for _, c := range chs {
			fb.held = append(fb.held, c.Save())
		}
	}
	if len(fb.held) != 3 {
		tb.Fatalf("%d held changes, want 3", len(fb.held))
	}
	fzSync(tb, d, a, &rec)
	fzSync(tb, d, b, &rec)
	fzSync(tb, d, a, &rec)

	// A peer that has half of the document, and a peer that has nothing.
	half, err := automerge.Load(slices.Concat(fb.base[:len(fb.base)/2]...))
	if err != nil {
		tb.Fatal(err)
	}
	hs := automerge.NewSyncState(half)
	m, _ := hs.GenerateMessage()
	fb.partial = m.Bytes()
	rec = append(rec, fb.partial)
	empty := automerge.NewSyncState(automerge.New())
	m, _ = empty.GenerateMessage()
	rec = append(rec, m.Bytes())
	// The engine's answers to both, from the base document.
	for _, first := range [][]byte{fb.partial, m.Bytes()} {
		e := fzDoc(tb, fb, Options{})
		s := NewState()
		rec = append(rec, e.GenerateMessage(s))
		if _, err := e.ReceiveMessage(s, first, nil); err != nil {
			tb.Fatal(err)
		}
		rec = append(rec, e.GenerateMessage(s))
	}

	// Crafted messages: held changes in and out of order, need, have.
	h := func(raw []byte) Hash {
		c, err := amsync.ParseChange(raw)
		if err != nil {
			tb.Fatal(err)
		}
		return c.Hash
	}
	a1, a2, b1 := fb.held[0], fb.held[1], fb.held[2]
	bloom := amsync.NewBloom([]Hash{h(a1), h(a2)}).Encode()
	for _, m := range []amsync.Message{
		{Heads: []Hash{h(a2)}, Changes: [][]byte{a1, a2}},
		{Heads: []Hash{h(a2)}, Changes: [][]byte{a2}},
		{Heads: sortedUnique([]Hash{h(a2), h(b1)}), Changes: [][]byte{b1, a2}},
		{Heads: []Hash{h(a1)}, Need: []Hash{h(fb.base[3])}, Have: []amsync.Have{{LastSync: []Hash{h(fb.base[2])}, Bloom: bloom}}},
		{Heads: nil, Have: []amsync.Have{{}}},
		{Heads: []Hash{h(b1)}, Have: []amsync.Have{{LastSync: []Hash{h(b1)}}}},
		{Have: []amsync.Have{{LastSync: []Hash{h(fb.base[1])}}, {LastSync: []Hash{h(fb.base[4])}, Bloom: bloom}}},
	} {
		m.Type = amsync.MessageTypeSync
		rec = append(rec, m.Encode())
	}
	// What @automerge/automerge 3.5 sends: a 0x42 message plus a flags trailer.
	rec = append(rec, append(slices.Clone(rec[0]), 0x02, 0x02, 0x84))
	fb.seeds = rec
	return fb
}

func hashesAM(hs []Hash) []automerge.ChangeHash {
	out := make([]automerge.ChangeHash, len(hs))
	for i, h := range hs {
		out[i] = automerge.ChangeHash(h)
	}
	return out
}

func getFZBase(tb testing.TB) *fzBase {
	fzOnce.Do(func() {
		defer func() {
			if fzB == nil && fzErr == nil {
				fzErr = errors.New("building the fuzz base failed")
			}
		}()
		fzB = buildFZBase(tb)
	})
	if fzB == nil {
		tb.Fatal(fzErr)
	}
	return fzB
}

// fzDoc returns a new Doc holding the base document.
func fzDoc(tb testing.TB, fb *fzBase, opts Options) *Doc {
	d := New(opts)
	if _, err := d.AddChanges(nil, fb.base...); err != nil {
		tb.Fatal(err)
	}
	return d
}

// Modes of FuzzReceiveMessage: bits of its first argument.
const (
	fzMidSync  = 1 << iota // the State has sent changes (in flight) to a peer that has half the document
	fzQueued               // a2 waits in the queue for a1
	fzChecksum             // fix the checksums of the message's change chunks
	fzRefuseB              // Options.Accept refuses B's changes from the peer
	fzBody                 // the input is the body of one change (header and checksum made for it), sent in a message
	fzCompress             // compress the message's uncompressed change chunks (type 2 chunks, as stored ones may be)
	fzTight                // tight bounds (fzTightOpts): lists, Bloom filters, inflating, document size, sending
	fzModes    = 1<<iota - 1
)

// fzTightOpts are the bounds of mode fzTight, small enough for fuzzed
// messages to reach them. MaxBytes is set in fzSetup, above the base.
var fzTightOpts = Options{MaxHashes: 4, MaxHaves: 2, MaxBloomBytes: 64, MaxInflatedBytes: 2048, MaxSendBytes: 256}

// fzTightRoom is how many bytes mode fzTight lets the document grow.
const fzTightRoom = 2048

// fzSetup builds the Doc and State a fuzzed message is received with.
func fzSetup(t *testing.T, fb *fzBase, mode uint8) (*Doc, *State) {
	var opts Options
	if mode&fzTight != 0 {
		opts = fzTightOpts
		opts.MaxBytes = len(slices.Concat(fb.base...)) + fzTightRoom
	}
	if mode&fzRefuseB != 0 {
		opts.Accept = func(c *amsync.Change, origin any) error {
			if origin == "peer" && bytes.Equal(c.Actor, fb.actorB) {
				return errors.New("B is a viewer")
			}
			return nil
		}
	}
	d := fzDoc(t, fb, opts)
	s := NewState()
	if mode&fzMidSync != 0 {
		if _, err := d.ReceiveMessage(s, fb.partial, "setup"); err != nil {
			t.Fatal(err)
		}
		if d.GenerateMessage(s) == nil || !s.InFlight() {
			t.Fatal("no changes in flight")
		}
	}
	if mode&fzQueued != 0 {
		if _, err := d.AddChanges("setup", fb.held[1]); err != nil {
			t.Fatal(err)
		}
		if d.Queued() != 1 {
			t.Fatalf("%d queued, want 1", d.Queued())
		}
	}
	return d, s
}

// fzSnap is what the public API shows of a Doc and a State.
func fzSnap(d *Doc, s *State) string {
	var all []byte
	d.All(func(raw []byte) bool { all = append(all, raw...); return true })
	th, ok := s.TheirHeads()
	return fmt.Sprintf("heads %x len %d queued %d dropped %d all %x | state %x their %v %x inflight %v",
		d.Heads(), d.Len(), d.Queued(), d.Dropped(), sha256.Sum256(all), s.Encode(), ok, th, s.InFlight())
}

// fzFixChecksums rewrites the checksum of each uncompressed change chunk
// of a sync message to match its contents (as a hostile peer would), so
// that the fuzzer gets past the checksum to the change's fields and ops.
// The rest of the message is kept as is (a trailer included).
func fzFixChecksums(data []byte) []byte {
	m, err := amsync.ParseMessage(data)
	if err != nil {
		return data
	}
	out := slices.Clone(data)
	for _, c := range m.Changes {
		if len(c) < 10 || c[8] != 1 {
			continue
		}
		off := bytes.Index(out, c)
		if off < 0 {
			continue
		}
		sum := sha256.Sum256(c[8:])
		copy(out[off+4:off+8], sum[:4])
	}
	return out
}

// fzCompress compresses the uncompressed change chunks of a sync message
// (as compressChunk does), keeping the rest of it.
func fzCompressChunks(t testing.TB, data []byte) []byte {
	m, err := amsync.ParseMessage(data)
	if err != nil {
		return data
	}
	for i, c := range m.Changes {
		if len(c) < 11 || !bytes.Equal(c[:4], []byte{0x85, 0x6f, 0x4a, 0x83}) || c[8] != 1 {
			continue
		}
		n, k := binary.Uvarint(c[9:])
		if k <= 0 || n != uint64(len(c)-9-k) {
			continue
		}
		m.Changes[i] = compressChunk(t, c)
	}
	return m.Encode()
}

// fzChunkBody returns the body of an uncompressed change chunk.
func fzChunkBody(raw []byte) []byte {
	i := 9
	for i < len(raw) && raw[i]&0x80 != 0 {
		i++
	}
	return raw[i+1:]
}

// fzBodyMessage wraps a change body into a change chunk with the right
// length and checksum, in a sync message: what a hostile peer that
// computes checksums sends, so that the fuzzer works on the change's
// fields and ops rather than on its envelope.
func fzBodyMessage(body []byte) []byte {
	hdr := binary.AppendUvarint([]byte{1}, uint64(len(body)))
	sum := sha256.Sum256(slices.Concat(hdr, body))
	chunk := slices.Concat([]byte{0x85, 0x6f, 0x4a, 0x83}, sum[:4], hdr, body)
	var h Hash
	copy(h[:], sum[:])
	m := amsync.Message{Type: amsync.MessageTypeSync, Heads: []Hash{h}, Changes: [][]byte{chunk}}
	return m.Encode()
}

// FuzzReceiveMessage feeds arbitrary bytes, as a peer's sync message, to
// a Doc holding a small document, in one of the modes above. A refused
// message must leave the Doc and the State as they were; an accepted one
// must leave a Doc whose heads are sorted and applied, that generates
// messages, and whose changes load into automerge-go, which panics (and
// aborts the process) on some malformed changes.
func FuzzReceiveMessage(f *testing.F) {
	fb := getFZBase(f)
	for _, m := range fb.seeds {
		f.Add(uint8(0), m)
	}
	for i, m := range fb.seeds {
		f.Add(uint8(i%16), m)
	}
	for _, raw := range slices.Concat(fb.held, fb.base[len(fb.base)-3:]) {
		f.Add(uint8(fzBody), fzChunkBody(raw))
		f.Add(uint8(fzBody|fzQueued|fzMidSync), fzChunkBody(raw))
		f.Add(uint8(fzBody|fzCompress), fzChunkBody(raw))
	}
	for i, m := range fb.seeds {
		f.Add(uint8(fzCompress|i%4), m)
		f.Add(uint8(fzTight|i%8), m)
	}
	// Inflating past the budget, and a message at the bounds of mode fzTight.
	bomb, _ := bombChunk(f, 0xbb, 4096)
	f.Add(uint8(fzTight), syncMsg(amsync.Message{Changes: [][]byte{bomb}}))
	f.Add(uint8(0), syncMsg(amsync.Message{Changes: [][]byte{bomb, bomb}}))
	small, _ := encodedBloom(f, 64)
	f.Add(uint8(fzTight), syncMsg(amsync.Message{Heads: testHashes(4), Need: testHashes(4), Have: []amsync.Have{{LastSync: testHashes(4), Bloom: small}, {}}}))
	f.Fuzz(func(t *testing.T, mode uint8, msg []byte) {
		if fb.execs++; fb.execs%200 == 0 {
			runtime.GC() // automerge-go frees C memory in finalizers only
		}
		mode &= fzModes
		if mode&fzBody != 0 {
			msg = fzBodyMessage(msg)
		}
		if mode&fzChecksum != 0 {
			msg = fzFixChecksums(msg)
		}
		if mode&fzCompress != 0 {
			msg = fzCompressChunks(t, msg)
		}
		d, s := fzSetup(t, fb, mode)
		before := fzSnap(d, s)
		lenBefore := d.Len()
		applied, err := d.ReceiveMessage(s, msg, "peer")
		if err != nil {
			if errors.Is(err, amsync.ErrTooLarge) && !errors.Is(err, ErrLimitExceeded) {
				t.Fatalf("an amsync bound not reported as ErrLimitExceeded: %v", err)
			}
			if len(applied) != 0 {
				t.Fatalf("error %v with %d changes applied", err, len(applied))
			}
			if after := fzSnap(d, s); after != before {
				t.Fatalf("refused message (%v) changed the doc or state:\nbefore %s\nafter  %s", err, before, after)
			}
			// What is not in the snapshot: the next message is the one
			// the same Doc and State would send had they not seen msg.
			d2, s2 := fzSetup(t, fb, mode)
			if got, want := d.GenerateMessage(s), d2.GenerateMessage(s2); !bytes.Equal(got, want) {
				t.Fatalf("refused message (%v) changed the next message:\n got %x\nwant %x", err, got, want)
			}
			if after, want := fzSnap(d, s), fzSnap(d2, s2); after != want {
				t.Fatalf("refused message (%v) changed the state:\n got %s\nwant %s", err, after, want)
			}
			return
		}
		if d.Len() != lenBefore+len(applied) {
			t.Fatalf("%d changes applied, Len went from %d to %d", len(applied), lenBefore, d.Len())
		}
		for _, c := range applied {
			// Raw is the uncompressed chunk (the index's, what peers get);
			// Stored the chunk as it arrived, which reads back as the same.
			if len(c.Raw) < 9 || c.Raw[8] != 1 || len(c.Stored) < 9 {
				t.Fatalf("change %s: Raw type %x, Stored of %d bytes", c.Hash, c.Raw[8], len(c.Stored))
			}
			if aliases(msg, c.Stored) || aliases(msg, c.Raw) {
				t.Fatalf("change %s keeps the message alive", c.Hash)
			}
			if again, err := amsync.ParseChange(c.Stored); err != nil || again.Hash != c.Hash || !bytes.Equal(again.Uncompressed(), c.Raw) {
				t.Fatalf("change %s: Stored does not read back as the change: %v", c.Hash, err)
			}
		}
		if mode&fzTight != 0 {
			if d.Bytes() > d.opts.MaxBytes {
				t.Fatalf("the document grew to %d bytes, MaxBytes %d", d.Bytes(), d.opts.MaxBytes)
			}
			o := fzTightOpts
			if most := 32*((4+o.MaxHaves)*o.MaxHashes+16) + o.MaxHaves*o.MaxBloomBytes; s.RetainedBytes() > most {
				t.Fatalf("the state retains %d bytes, want at most %d", s.RetainedBytes(), most)
			}
		}
		for _, c := range applied {
			if !d.Has(c.Hash) {
				t.Fatalf("applied change %s is not Has()", c.Hash)
			}
		}
		heads := d.Heads()
		for i, h := range heads {
			if !d.Has(h) {
				t.Fatalf("head %s is not Has()", h)
			}
			if i > 0 && cmpHash(heads[i-1], h) >= 0 {
				t.Fatalf("heads not sorted: %x", heads)
			}
		}
		if d.Queued() > DefaultMaxQueued {
			t.Fatalf("%d queued", d.Queued())
		}
		if out := d.GenerateMessage(s); out != nil {
			m, err := amsync.ParseMessage(out)
			if err != nil {
				t.Fatalf("generated an unparsable message: %v", err)
			}
			if n := len(slices.Concat(m.Changes...)); len(m.Changes) > 1 && n > d.opts.MaxSendBytes {
				t.Fatalf("generated a message of %d changes, %d bytes (MaxSendBytes %d)", len(m.Changes), n, d.opts.MaxSendBytes)
			}
		}
		if len(applied) == 0 {
			return // the base document loads: checked by the seeds
		}
		// The changes load into automerge-go, with the same heads, and the
		// document survives a save and load.
		var all []byte
		d.All(func(raw []byte) bool { all = append(all, raw...); return true })
		doc, err := automerge.Load(all)
		if err != nil {
			t.Fatalf("the engine accepted changes automerge-go refuses: %v", err)
		}
		if got := hashes(doc.Heads()); !slices.Equal(got, heads) {
			t.Fatalf("automerge-go heads %x, engine %x", got, heads)
		}
		if _, err := automerge.Load(doc.Save()); err != nil {
			t.Fatalf("the document no longer loads once saved: %v", err)
		}
	})
}

// TestFuzzBaseLoads checks what FuzzReceiveMessage takes for granted: the
// base document loads into automerge-go, and every seed message in every
// mode is handled.
func TestFuzzBaseLoads(t *testing.T) {
	fb := getFZBase(t)
	doc, err := automerge.Load(slices.Concat(fb.base...))
	if err != nil {
		t.Fatal(err)
	}
	d := fzDoc(t, fb, Options{})
	if !slices.Equal(hashes(doc.Heads()), d.Heads()) {
		t.Fatal("heads differ")
	}
	// The seeds exercise both outcomes, and the held changes get applied.
	ok, refused, appliedHeld := 0, 0, 0
	for mode := range uint8(fzModes + 1) {
		seeds := fb.seeds
		if mode&fzBody != 0 {
			seeds = nil
			for _, raw := range fb.held {
				seeds = append(seeds, fzBodyMessage(fzChunkBody(raw)))
			}
		}
		for _, m := range seeds {
			d, s := fzSetup(t, fb, mode)
			applied, err := d.ReceiveMessage(s, m, "peer")
			if err != nil {
				refused++
				continue
			}
			ok++
			for _, c := range applied {
				for _, raw := range fb.held {
					if bytes.Equal(c.Raw, raw) {
						appliedHeld++
					}
				}
			}
		}
	}
	t.Logf("%d seeds × 128 modes: %d accepted, %d refused, %d held changes applied", len(fb.seeds), ok, refused, appliedHeld)
	if ok == 0 || refused == 0 || appliedHeld == 0 {
		t.Fatalf("seeds: %d accepted, %d refused, %d held changes applied", ok, refused, appliedHeld)
	}
}

// FuzzDecodeState feeds arbitrary bytes to DecodeState, as a stored sync
// state. A state it decodes encodes to the canonical form of its input
// (shared heads sorted, duplicates and trailing bytes dropped), which
// decodes to the same state; automerge-go reads the same states.
func FuzzDecodeState(f *testing.F) {
	h1, h2 := sha256.Sum256([]byte("1")), sha256.Sum256([]byte("2"))
	f.Add(NewState().Encode())
	f.Add([]byte{})
	f.Add([]byte{stateType})
	f.Add([]byte{stateType, 1})
	f.Add([]byte{0x42, 0})
	for _, hs := range [][]Hash{{h1}, {h1, h2}, {h2, h1}, {h1, h1}} {
		b := amsync.AppendHashes([]byte{stateType}, hs)
		f.Add(b)
		f.Add(append(slices.Clone(b), 0, 1, 2))
	}
	// A state automerge-go wrote.
	if fb := getFZBase(f); fb != nil {
		doc, err := automerge.Load(slices.Concat(fb.base...))
		if err != nil {
			f.Fatal(err)
		}
		ss := automerge.NewSyncState(doc)
		peer := automerge.NewSyncState(automerge.New())
		for i := 0; i < 10; i++ {
			m, ok := ss.GenerateMessage()
			if ok {
				if _, err := peer.ReceiveMessage(m.Bytes()); err != nil {
					f.Fatal(err)
				}
			}
			pm, pok := peer.GenerateMessage()
			if pok {
				if _, err := ss.ReceiveMessage(pm.Bytes()); err != nil {
					f.Fatal(err)
				}
			}
			if !ok && !pok {
				break
			}
		}
		f.Add(ss.Save())
	}
	var execs int
	f.Fuzz(func(t *testing.T, b []byte) {
		if execs++; execs%500 == 0 {
			runtime.GC()
		}
		s, err := DecodeState(b)
		amDoc := automerge.New()
		_, amErr := automerge.LoadSyncState(amDoc, b)
		if err != nil {
			if amErr == nil && fzMinimalLEB(b) {
				t.Fatalf("automerge-go reads a state the engine refuses (%v): %x", err, b)
			}
			return
		}
		enc := s.Encode()
		s2, err := DecodeState(enc)
		if err != nil {
			t.Fatalf("an encoded state does not decode: %v (%x)", err, enc)
		}
		if again := s2.Encode(); !bytes.Equal(again, enc) {
			t.Fatalf("encode, decode, encode: %x then %x", enc, again)
		}
		hs, _, rerr := amsync.ReadHashes(b[1:])
		if rerr != nil {
			t.Fatalf("DecodeState accepted hashes ReadHashes refuses: %v", rerr)
		}
		if want := amsync.AppendHashes([]byte{stateType}, sortedUnique(hs)); !bytes.Equal(enc, want) {
			t.Fatalf("decoded %x, encoded %x, want %x", b, enc, want)
		}
		if !slices.Equal(s.SharedHeads(), sortedUnique(hs)) {
			t.Fatalf("shared heads %x, want %x", s.SharedHeads(), hs)
		}
		if amErr != nil {
			t.Fatalf("the engine reads a state automerge-go refuses (%v): %x", amErr, b)
		}
	})
}

// fzMinimalLEB reports whether the hash count of an encoded state is a
// minimal LEB128 (the engine, unlike the core, may refuse padded ones).
func fzMinimalLEB(b []byte) bool {
	if len(b) < 2 {
		return true
	}
	for i := 1; i < len(b) && i < 11; i++ {
		if b[i]&0x80 == 0 {
			return i == 1 || b[i] != 0
		}
	}
	return true
}
