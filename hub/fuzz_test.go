package hub

import (
	"crypto/sha256"
	"testing"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/syncengine"
)

// FuzzSyncData feeds arbitrary bytes, as a client's sync/request data, to
// the sync engine, and what the engine accepts to automerge-go, as
// compaction and clients do. A panic in the Rust core would abort the
// whole process, so the engine must refuse every change the core cannot
// take.
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

	base := automerge.New()
	_ = base.RootMap().Set("k", "v")
	_ = base.Path("list").Set(automerge.NewList())
	_, _ = base.Commit("base")
	baseChanges, err := base.Changes()
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		// A hostile client computes checksums: fix them up so that the
		// fuzzer explores changes that pass the checksum check.
		data = fixChecksums(data)
		eng := syncengine.New(syncengine.Options{})
		if _, err := eng.AddChanges(nil, baseChanges[0].Save()); err != nil {
			t.Fatal(err)
		}
		st := syncengine.NewState()
		if _, err := eng.ReceiveMessage(st, data, nil); err != nil {
			return // refused before anything reaches the Automerge core
		}
		eng.GenerateMessage(st)
		// Accepted: automerge-go must take the changes and keep working.
		doc := automerge.New()
		var all []byte
		eng.All(func(raw []byte) bool { all = append(all, raw...); return true })
		if err := doc.LoadIncremental(all); err != nil {
			t.Fatalf("the engine accepted changes automerge-go refuses: %v", err)
		}
		if got := len(doc.Heads()); got != len(eng.Heads()) {
			t.Fatalf("automerge-go has %d heads, the engine %d", got, len(eng.Heads()))
		}
		ss := automerge.NewSyncState(doc)
		_, _ = ss.GenerateMessage()
		if _, err := automerge.Load(doc.Save()); err != nil {
			t.Fatalf("the document no longer loads: %v", err)
		}
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
