package syncengine

// Tests of the resource bounds of Options: what a peer's message may
// hold, what its compressed changes may inflate to, how large a document
// may grow, and how much one generated message carries.

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

var heapAllocs = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}

// allocated returns the bytes allocated on the heap so far (a counter,
// not a measure of time).
func allocated() uint64 {
	metrics.Read(heapAllocs)
	return heapAllocs[0].Value.Uint64()
}

// testHashes returns n distinct hashes no document has.
func testHashes(n int) []Hash {
	out := make([]Hash, n)
	for i := range out {
		out[i] = sha256.Sum256(binary.AppendUvarint([]byte("test hash "), uint64(i)))
	}
	return out
}

// encodedBloom returns a valid Bloom filter of exactly n encoded bytes
// (n >= 8) and the number of bytes of bits it holds.
func encodedBloom(t testing.TB, n int) ([]byte, int) {
	t.Helper()
	for hdr := 3; hdr <= 9; hdr++ {
		f := &amsync.Bloom{NumEntries: uint32(n - hdr), NumBitsPerEntry: 8, NumProbes: 7, Bits: make([]byte, n-hdr)}
		if b := f.Encode(); len(b) == n {
			return b, n - hdr
		}
	}
	t.Fatalf("no Bloom filter of %d bytes", n)
	return nil, 0
}

func syncMsg(m amsync.Message) []byte {
	m.Type = amsync.MessageTypeSync
	return m.Encode()
}

// snapshot is what the public API shows of a Doc and a State.
func snapshot(d *Doc, s *State) string {
	return fmt.Sprintf("%s bytes %d retained %d", fzSnap(d, s), d.Bytes(), s.RetainedBytes())
}

// TestReceiveBounds: each bound of a received message's lists and Bloom
// filters, at its default, accepts a message at the bound and refuses
// one over it, naming the bound, with the Doc and State unchanged.
func TestReceiveBounds(t *testing.T) {
	big, bits := encodedBloom(t, DefaultMaxBloomBytes)
	over, _ := encodedBloom(t, DefaultMaxBloomBytes+1)
	cases := []struct {
		name     string
		at, over amsync.Message
		retained int // RetainedBytes after the message at the bound
		text     string
	}{
		{"heads", amsync.Message{Heads: testHashes(DefaultMaxHashes)}, amsync.Message{Heads: testHashes(DefaultMaxHashes + 1)},
			32 * DefaultMaxHashes, "resource limit exceeded: sync message heads list has 4097 hashes (at most 4096)"},
		{"need", amsync.Message{Need: testHashes(DefaultMaxHashes)}, amsync.Message{Need: testHashes(DefaultMaxHashes + 1)},
			32 * DefaultMaxHashes, "resource limit exceeded: sync message need list has 4097 hashes (at most 4096)"},
		{"last sync", amsync.Message{Have: []amsync.Have{{LastSync: testHashes(DefaultMaxHashes)}}}, amsync.Message{Have: []amsync.Have{{LastSync: testHashes(DefaultMaxHashes + 1)}}},
			32 * DefaultMaxHashes, "resource limit exceeded: sync message have last sync list has 4097 hashes (at most 4096)"},
		{"haves", amsync.Message{Have: make([]amsync.Have, DefaultMaxHaves)}, amsync.Message{Have: make([]amsync.Have, DefaultMaxHaves+1)},
			0, "resource limit exceeded: sync message have list has 3 entries (at most 2)"},
		{"bloom", amsync.Message{Have: []amsync.Have{{Bloom: big}}}, amsync.Message{Have: []amsync.Have{{Bloom: over}}},
			bits, "resource limit exceeded: sync message have 0 Bloom filter is 2097153 bytes (at most 2097152)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, s := New(Options{}), NewState()
			before := snapshot(d, s)
			_, err := d.ReceiveMessage(s, syncMsg(tc.over), "peer")
			if !errors.Is(err, ErrLimitExceeded) || !errors.Is(err, amsync.ErrTooLarge) {
				t.Fatalf("one over the bound: %v, want ErrLimitExceeded", err)
			}
			if err.Error() != tc.text {
				t.Errorf("error %q, want %q", err, tc.text)
			}
			if after := snapshot(d, s); after != before {
				t.Fatalf("a refused message changed the doc or state:\n%s\n%s", before, after)
			}
			if _, err := d.ReceiveMessage(s, syncMsg(tc.at), "peer"); err != nil {
				t.Fatalf("at the bound: %v", err)
			}
			if got := s.RetainedBytes(); got != tc.retained {
				t.Errorf("RetainedBytes %d, want %d", got, tc.retained)
			}
		})
	}
	// Options set the bounds.
	d, s := New(Options{MaxHashes: 2, MaxHaves: 1, MaxBloomBytes: 16}), NewState()
	small, _ := encodedBloom(t, 16)
	at := amsync.Message{Heads: testHashes(2), Need: testHashes(2), Have: []amsync.Have{{LastSync: testHashes(2), Bloom: small}}}
	if _, err := d.ReceiveMessage(s, syncMsg(at), "peer"); err != nil {
		t.Fatal(err)
	}
	for _, m := range []amsync.Message{
		{Heads: testHashes(3)},
		{Need: testHashes(3)},
		{Have: []amsync.Have{{LastSync: testHashes(3)}}},
		{Have: make([]amsync.Have, 2)},
		{Have: []amsync.Have{{Bloom: append(small, 0)}}},
	} {
		if _, err := d.ReceiveMessage(s, syncMsg(m), "peer"); !errors.Is(err, ErrLimitExceeded) {
			t.Errorf("%s: %v, want ErrLimitExceeded", traceMsg(syncMsg(m)), err)
		}
	}
	// What s keeps: 2 heads, 2 needed, 2 last sync hashes, 13 bytes of bits.
	if got, want := s.RetainedBytes(), 6*32+13; got != want {
		t.Errorf("RetainedBytes %d, want %d", got, want)
	}
}

