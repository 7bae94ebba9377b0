package hub

import (
	"crypto/sha256"
	"io"
	"log/slog"
	"testing"

	"github.com/plaithub/plait/pkg/amsync"

	"github.com/automerge/automerge-go"
)

// FuzzSyncData feeds arbitrary bytes, as a client's sync/request data, to
// the path the hub uses: syncGuard.admit, then automerge-go. A panic in the Rust core would
// abort the whole node, so any input must end in an error or success.
func FuzzSyncData(f *testing.F) {
	src := automerge.New()
	_ = src.RootMap().Set("title", "seed")
	_ = src.Path("items").Set(automerge.NewList())
	_ = src.Path("items").List().Append("a", 1, 2.5, true)
	_, _ = src.Commit("seed")
	ss := automerge.NewSyncState(src)
	first, _ := ss.GenerateMessage()
	f.Add(first.Bytes())
	// What @automerge/automerge 3.5 sends: a 0x42 message plus a flags trailer.
	f.Add(append(first.Bytes(), 0x02, 0x02, 0x84))
	peer := automerge.New()
	pss := automerge.NewSyncState(peer)
	if _, err := pss.ReceiveMessage(first.Bytes()); err != nil {
		f.Fatal(err)
	}
	reply, _ := pss.GenerateMessage()
	if _, err := ss.ReceiveMessage(reply.Bytes()); err != nil {
		f.Fatal(err)
	}
	withChanges, _ := ss.GenerateMessage()
	f.Add(withChanges.Bytes())
	f.Add(src.Save())
	f.Add([]byte{0x42})
	f.Add([]byte{0x43, 0, 0, 0, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		// A hostile client computes checksums: fix them up so that the
		// fuzzer explores changes that pass the checksum check.
		data = fixChecksums(data)
		doc := automerge.New()
		_ = doc.RootMap().Set("k", "v")
		_, _ = doc.Commit("base")
		g, err := newSyncGuard(doc, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		core, ready, err := g.admit(doc, nil, data)
		if err != nil {
			return // refused before the Automerge core sees it
		}
		ss := automerge.NewSyncState(doc)
		_, err = ss.ReceiveMessage(core)
		g.applied(doc, ready)
		if err != nil {
			return
		}
		// Accepted: the document must still work.
		doc.Heads()
		_, _ = ss.GenerateMessage()
		_ = doc.Save()
	})
}

// fixChecksums rewrites the checksum of every uncompressed change chunk in
// a sync message to match its contents.
func fixChecksums(data []byte) []byte {
	m, err := amsync.ParseMessage(data)
	if err != nil {
		return data
	}
	for i, c := range m.Changes {
		if len(c) < 10 || c[8] != 1 {
			continue
		}
		// header: magic(4) checksum(4) type(1) uLEB length, then body
		n, w := uint64(0), 0
		for j := 9; j < len(c) && j < 19; j++ {
			n |= uint64(c[j]&0x7f) << (7 * (j - 9))
			if c[j]&0x80 == 0 {
				w = j - 8
				break
			}
		}
		if w == 0 || uint64(len(c)-9-w) != n {
			continue
		}
		fixed := append([]byte(nil), c...)
		sum := sha256.Sum256(fixed[8:])
		copy(fixed[4:8], sum[:4])
		m.Changes[i] = fixed
	}
	return m.Encode()
}
