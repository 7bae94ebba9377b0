package boltstore_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plaithub/plait/hub/boltstore"
	"github.com/plaithub/plait/pkg/protocol"
)

func openBench(b *testing.B, opts boltstore.Options) *boltstore.Store {
	b.Helper()
	s, err := boltstore.Open(filepath.Join(b.TempDir(), "plait.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkAppendChangesParallel measures durable appends of ~200-byte
// batches from many goroutines, each the owner of its own documents, as
// the hub calls the store. Every op is fsynced; group commit is what makes
// more writers mean more ops/s. goroutines = p × GOMAXPROCS. delay=1ms
// adds a MaxBatchDelay to the default (none), for comparison.
func BenchmarkAppendChangesParallel(b *testing.B) {
	for _, p := range []int{1, 8, 64} {
		for _, delay := range []time.Duration{0, time.Millisecond} {
			name := fmt.Sprintf("p=%d/delay=default", p)
			if delay > 0 {
				name = fmt.Sprintf("p=%d/delay=%v", p, delay)
			}
			b.Run(name, func(b *testing.B) {
				s := openBench(b, boltstore.Options{MaxBatchDelay: delay})
				batch := make([]byte, 200)
				for i := range batch {
					batch[i] = byte(i)
				}
				const docsPerGoroutine = 8
				var next atomic.Int64
				b.SetParallelism(p)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					g := next.Add(1)
					ids := make([]protocol.DocumentID, docsPerGoroutine)
					for i := range ids {
						ids[i] = protocol.DocumentID(fmt.Sprintf("bench-%d-%d", g, i))
					}
					ctx := b.Context()
					for i := 0; pb.Next(); i++ {
						if _, err := s.AppendChanges(ctx, ids[i%docsPerGoroutine], batch); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
		}
	}
}

// BenchmarkAppendChangesSerial is one document owner appending alone: the
// latency of one durable append, which a MaxBatchDelay adds to.
func BenchmarkAppendChangesSerial(b *testing.B) {
	for _, delay := range []time.Duration{0, time.Millisecond} {
		name := "delay=default"
		if delay > 0 {
			name = fmt.Sprintf("delay=%v", delay)
		}
		b.Run(name, func(b *testing.B) {
			s := openBench(b, boltstore.Options{MaxBatchDelay: delay})
			batch := make([]byte, 200)
			ctx := b.Context()
			for b.Loop() {
				if _, err := s.AppendChanges(ctx, "bench-serial", batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkLoadDoc loads a document with a 64 KiB snapshot and n 200-byte
// batches, as the hub does when it opens a document.
func BenchmarkLoadDoc(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("batches=%d", n), func(b *testing.B) {
			s := openBench(b, boltstore.Options{})
			ctx := b.Context()
			const id = protocol.DocumentID("bench-load")
			if _, err := s.AppendChanges(ctx, id, nil); err != nil {
				b.Fatal(err)
			}
			if err := s.Compact(ctx, id, make([]byte, 64<<10), 0); err != nil {
				b.Fatal(err)
			}
			batch := make([]byte, 200)
			for range n {
				if _, err := s.AppendChanges(ctx, id, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				doc, err := s.LoadDoc(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				if len(doc.Batches) != n {
					b.Fatalf("got %d batches, want %d", len(doc.Batches), n)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkAppendAfterSnapshot appends to a document that has a snapshot
// of 1 MiB: what an edit of a long-lived document costs the store. Its
// cost must not grow with the snapshot (the snapshot is not rewritten).
func BenchmarkAppendAfterSnapshot(b *testing.B) {
	for _, size := range []int{1 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("snapshot=%d", size), func(b *testing.B) {
			s := openBench(b, boltstore.Options{})
			ctx := b.Context()
			const id = protocol.DocumentID("bench-snap")
			if _, err := s.AppendChanges(ctx, id, make([]byte, 200)); err != nil {
				b.Fatal(err)
			}
			if err := s.Compact(ctx, id, make([]byte, size), 1); err != nil {
				b.Fatal(err)
			}
			batch := make([]byte, 200)
			for b.Loop() {
				if _, err := s.AppendChanges(ctx, id, batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