// compressChunk returns the compressed chunk (type 2) of the change in an
// uncompressed chunk: the body deflated, the checksum kept.
func compressChunk(t testing.TB, raw []byte) []byte {
	t.Helper()
	n := 9
	for raw[n]&0x80 != 0 {
		n++
	}
	n++
	var z bytes.Buffer
	w, _ := flate.NewWriter(&z, flate.BestCompression)
	w.Write(raw[n:])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := slices.Concat(raw[:8], []byte{2})
	out = binary.AppendUvarint(out, uint64(z.Len()))
	return append(out, z.Bytes()...)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// bombChunk returns a compressed change chunk, valid down to its checksum:
// an empty change (seq 1, no ops) by actor whose commit message is msgLen
// zero bytes. It is a few kilobytes per 64 MiB; body is its inflated size.
func bombChunk(t testing.TB, actor byte, msgLen int) (chunk []byte, body int) {
	t.Helper()
	head := []byte{0, 16} // no deps; a 16-byte actor id
	head = append(head, bytes.Repeat([]byte{actor}, 16)...)
	head = append(head, 1, 1, 0) // seq 1, start op 1, time 0
	head = binary.AppendUvarint(head, uint64(msgLen))
	tail := []byte{0, 0} // no other actors, no columns
	body = len(head) + msgLen + len(tail)
	h := sha256.New()
	h.Write(binary.AppendUvarint([]byte{1}, uint64(body)))
	var z bytes.Buffer
	zw, _ := flate.NewWriter(&z, flate.BestCompression)
	w := io.MultiWriter(h, zw)
	w.Write(head)
	io.Copy(w, io.LimitReader(zeroReader{}, int64(msgLen)))
	w.Write(tail)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	chunk = slices.Concat([]byte{0x85, 0x6f, 0x4a, 0x83}, h.Sum(nil)[:4], []byte{2})
	chunk = binary.AppendUvarint(chunk, uint64(z.Len()))
	return append(chunk, z.Bytes()...), body
}

// TestInflateBudget: the compressed changes of one message inflate to at
// most MaxInflatedBytes in all; past it, inflating stops and the message
// is refused. AddChanges is bound by the per-change cap only.
func TestInflateBudget(t *testing.T) {
	const each = 3 << 20
	var bombs [][]byte
	var bodies []int
	for a := range 8 {
		c, body := bombChunk(t, byte(0xa0+a), each)
		bombs, bodies = append(bombs, c), append(bodies, body)
	}
	msg := syncMsg(amsync.Message{Changes: bombs})
	t.Logf("message of %d bytes; its changes inflate to %d", len(msg), 8*bodies[0])

	// The message inflates to 24 MiB: a budget of 4 MiB stops after
	// about 4 MiB.
	const budget = 4 << 20
	// Deflated zeros would meet MaxInflateRatio first: off, to test the
	// budget alone.
	d, s := New(Options{MaxInflatedBytes: budget, MaxInflateRatio: -1}), NewState()
	before, snap := allocated(), snapshot(d, s)
	_, err := d.ReceiveMessage(s, msg, "peer")
	got := allocated() - before
	if !errors.Is(err, ErrLimitExceeded) || !errors.Is(err, ErrInflateBudget) || !errors.Is(err, amsync.ErrTooLarge) {
		t.Fatalf("%v, want ErrInflateBudget", err)
	}
	if want := fmt.Sprintf("resource limit exceeded: compressed changes inflate too much: change 1: compressed change inflates to more than %d bytes (MaxInflatedBytes is 4194304 for the whole message)", budget-bodies[0]); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if snapshot(d, s) != snap {
		t.Fatal("a refused message changed the doc or state")
	}
	// What refusing may allocate: inflating doubles a buffer up to what
	// is left of the budget (twice the budget in all), and a change kept
	// costs a trimmed copy of it and the string of its commit message (at
	// most the budget each). Inflating all 8 would take 48 MiB.
	if most := uint64(4*budget + len(msg)); got > most {
		t.Errorf("refusing the message allocated %d bytes, want at most %d", got, most)
	}
	t.Logf("refused after allocating %d bytes", got)

	// At the bound, the changes are accepted; a byte less, refused.
	two := syncMsg(amsync.Message{Changes: bombs[:2]})
	d = New(Options{MaxInflatedBytes: bodies[0] + bodies[1] - 1, MaxInflateRatio: -1})
	if _, err := d.ReceiveMessage(NewState(), two, "peer"); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("one byte over the budget: %v", err)
	}
	d = New(Options{MaxInflatedBytes: bodies[0] + bodies[1], MaxInflateRatio: -1})
	applied, err := d.ReceiveMessage(NewState(), two, "peer")
	if err != nil || len(applied) != 2 {
		t.Fatalf("at the budget: %d applied, %v", len(applied), err)
	}
	checkStored(t, applied, bombs[:2], two)

	// AddChanges knows no message budget.
	d = New(Options{MaxInflatedBytes: 1000})
	if applied, err := d.AddChanges(nil, bombs...); err != nil || len(applied) != 8 {
		t.Fatalf("AddChanges: %d applied, %v", len(applied), err)
	}
	// ...but the per-change cap.
	huge, _ := bombChunk(t, 0xee, amsync.MaxInflatedChangeBytes)
	if _, err := d.AddChanges(nil, huge); !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "67108864") {
		t.Fatalf("AddChanges of a change over the per-change cap: %v", err)
	}
}

