package amsync

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
)

// compressChunk turns an uncompressed change chunk into the compressed
// chunk (type 2) of the same change: the body deflated, the checksum kept
// (both forms carry the checksum of the uncompressed chunk).
func compressChunk(t testing.TB, raw []byte) []byte {
	t.Helper()
	n := headerLen(raw)
	if n == 0 || raw[8] != chunkChange {
		t.Fatalf("not an uncompressed chunk: %x", raw[:min(len(raw), 12)])
	}
	var z bytes.Buffer
	w, err := flate.NewWriter(&z, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw[n:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := slices.Concat(raw[:8], []byte{chunkCompressedChange})
	out = appendULEB(out, uint64(z.Len()))
	return append(out, z.Bytes()...)
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// bombChunk returns a compressed change chunk with a valid checksum: an
// empty change (no ops) by actor whose commit message is msgLen zero
// bytes, so that a few kilobytes inflate to msgLen bytes and more. Its
// inflated body is bodyLen bytes.
func bombChunk(t testing.TB, actor []byte, msgLen int) (chunk []byte, bodyLen int) {
	t.Helper()
	head := appendULEB(nil, 0) // no deps
	head = appendPrefixed(head, actor)
	head = appendULEB(head, 1) // seq
	head = appendULEB(head, 1) // start op
	head = appendSLEB(head, 0) // time
	head = appendULEB(head, uint64(msgLen))
	tail := []byte{0, 0} // no other actors, no columns
	bodyLen = len(head) + msgLen + len(tail)
	h := sha256.New()
	h.Write(appendULEB([]byte{chunkChange}, uint64(bodyLen)))
	var z bytes.Buffer
	w, err := flate.NewWriter(&z, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	out := io.MultiWriter(h, w)
	if _, err := out.Write(head); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.LimitReader(zeros{}, int64(msgLen))); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write(tail); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	chunk = slices.Concat(magic, h.Sum(nil)[:4], []byte{chunkCompressedChange})
	chunk = appendULEB(chunk, uint64(z.Len()))
	return append(chunk, z.Bytes()...), bodyLen
}

// sameFields compares what ParseChange reads of two changes.
func sameFields(a, b *Change) bool {
	strip := func(c *Change) Change {
		x := *c
		x.Raw, x.Stored, x.inflated = nil, nil, nil
		return x
	}
	return reflect.DeepEqual(strip(a), strip(b))
}

func TestParseCompressedChange(t *testing.T) {
	docs := randomDocs(t, 5, 2, 30)
	chs, err := docs[0].Changes()
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, ch := range chs {
		raw := ch.Save()
		comp := compressChunk(t, raw)
		all = append(all, comp...)
		want, err := ParseChange(raw)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseChange(comp)
		if err != nil {
			t.Fatalf("compressed %s: %v", ch.Hash(), err)
		}
		if c.Hash != want.Hash || !sameFields(c, want) {
			t.Fatalf("compressed %s parses differently", ch.Hash())
		}
		if !bytes.Equal(c.Raw, comp) {
			t.Fatal("Raw is not the chunk as received")
		}
		// The uncompressed form is the automerge-go chunk, byte for byte.
		if u := c.Uncompressed(); !bytes.Equal(u, raw) {
			t.Fatalf("Uncompressed() differs from the uncompressed chunk:\n got %x\nwant %x", u, raw)
		}
		if got := want.Uncompressed(); !bytes.Equal(got, raw) || want.InflatedLen() != 0 {
			t.Fatal("Uncompressed of an uncompressed chunk is not Raw")
		}
		body := len(raw) - headerLen(raw)
		if c.InflatedLen() != body {
			t.Fatalf("InflatedLen %d, want %d", c.InflatedLen(), body)
		}
		// The limit: exactly the body passes, a byte less does not.
		if _, err := ParseChangeLimit(comp, body); err != nil {
			t.Fatalf("limit %d = the body: %v", body, err)
		}
		_, err = ParseChangeLimit(comp, body-1)
		if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrMalformed) {
			t.Fatalf("limit %d, one under the body: %v, want ErrTooLarge and ErrMalformed", body-1, err)
		}
		if !strings.Contains(err.Error(), "inflates to more than") {
			t.Fatalf("error text %q does not name the bound", err)
		}
		// Uncompressed chunks are not subject to the limit.
		if _, err := ParseChangeLimit(raw, 0); err != nil {
			t.Fatalf("uncompressed chunk with limit 0: %v", err)
		}
	}
	// automerge-go reads the compressed chunks as the same changes.
	doc, err := automerge.Load(all)
	if err != nil {
		t.Fatalf("automerge-go refuses the compressed chunks: %v", err)
	}
	if !slices.Equal(doc.Heads(), docs[0].Heads()) {
		t.Fatal("the compressed chunks load with other heads")
	}
}

// TestInflateBomb: a compressed change that inflates past the limit is
// refused after allocating about the limit, not what it inflates to; a
// tighter limit allocates less still.
func TestInflateBomb(t *testing.T) {
	actor := bytes.Repeat([]byte{0xab}, 16)
	bomb, body := bombChunk(t, actor, MaxInflatedChangeBytes+(1<<20))
	t.Logf("bomb: %d bytes, inflating to %d", len(bomb), body)
	for _, limit := range []int{MaxInflatedChangeBytes, 8 << 20, 1 << 20, 1000, 0} {
		before := allocated()
		var err error
		if limit == MaxInflatedChangeBytes {
			_, err = ParseChange(bomb)
		} else {
			_, err = ParseChangeLimit(bomb, limit)
		}
		got := allocated() - before
		if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrMalformed) {
			t.Fatalf("limit %d: %v, want ErrTooLarge", limit, err)
		}
		// The buffer grows by doubling up to limit+1 bytes: about 2x the
		// limit in all, plus the inflater's own state.
		if most := uint64(2*limit + limit/8 + 256<<10); got > most {
			t.Errorf("limit %d: allocated %d bytes, want at most %d", limit, got, most)
		}
		t.Logf("limit %d: refused after allocating %d bytes", limit, got)
	}
	// Within the limit, the change parses, and the buffer kept is about
	// the chunk, not the doubled buffer it was read into.
	small, body := bombChunk(t, actor, 5<<20)
	c, err := ParseChangeLimit(small, body)
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Uncompressed(); cap(u) > len(u)+len(u)/8+64 {
		t.Fatalf("an inflated chunk of %d bytes keeps a buffer of %d", len(u), cap(u))
	}
	if len(c.Message) != 5<<20 || c.InflatedLen() != body {
		t.Fatalf("message of %d bytes, inflated %d", len(c.Message), c.InflatedLen())
	}
}

func TestParseMessageLimits(t *testing.T) {
	hs := func(n int) []Hash {
		out := make([]Hash, n)
		for i := range out {
			out[i] = sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		}
		return out
	}
	bloomOf := func(n int) []byte { // an encoded filter of exactly n bytes (n >= 4)
		f := &Bloom{NumEntries: uint32(n - 3), NumBitsPerEntry: 8, NumProbes: 7, Bits: make([]byte, n-3)}
		b := f.Encode()
		if len(b) != n {
			t.Fatalf("bloom of %d bytes, want %d", len(b), n)
		}
		return b
	}
	lim := MessageLimits{MaxHashes: 5, MaxHaves: 3, MaxBloomBytes: 100}
	cases := []struct {
		name     string
		at, over Message
		text     string
	}{
		{"heads", Message{Heads: hs(5)}, Message{Heads: hs(6)}, "sync message heads list has 6 hashes (at most 5)"},
		{"need", Message{Need: hs(5)}, Message{Need: hs(6)}, "sync message need list has 6 hashes (at most 5)"},
		{"last sync", Message{Have: []Have{{}, {LastSync: hs(5)}}}, Message{Have: []Have{{}, {LastSync: hs(6)}}}, "sync message have last sync list has 6 hashes (at most 5)"},
		{"haves", Message{Have: make([]Have, 3)}, Message{Have: make([]Have, 4)}, "sync message have list has 4 entries (at most 3)"},
		{"bloom", Message{Have: []Have{{Bloom: bloomOf(100)}}}, Message{Have: []Have{{}, {Bloom: bloomOf(101)}}}, "sync message have 1 Bloom filter is 101 bytes (at most 100)"},
	}
	for _, tc := range cases {
		tc.at.Type, tc.over.Type = MessageTypeSync, MessageTypeSync
		at, over := tc.at.Encode(), tc.over.Encode()
		if m, err := ParseMessageLimits(at, lim); err != nil {
			t.Errorf("%s at the bound: %v", tc.name, err)
		} else if !bytes.Equal(m.Encode(), at) {
			t.Errorf("%s at the bound: parsed differently", tc.name)
		}
		_, err := ParseMessageLimits(over, lim)
		if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s one over: %v, want ErrTooLarge", tc.name, err)
		} else if err.Error() != tc.text {
			t.Errorf("%s one over: %q, want %q", tc.name, err, tc.text)
		}
		// Without bounds, both parse.
		if _, err := ParseMessage(over); err != nil {
			t.Errorf("%s: ParseMessage: %v", tc.name, err)
		}
	}
}

