package hub_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// BenchmarkOpenLargeDocument: the time from a request for a compacted
// document of N changes (on a hub that does not have it in memory) to the
// first sync message that answers it: the store read, the snapshot's
// changes, the index, the first message. Its allocations are the
// transient memory of opening it. (Before snapshots were changes, a
// 100,000-change document took 6.9 s here, 10,000 took 1.2 s.)
func BenchmarkOpenLargeDocument(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("changes=%d", n), func(b *testing.B) {
			doc := automerge.New()
			for i := range n {
				_ = doc.RootMap().Set(fmt.Sprintf("k%d", i%1000), int64(i))
				if _, err := doc.Commit("c"); err != nil {
					b.Fatal(err)
				}
			}
			chs, err := doc.Changes()
			if err != nil {
				b.Fatal(err)
			}
			var raws [][]byte
			for _, c := range chs {
				raws = append(raws, c.Save())
			}
			store := memstore.New()
			id := protocol.NewDocumentID()
			if _, err := store.AppendChanges(context.Background(), id, slices.Concat(raws...)); err != nil {
				b.Fatal(err)
			}
			snap, _, _, err := hub.CompactStored(store, id, time.Minute, hub.NewMetrics(nil))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				h := newHub(b, store)
				cl := connect(b, h, "reader", "")
				b.StartTimer()
				cl.sync(id, automerge.NewSyncState(automerge.New()), protocol.TypeRequest)
				for {
					m := cl.recv(60 * time.Second)
					if m == nil {
						b.Fatal("no answer")
					}
					if m.Type == protocol.TypeSync {
						break
					}
				}
			}
			b.ReportMetric(float64(snap), "snapshot-bytes")
			b.ReportMetric(float64(len(doc.Save())), "automerge-doc-bytes")
		})
	}
}