// TestInflateBombMessage is the attack as reported: one message of 8
// compressed changes, each an empty change with a 63 MiB commit message.
// The default budget refuses it having inflated about 64 MiB, not 504.
func TestInflateBombMessage(t *testing.T) {
	bomb, body := bombChunk(t, 0xbb, 63<<20)
	msg := syncMsg(amsync.Message{Changes: slices.Repeat([][]byte{bomb}, 8)})
	d, s := New(Options{}), NewState()
	before := allocated()
	_, err := d.ReceiveMessage(s, msg, "peer")
	got := allocated() - before
	if !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("%v, want ErrLimitExceeded", err)
	}
	if most := uint64(4*DefaultMaxInflatedBytes + len(msg)); got > most {
		t.Errorf("allocated %d bytes, want at most %d", got, most)
	}
	t.Logf("a %d-byte message whose changes inflate to %d bytes: refused after allocating %d bytes (%v)", len(msg), 8*body, got, err)
}

// TestInflateRatio: a compressed chunk that inflates past 1 MiB to more
// than MaxInflateRatio times its size is refused whole; below 1 MiB, or
// with the bound off, it is accepted; AddChanges knows no ratio.
func TestInflateRatio(t *testing.T) {
	bomb, body := bombChunk(t, 0xc1, 2<<20) // zeros: about 1000 times
	small, _ := bombChunk(t, 0xc2, 512<<10)
	if body/len(bomb) <= DefaultMaxInflateRatio {
		t.Fatalf("the bomb inflates only %d times", body/len(bomb))
	}
	d, s := New(Options{}), NewState()
	snap := snapshot(d, s)
	_, err := d.ReceiveMessage(s, syncMsg(amsync.Message{Changes: [][]byte{small, bomb}}), "peer")
	if !errors.Is(err, ErrInflateBudget) || !strings.Contains(err.Error(), "change 1: a compressed chunk") || !strings.Contains(err.Error(), "over 256 times its size") {
		t.Fatalf("%v, want the ratio named", err)
	}
	if snapshot(d, s) != snap {
		t.Fatal("a refused message changed the doc or state")
	}
	if applied, err := d.ReceiveMessage(s, syncMsg(amsync.Message{Changes: [][]byte{small}}), "peer"); err != nil || len(applied) != 1 {
		t.Fatalf("a chunk inflating to less than 1 MiB: %d applied, %v", len(applied), err)
	}
	d = New(Options{MaxInflateRatio: -1})
	if applied, err := d.ReceiveMessage(NewState(), syncMsg(amsync.Message{Changes: [][]byte{bomb}}), "peer"); err != nil || len(applied) != 1 {
		t.Fatalf("ratio off: %d applied, %v", len(applied), err)
	}
	if applied, err := New(Options{}).AddChanges(nil, bomb); err != nil || len(applied) != 1 {
		t.Fatalf("AddChanges: %d applied, %v", len(applied), err)
	}
}