// TestParseMessageAllocates: the envelope parser allocates in proportion
// to its input, and with limits refuses a list before allocating it.
func TestParseMessageAllocates(t *testing.T) {
	// Many empty change entries, padded so that their count fits.
	const n = 1 << 16
	b := []byte{MessageTypeSync, 0, 0, 0}
	b = appendULEB(b, n)
	b = append(b, make([]byte, n*minChangeEntry)...)
	before := allocated()
	m, err := ParseMessage(b)
	got := allocated() - before
	if err != nil || len(m.Changes) != n {
		t.Fatalf("%v, %d changes", err, len(m.Changes))
	}
	if most := uint64(3 * len(b)); got > most {
		t.Errorf("ParseMessage of %d bytes allocated %d, want at most %d", len(b), got, most)
	}
	// More entries than that many bytes can hold is malformed.
	short := appendULEB([]byte{MessageTypeSync, 0, 0, 0}, n)
	short = append(short, make([]byte, n*minChangeEntry-1)...)
	if _, err := ParseMessage(short); !errors.Is(err, ErrMalformed) {
		t.Errorf("%d entries in %d bytes: %v", n, len(short)-8, err)
	}

	// A million empty haves: refused before the list is allocated.
	haves := appendULEB([]byte{MessageTypeSync, 0, 0}, 1<<20)
	haves = append(haves, make([]byte, 2<<20)...)
	haves = append(haves, 0)
	before = allocated()
	_, err = ParseMessageLimits(haves, MessageLimits{MaxHaves: 16})
	got = allocated() - before
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a million haves: %v", err)
	}
	if got > 4096 {
		t.Errorf("refusing a million haves allocated %d bytes", got)
	}
	// So is a long need list.
	need := appendULEB([]byte{MessageTypeSync, 0}, 1<<16)
	need = append(need, make([]byte, 32<<16)...)
	need = append(need, 0, 0)
	before = allocated()
	_, err = ParseMessageLimits(need, MessageLimits{MaxHashes: 4096})
	got = allocated() - before
	if !errors.Is(err, ErrTooLarge) || got > 4096 {
		t.Fatalf("a need list of %d hashes: %v, allocated %d", 1<<16, err, got)
	}
}
