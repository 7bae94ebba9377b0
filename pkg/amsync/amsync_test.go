package amsync

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
)

// randomDocs builds documents with automerge-go, the oracle: several actors
// editing maps, lists, text and counters, merged together.
func randomDocs(t testing.TB, seed uint64, actors, edits int) []*automerge.Doc {
	rng := rand.New(rand.NewPCG(seed, 1))
	docs := make([]*automerge.Doc, actors)
	docs[0] = automerge.New()
	if err := docs[0].Path("text").Set(automerge.NewText("")); err != nil {
		t.Fatal(err)
	}
	if err := docs[0].Path("list").Set(automerge.NewList()); err != nil {
		t.Fatal(err)
	}
	if err := docs[0].Path("n").Set(automerge.NewCounter(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := docs[0].Commit("init"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < actors; i++ {
		f, err := docs[0].Fork()
		if err != nil {
			t.Fatal(err)
		}
		docs[i] = f
	}
	for e := 0; e < edits; e++ {
		d := docs[rng.IntN(actors)]
		get := func(k string) *automerge.Value {
			v, err := d.RootMap().Get(k)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		var err error
		switch rng.IntN(6) {
		case 0:
			err = d.RootMap().Set(fmt.Sprintf("k%d", rng.IntN(20)), rng.Int64())
		case 1:
			err = get("text").Text().Insert(0, strings.Repeat("x", 1+rng.IntN(300)))
		case 2:
			err = get("list").List().Append(rng.Float64(), "s", true)
		case 3:
			err = get("n").Counter().Inc(int64(rng.IntN(10)))
		case 4:
			if l := get("list").List(); l.Len() > 0 {
				err = l.Delete(rng.IntN(l.Len()))
			}
		case 5:
			o := docs[rng.IntN(actors)]
			if o != d {
				_, err = d.Merge(o)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Commit(fmt.Sprintf("edit %d", e), automerge.CommitOptions{AllowEmpty: true}); err != nil {
			t.Fatal(err)
		}
	}
	return docs
}

func TestParseChangeMatchesAutomerge(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		docs := randomDocs(t, seed, 3, 60)
		for _, d := range docs {
			chs, err := d.Changes()
			if err != nil {
				t.Fatal(err)
			}
			for _, ch := range chs {
				raw := ch.Save()
				c, err := ParseChange(raw)
				if err != nil {
					t.Fatalf("seed %d: automerge-go change %s rejected: %v", seed, ch.Hash(), err)
				}
				if c.Hash != Hash(ch.Hash()) {
					t.Fatalf("hash %s, automerge says %s", c.Hash, ch.Hash())
				}
				deps := make([]Hash, 0, len(ch.Dependencies()))
				for _, dep := range ch.Dependencies() {
					deps = append(deps, Hash(dep))
				}
				slices.SortFunc(deps, func(a, b Hash) int { return bytes.Compare(a[:], b[:]) })
				if !slices.Equal(c.Deps, deps) {
					t.Fatalf("deps %v, automerge says %v", c.Deps, deps)
				}
				if hex.EncodeToString(c.Actor) != ch.ActorID() || c.Seq != ch.ActorSeq() || c.Message != ch.Message() {
					t.Fatalf("header mismatch: actor %x seq %d msg %q vs %s %d %q", c.Actor, c.Seq, c.Message, ch.ActorID(), ch.ActorSeq(), ch.Message())
				}
			}
		}
	}
}

func TestParseMessageMatchesAutomerge(t *testing.T) {
	docs := randomDocs(t, 7, 2, 40)
	a, b := docs[0], docs[1]
	sa, sb := automerge.NewSyncState(a), automerge.NewSyncState(b)
	for round := 0; round < 20; round++ {
		progressed := false
		for _, p := range []struct{ from, to *automerge.SyncState }{{sa, sb}, {sb, sa}} {
			sm, ok := p.from.GenerateMessage()
			if !ok {
				continue
			}
			progressed = true
			raw := sm.Bytes()
			m, err := ParseMessage(raw)
			if err != nil {
				t.Fatalf("automerge-go sync message rejected: %v", err)
			}
			if len(m.Heads) != len(sm.Heads()) || len(m.Changes) != len(sm.Changes()) {
				t.Fatalf("parsed %d heads %d changes, automerge says %d, %d", len(m.Heads), len(m.Changes), len(sm.Heads()), len(sm.Changes()))
			}
			for i, h := range sm.Heads() {
				if m.Heads[i] != Hash(h) {
					t.Fatalf("head %d differs", i)
				}
			}
			for _, c := range m.Changes {
				if _, err := ParseChange(c); err != nil {
					t.Fatalf("change in sync message rejected: %v", err)
				}
			}
			if !bytes.Equal(m.Encode(), raw) {
				t.Fatal("Encode does not reproduce the message")
			}
			if _, err := p.to.ReceiveMessage(raw); err != nil {
				t.Fatal(err)
			}
		}
		if !progressed {
			break
		}
	}
	if !slices.Equal(a.Heads(), b.Heads()) {
		t.Fatal("oracle documents did not converge")
	}
}

func TestParseRejects(t *testing.T) {
	doc := randomDocs(t, 1, 1, 3)[0]
	chs, _ := doc.Changes()
	good := chs[len(chs)-1].Save()
	flip := func(i int) []byte { b := slices.Clone(good); b[i] ^= 0x01; return b }
	cases := map[string][]byte{
		"empty":          nil,
		"bad magic":      flip(0),
		"bad checksum":   flip(5),
		"body bit flip":  flip(len(good) - 1),
		"truncated":      good[:len(good)-1],
		"trailing byte":  append(slices.Clone(good), 0),
		"document chunk": doc.Save(),
	}
	for name, b := range cases {
		if _, err := ParseChange(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"empty":             nil,
		"unknown type":      {0x41, 0, 0, 0, 0},
		"huge head count":   {0x42, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"truncated hash":    append([]byte{0x42, 1}, make([]byte, 31)...),
		"overlong leb":      {0x42, 0x80, 0x00},
		"change past end":   {0x42, 0, 0, 0, 1, 10, 1, 2},
		"huge change count": {0x42, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		if _, err := ParseMessage(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("message %s: got %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzParseMessage: what ParseMessage accepts re-encodes to its input;
// ParseMessageLimits (bounds from the fuzzer, 0 for none) accepts it too
// unless a list or filter exceeds a bound, and then says so with
// ErrTooLarge; it accepts nothing ParseMessage refuses.
func FuzzParseMessage(f *testing.F) {
	docs := randomDocs(f, 3, 2, 10)
	sm, _ := automerge.NewSyncState(docs[0]).GenerateMessage()
	f.Add(sm.Bytes(), uint8(0), uint8(0), uint16(0))
	f.Add(append(sm.Bytes(), 2, 2, 0x84), uint8(1), uint8(1), uint16(8))
	m := &Message{Type: MessageTypeSync}
	chs, _ := docs[0].Changes()
	for _, c := range chs[:3] {
		m.Changes = append(m.Changes, c.Save())
	}
	f.Add(m.Encode(), uint8(2), uint8(1), uint16(0))
	h := sha256.Sum256(nil)
	full := &Message{Type: MessageTypeSync, Heads: []Hash{h, h}, Need: []Hash{h}, Have: []Have{{LastSync: []Hash{h}, Bloom: NewBloom([]Hash{h, h}).Encode()}, {}}}
	f.Add(full.Encode(), uint8(2), uint8(2), uint16(6))
	f.Add(full.Encode(), uint8(1), uint8(1), uint16(5))
	f.Fuzz(func(t *testing.T, b []byte, maxHashes, maxHaves uint8, maxBloom uint16) {
		lim := MessageLimits{MaxHashes: int(maxHashes), MaxHaves: int(maxHaves), MaxBloomBytes: int(maxBloom)}
		ml, lerr := ParseMessageLimits(b, lim)
		if lerr != nil && !errors.Is(lerr, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", lerr)
		}
		m, err := ParseMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge) {
				t.Fatalf("error does not wrap ErrMalformed (alone): %v", err)
			}
			if lerr == nil {
				t.Fatalf("ParseMessageLimits accepts what ParseMessage refuses (%v)", err)
			}
			return
		}
		if !bytes.Equal(m.Encode(), b) {
			// Only a non-minimal but accepted encoding could differ; we reject those.
			t.Fatalf("re-encoding differs")
		}
		over := func(n, limit int) bool { return limit > 0 && n > limit }
		exceeds := over(len(m.Heads), lim.MaxHashes) || over(len(m.Need), lim.MaxHashes) || over(len(m.Have), lim.MaxHaves)
		for _, h := range m.Have {
			exceeds = exceeds || over(len(h.LastSync), lim.MaxHashes) || over(len(h.Bloom), lim.MaxBloomBytes)
		}
		switch {
		case exceeds && !errors.Is(lerr, ErrTooLarge):
			t.Fatalf("a message over %+v: %v, want ErrTooLarge", lim, lerr)
		case !exceeds && lerr != nil:
			t.Fatalf("a message within %+v refused: %v", lim, lerr)
		case !exceeds && !bytes.Equal(ml.Encode(), b):
			t.Fatal("ParseMessageLimits parsed differently")
		}
		for _, c := range m.Changes {
			_, _ = ParseChange(c)
		}
	})
}

// FuzzParseChange: what ParseChange accepts has an actor and a seq; with
// an inflate limit (from the fuzzer) a compressed chunk parses the same
// if it inflates to at most the limit, else fails with ErrTooLarge; its
// uncompressed form parses as the same change.
func FuzzParseChange(f *testing.F) {
	docs := randomDocs(f, 4, 2, 20)
	chs, _ := docs[0].Changes()
	for i, c := range chs {
		f.Add(c.Save(), uint32(i*100))
		f.Add(compressChunk(f, c.Save()), uint32(i*100))
	}
	bomb, body := bombChunk(f, []byte("actor"), 100_000)
	f.Add(bomb, uint32(body))
	f.Add(bomb, uint32(body-1))
	f.Fuzz(func(t *testing.T, b []byte, limit uint32) {
		c, err := ParseChange(b)
		lim := int(limit % (1 << 20))
		cl, lerr := ParseChangeLimit(b, lim)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			if lerr == nil {
				t.Fatalf("ParseChangeLimit accepts what ParseChange refuses (%v)", err)
			}
			return
		}
		if len(c.Actor) == 0 || c.Seq == 0 {
			t.Fatal("accepted a change without actor or seq")
		}
		compressed := b[8] == chunkCompressedChange
		switch {
		case compressed && c.InflatedLen() > lim:
			if !errors.Is(lerr, ErrTooLarge) || !errors.Is(lerr, ErrMalformed) {
				t.Fatalf("inflates to %d, limit %d: %v", c.InflatedLen(), lim, lerr)
			}
		case lerr != nil:
			t.Fatalf("inflates to %d, limit %d: %v", c.InflatedLen(), lim, lerr)
		case cl.Hash != c.Hash || !sameFields(cl, c):
			t.Fatal("ParseChangeLimit parsed differently")
		}
		u := c.Uncompressed()
		if !compressed && !bytes.Equal(u, b) || compressed && c.InflatedLen() == 0 {
			t.Fatal("Uncompressed or InflatedLen wrong")
		}
		again, err := ParseChange(u)
		if err != nil || again.Hash != c.Hash || u[8] != chunkChange || !sameFields(again, c) || len(u) != headerLen(u)+c.InflatedLen() && compressed {
			t.Fatalf("the uncompressed form does not parse as the change: %v", err)
		}
	})
}

func TestSplitChunks(t *testing.T) {
	docs := randomDocs(t, 1, 2, 20)
	chs, _ := docs[0].Changes()
	var all []byte
	for _, c := range chs {
		all = append(all, c.Save()...)
	}
	parts, err := SplitChunks(all)
	if err != nil || len(parts) != len(chs) {
		t.Fatalf("SplitChunks: %d parts, %v; want %d", len(parts), err, len(chs))
	}
	for i, p := range parts {
		if !bytes.Equal(p, chs[i].Save()) {
			t.Fatalf("part %d differs", i)
		}
	}
	if parts, err := SplitChunks(nil); err != nil || len(parts) != 0 {
		t.Fatalf("SplitChunks(nil) = %d, %v", len(parts), err)
	}
	for _, bad := range [][]byte{all[:len(all)-1], append(append([]byte{}, all...), 0x85), []byte("junk")} {
		if _, err := SplitChunks(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("SplitChunks of %d bad bytes: %v", len(bad), err)
		}
	}
}

// FuzzSplitChunks: the parts always tile the input exactly.
func FuzzSplitChunks(f *testing.F) {
	docs := randomDocs(f, 2, 2, 10)
	chs, _ := docs[0].Changes()
	var all []byte
	for _, c := range chs {
		all = append(all, c.Save()...)
	}
	f.Add(all)
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, err := SplitChunks(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if got := bytes.Join(parts, nil); !bytes.Equal(got, b) {
			t.Fatal("parts do not tile the input")
		}
	})
}