// aliases reports whether p starts inside buf.
func aliases(buf, p []byte) bool {
	if len(buf) == 0 || len(p) == 0 {
		return false
	}
	b, q := uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&p[0]))
	return q >= b && q < b+uintptr(len(buf))
}

// checkStored checks the Stored chunk of changes that arrived as chunks
// (in a message, or a batch, buf): the chunk as it arrived, a copy of its
// own, which AddChanges reads back as the same change; Raw is the
// uncompressed chunk.
func checkStored(t *testing.T, applied []*amsync.Change, chunks [][]byte, buf []byte) {
	t.Helper()
	d := New(Options{})
	for k, c := range applied {
		if !bytes.Equal(c.Stored, chunks[k]) {
			t.Fatalf("change %d: Stored is not the chunk as it arrived", k)
		}
		if aliases(buf, c.Stored) || aliases(buf, c.Raw) {
			t.Fatalf("change %d: Stored aliases the buffer it arrived in", k)
		}
		if c.Raw[8] != 1 {
			t.Fatalf("change %d: Raw is not uncompressed", k)
		}
		again, err := d.AddChanges(nil, c.Stored)
		if err != nil || len(again) != 1 {
			t.Fatalf("change %d: AddChanges of Stored: %d, %v", k, len(again), err)
		}
		if again[0].Hash != c.Hash || !bytes.Equal(again[0].Raw, c.Raw) || !bytes.Equal(again[0].Stored, c.Stored) {
			t.Fatalf("change %d: Stored reads back as another change", k)
		}
		if raw, _ := d.Change(c.Hash); !bytes.Equal(raw, c.Raw) {
			t.Fatalf("change %d: the index holds another chunk", k)
		}
	}
}

// bigHistory returns n changes of one automerge-go document, each setting
// a key to about size bytes of text, and the document.
func bigHistory(t testing.TB, seed uint64, n, size int) (*automerge.Doc, [][]byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	doc := automerge.New()
	if err := doc.SetActorID(fmt.Sprintf("%032x", seed+1)); err != nil {
		t.Fatal(err)
	}
	text := make([]byte, size)
	var chunks [][]byte
	for i := range n {
		for k := range text {
			text[k] = 'a' + byte(r.IntN(26))
		}
		if err := doc.RootMap().Set(fmt.Sprintf("k%d-%d", seed, i), string(text)); err != nil {
			t.Fatal(err)
		}
		h, err := doc.Commit("big")
		if err != nil {
			t.Fatal(err)
		}
		c, err := doc.Change(h)
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c.Save())
	}
	return doc, chunks
}

// Stored, for changes that arrived uncompressed, is Raw; the changes of a
// batch (as a store hands them over) do not alias it.
func TestStoredChunks(t *testing.T) {
	_, chunks := bigHistory(t, 3, 5, 300)
	batch := slices.Concat(chunks...)
	parts, err := amsync.SplitChunks(batch)
	if err != nil {
		t.Fatal(err)
	}
	d := New(Options{})
	applied, err := d.AddChanges(nil, parts...)
	if err != nil || len(applied) != 5 {
		t.Fatalf("%d applied, %v", len(applied), err)
	}
	for k, c := range applied {
		if !bytes.Equal(c.Stored, chunks[k]) || !bytes.Equal(c.Raw, chunks[k]) || &c.Stored[0] != &c.Raw[0] {
			t.Fatalf("change %d: Stored is not Raw", k)
		}
	}
	clear(batch)
	for k, c := range applied {
		if !bytes.Equal(c.Raw, chunks[k]) || c.Seq != uint64(k+1) || len(c.Columns) == 0 || bytes.Count(c.Actor, []byte{0}) == len(c.Actor) {
			t.Fatalf("change %d changed with the batch it came in", k)
		}
	}
	// Compressed, in a message: stored compressed, indexed uncompressed,
	// sent to peers uncompressed.
	var comp [][]byte
	for _, raw := range chunks {
		comp = append(comp, compressChunk(t, raw))
	}
	msg := syncMsg(amsync.Message{Changes: comp})
	d = New(Options{})
	s := NewState()
	applied, err = d.ReceiveMessage(s, msg, "peer")
	if err != nil || len(applied) != 5 {
		t.Fatalf("%d applied, %v", len(applied), err)
	}
	checkStored(t, applied, comp, msg)
	for k, c := range applied {
		if !bytes.Equal(c.Raw, chunks[k]) {
			t.Fatalf("change %d: Raw is not the uncompressed chunk", k)
		}
	}
	if got := d.Bytes(); got != len(slices.Concat(chunks...)) {
		t.Fatalf("Bytes %d, want the uncompressed chunks' %d", got, len(slices.Concat(chunks...)))
	}
	p := newAMPeer(t)
	syncPair(t, d, p)
	if !slices.Equal(hashes(p.doc.Heads()), d.Heads()) {
		t.Fatal("automerge-go did not get the changes that arrived compressed")
	}
}

// TestMaxBytes: a message that would take the document past MaxBytes is
// refused whole; AddChanges is not limited; a document over the bound
// refuses new changes from peers but still serves its history.
func TestMaxBytes(t *testing.T) {
	src, chunks := bigHistory(t, 5, 12, 1000)
	size := len(slices.Concat(chunks...))
	base, last := chunks[:10], chunks[10:]
	baseSize := len(slices.Concat(base...))

	// A peer holding the whole history sends the two newest changes.
	newMsg := syncMsg(amsync.Message{Heads: hashes(src.Heads()), Changes: last})
	for _, tc := range []struct {
		max int
		ok  bool
	}{{size, true}, {size - 1, false}, {baseSize, false}} {
		d := New(Options{MaxBytes: tc.max})
		if _, err := d.AddChanges(nil, base...); err != nil {
			t.Fatal(err)
		}
		if d.Bytes() != baseSize {
			t.Fatalf("Bytes %d, want %d", d.Bytes(), baseSize)
		}
		s := NewState()
		before := snapshot(d, s)
		applied, err := d.ReceiveMessage(s, newMsg, "peer")
		if tc.ok {
			if err != nil || len(applied) != 2 || d.Bytes() != size {
				t.Fatalf("MaxBytes %d (the size with the new changes): %d applied, Bytes %d, %v", tc.max, len(applied), d.Bytes(), err)
			}
			continue
		}
		if !errors.Is(err, ErrLimitExceeded) || !errors.Is(err, ErrDocTooLarge) {
			t.Fatalf("MaxBytes %d: %v, want ErrDocTooLarge", tc.max, err)
		}
		want := fmt.Sprintf("resource limit exceeded: document too large: the message's 2 new changes (%d bytes) would take the document from %d to %d bytes (MaxBytes is %d)", size-baseSize, baseSize, size, tc.max)
		if err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
		if after := snapshot(d, s); after != before {
			t.Fatalf("a refused message changed the doc or state:\n%s\n%s", before, after)
		}
	}

	// A document stored before the bound (or grown past it through other
	// nodes) loads, and is read-only for peers.
	d := New(Options{MaxBytes: 100})
	if _, err := d.AddChanges(nil, base...); err != nil {
		t.Fatalf("AddChanges over MaxBytes: %v", err)
	}
	if _, err := d.AddChanges("other node", last[0]); err != nil {
		t.Fatalf("AddChanges over MaxBytes: %v", err)
	}
	s := NewState()
	if _, err := d.ReceiveMessage(s, syncMsg(amsync.Message{Changes: last[1:]}), "peer"); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("a new change to a document over MaxBytes: %v", err)
	}
	// Changes it has already are no growth.
	if _, err := d.ReceiveMessage(s, syncMsg(amsync.Message{Changes: base[:3]}), "peer"); err != nil {
		t.Fatalf("known changes to a document over MaxBytes: %v", err)
	}
	// It serves its history to a new peer.
	p := newAMPeer(t)
	syncPair(t, d, p)
	if !slices.Equal(hashes(p.doc.Heads()), d.Heads()) {
		t.Fatal("a document over MaxBytes did not serve its history")
	}

	// Queued changes count.
	d = New(Options{MaxBytes: len(last[1]) + len(base[0])})
	if _, err := d.ReceiveMessage(NewState(), syncMsg(amsync.Message{Changes: last[1:]}), "peer"); err != nil || d.Queued() != 1 {
		t.Fatalf("queued %d, %v", d.Queued(), err)
	}
	if d.Bytes() != len(last[1]) {
		t.Fatalf("Bytes %d with one queued change of %d", d.Bytes(), len(last[1]))
	}
	if _, err := d.ReceiveMessage(NewState(), syncMsg(amsync.Message{Changes: base[:1]}), "peer"); err != nil {
		t.Fatalf("at the bound with the queue: %v", err)
	}
	if _, err := d.ReceiveMessage(NewState(), syncMsg(amsync.Message{Changes: base[1:2]}), "peer"); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("past the bound with the queue: %v", err)
	}
}

// checkSent checks that a generated message carries at most max bytes of
// change chunks, or one change; it returns the number of changes.
func checkSent(t *testing.T, msg []byte, max int) int {
	t.Helper()
	m, err := amsync.ParseMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range m.Changes {
		n += len(c)
	}
	if len(m.Changes) > 1 && n > max {
		t.Fatalf("a message of %d changes carries %d bytes of changes (MaxSendBytes %d)", len(m.Changes), n, max)
	}
	return len(m.Changes)
}

// TestSendBytesAutomerge: a long history reaches a new automerge-go peer
// in messages of at most MaxSendBytes of changes, over several round
// trips, and the peer ends with the engine's heads; then both sides add
// big changes apart and sync again.
func TestSendBytesAutomerge(t *testing.T) {
	const max = 512 << 10
	_, chunks := bigHistory(t, 7, 40, 100<<10)
	d := New(Options{MaxSendBytes: max})
	if _, err := d.AddChanges(nil, chunks...); err != nil {
		t.Fatal(err)
	}
	p := newAMPeer(t)
	withChanges := 0
	for round := 0; round < 100; round++ {
		quiet := true
		if sm, ok := p.ss.GenerateMessage(); ok {
			quiet = false
			if _, err := d.ReceiveMessage(p.es, sm.Bytes(), p); err != nil {
				t.Fatal(err)
			}
		}
		if msg := d.GenerateMessage(p.es); msg != nil {
			quiet = false
			if checkSent(t, msg, max) > 0 {
				withChanges++
			}
			if _, err := p.ss.ReceiveMessage(msg); err != nil {
				t.Fatal(err)
			}
		}
		if quiet {
			break
		}
	}
	if !slices.Equal(hashes(p.doc.Heads()), d.Heads()) {
		t.Fatalf("automerge-go has heads %v, the engine %x", p.doc.Heads(), d.Heads())
	}
	if all, _ := p.doc.Changes(); len(all) != 40 {
		t.Fatalf("automerge-go has %d changes, want 40", len(all))
	}
	// 40 changes of about 100 KiB: 5 a message (4 if the envelope of a
	// change takes the fifth past 512 KiB).
	if withChanges < 8 {
		t.Fatalf("the history went in %d messages", withChanges)
	}
	t.Logf("40 changes of about 100 KiB in %d messages", withChanges)

	// Apart, then together: each side has 10 big changes the other lacks.
	for i := range 10 {
		p.edit(t, fmt.Sprintf("peer%d", i), strings.Repeat(fmt.Sprint(i), 100<<10))
	}
	_, more := bigHistory(t, 8, 10, 100<<10)
	if _, err := d.AddChanges(nil, more...); err != nil {
		t.Fatal(err)
	}
	p.es = NewState() // a new connection
	p.ss = automerge.NewSyncState(p.doc)
	for round := 0; round < 100; round++ {
		quiet := true
		if sm, ok := p.ss.GenerateMessage(); ok {
			quiet = false
			if _, err := d.ReceiveMessage(p.es, sm.Bytes(), p); err != nil {
				t.Fatal(err)
			}
		}
		if msg := d.GenerateMessage(p.es); msg != nil {
			quiet = false
			checkSent(t, msg, max)
			if _, err := p.ss.ReceiveMessage(msg); err != nil {
				t.Fatal(err)
			}
		}
		if quiet {
			break
		}
	}
	if !slices.Equal(hashes(p.doc.Heads()), d.Heads()) || d.Len() != 60 {
		t.Fatalf("not converged: automerge-go heads %v, the engine %x (%d changes)", p.doc.Heads(), d.Heads(), d.Len())
	}
}

// syncEngines exchanges messages between two engine documents until both
// are quiet, checking each message against MaxSendBytes; it returns the
// number of messages that carried changes.
func syncEngines(t *testing.T, a, b *Doc, max int) int {
	t.Helper()
	as, bs := NewState(), NewState()
	n := 0
	for round := 0; round < 200; round++ {
		quiet := true
		if msg := a.GenerateMessage(as); msg != nil {
			quiet = false
			if checkSent(t, msg, max) > 0 {
				n++
			}
			if _, err := b.ReceiveMessage(bs, msg, "a"); err != nil {
				t.Fatal(err)
			}
		}
		if msg := b.GenerateMessage(bs); msg != nil {
			quiet = false
			if checkSent(t, msg, max) > 0 {
				n++
			}
			if _, err := a.ReceiveMessage(as, msg, "b"); err != nil {
				t.Fatal(err)
			}
		}
		if quiet {
			if !slices.Equal(a.Heads(), b.Heads()) || a.Queued() != 0 || b.Queued() != 0 {
				t.Fatalf("quiet but not converged: %x and %x, queued %d and %d", a.Heads(), b.Heads(), a.Queued(), b.Queued())
			}
			return n
		}
	}
	t.Fatal("two engines did not settle in 200 rounds")
	return 0
}

// TestSendBytesEngines: engine to engine, both bounded, both directions,
// and a peer whose need (a change waiting for its dependency) must be
// answered across cut messages.
func TestSendBytesEngines(t *testing.T) {
	const max = 512 << 10
	_, ha := bigHistory(t, 11, 40, 100<<10)
	_, hb := bigHistory(t, 12, 15, 100<<10)
	a, b := New(Options{MaxSendBytes: max}), New(Options{MaxSendBytes: max})
	if _, err := a.AddChanges(nil, ha...); err != nil {
		t.Fatal(err)
	}
	// b has its own history, and a's newest change, which waits for the
	// 39 before it: b needs them.
	if _, err := b.AddChanges(nil, hb...); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddChanges(nil, ha[39]); err != nil || b.Queued() != 1 {
		t.Fatalf("queued %d, %v", b.Queued(), err)
	}
	n := syncEngines(t, a, b, max)
	if a.Len() != 55 || b.Len() != 55 {
		t.Fatalf("%d and %d changes, want 55", a.Len(), b.Len())
	}
	if n < 11 {
		t.Fatalf("55 changes of 100 KiB in %d messages", n)
	}
	t.Logf("55 changes of about 100 KiB both ways in %d messages", n)
}

// Messages without a cut are the same bytes whatever MaxSendBytes is.
func TestSendBytesNoCut(t *testing.T) {
	_, h := bigHistory(t, 13, 6, 1000)
	total := len(slices.Concat(h...))
	for _, max := range []int{total, total + 1, DefaultMaxSendBytes} {
		a, b := New(Options{}), New(Options{MaxSendBytes: max})
		for _, d := range []*Doc{a, b} {
			if _, err := d.AddChanges(nil, h...); err != nil {
				t.Fatal(err)
			}
		}
		as, bs := NewState(), NewState()
		hello := syncMsg(amsync.Message{Have: []amsync.Have{{}}})
		for _, x := range []struct {
			d *Doc
			s *State
		}{{a, as}, {b, bs}} {
			if _, err := x.d.ReceiveMessage(x.s, hello, "peer"); err != nil {
				t.Fatal(err)
			}
		}
		ma, mb := a.GenerateMessage(as), b.GenerateMessage(bs)
		if !bytes.Equal(ma, mb) || checkSent(t, mb, max) != 6 {
			t.Fatalf("MaxSendBytes %d: the message differs from the default's", max)
		}
	}
	// One byte less: cut.
	b := New(Options{MaxSendBytes: total - 1})
	if _, err := b.AddChanges(nil, h...); err != nil {
		t.Fatal(err)
	}
	s := NewState()
	if _, err := b.ReceiveMessage(s, syncMsg(amsync.Message{Have: []amsync.Have{{}}}), "peer"); err != nil {
		t.Fatal(err)
	}
	if n := checkSent(t, b.GenerateMessage(s), total-1); n != 5 {
		t.Fatalf("%d changes in a message of at most %d bytes, want 5", n, total-1)
	}
}

// TestNeedRepeated: a need that names one change 4,096 times (with and
// without a have) gets it once, not a message of copies.
func TestNeedRepeated(t *testing.T) {
	_, h := bigHistory(t, 21, 3, 10<<10)
	d := New(Options{})
	applied, err := d.AddChanges(nil, h...)
	if err != nil {
		t.Fatal(err)
	}
	need := slices.Repeat([]Hash{applied[1].Hash}, DefaultMaxHashes)
	// With a have: a Bloom filter of every change (the peer has them all
	// but the one it needs, say after a false positive).
	all := amsync.NewBloom([]Hash{applied[0].Hash, applied[1].Hash, applied[2].Hash}).Encode()
	for _, haves := range [][]amsync.Have{nil, {{Bloom: all}}} {
		s := NewState()
		if _, err := d.ReceiveMessage(s, syncMsg(amsync.Message{Heads: d.Heads(), Need: need, Have: haves}), "peer"); err != nil {
			t.Fatal(err)
		}
		if n := checkSent(t, d.GenerateMessage(s), DefaultMaxSendBytes); n != 1 {
			t.Fatalf("haves %d: %d changes sent for one needed 4096 times, want 1", len(haves), n)
		}
	}
}
