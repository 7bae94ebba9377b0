package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

// RunStoreTests runs the hub.Store conformance suite. newStore must return
// an open store; it is called once per subtest. The suite closes every store
// it gets (with t.Cleanup, ignoring the error, or itself where Close is under
// test), so newStore need not; a cleanup that newStore registers must
// tolerate a store that is already closed.
func RunStoreTests(t *testing.T, newStore func(t *testing.T) hub.Store) {
	open := func(t *testing.T) hub.Store {
		t.Helper()
		s := newStore(t)
		if s == nil {
			t.Fatal("newStore returned nil")
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s hub.Store)
	}{
		{"StorageID/NonEmptyAndStable", testStorageIDStable},
		{"LoadDoc/UnknownIsNotFound", testLoadUnknown},
		{"AppendChanges/CreatesDoc", testAppendCreatesDoc},
		{"AppendChanges/EmptyBatchOnlyCreatesDoc", testEmptyBatch},
		{"AppendChanges/SeqStrictlyIncreasing", testSeqIncreasing},
		{"AppendChanges/DocsAreIndependent", testDocsIndependent},
		{"AppendChanges/BatchesInOrderExactBytes", testBatchesExactBytes},
		{"Ownership/CallerMayReuseInput", testInputReuse},
		{"Ownership/ReturnedSlicesBelongToCaller", testReturnedOwnership},
		{"Compact/ReplacesSnapshotDeletesThroughSeq", testCompact},
		{"Compact/KeepsBatchesAppendedAfterThroughSeq", testCompactKeepsLater},
		{"Compact/UnknownDocIsNotFound", testCompactUnknown},
		{"Compact/SeqNeverReused", testSeqNotReusedAfterCompact},
		{"Compact/ConflictWhenAlreadyCompactedLater", testCompactConflict},
		{"Compact/ThroughBeyondLastSeqIsConflict", testCompactBeyondLast},
		{"Compact/ConcurrentCompactorsLoseNothing", testConcurrentCompactors},
		{"DeleteDoc/RemovesDocBatchesAndSyncStates", testDelete},
		{"DeleteDoc/Idempotent", testDeleteIdempotent},
		{"DeleteDoc/RecreatedDocStartsEmpty", testDeleteRecreate},
		{"DeleteDoc/PrefixIDsUntouched", testDeletePrefixIDs},
		{"SyncState/UnknownIsNotFound", testSyncStateUnknown},
		{"SyncState/IndependentPerDocAndStorage", testSyncStateIndependent},
		{"SyncState/Overwrite", testSyncStateOverwrite},
		{"Concurrency/ManyDocs", testConcurrentManyDocs},
		{"Concurrency/SameDoc", testConcurrentSameDoc},
		{"Context/CancelledFailsWithoutEffect", testCancelledContext},
		{"Close/CallsAfterCloseFail", testAfterClose},
		{"LargeValues", testLargeValues},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// RunPersistenceTests checks that a store keeps everything across Close and
// reopen. open must open (creating if needed) the store kept in dir, a fresh
// directory from t.TempDir; the suite calls it several times with the same
// dir, closing the previous store first. As in RunStoreTests, the suite
// closes every store it opens.
func RunPersistenceTests(t *testing.T, open func(t *testing.T, dir string) hub.Store) {
	openStore := func(t *testing.T, dir string) hub.Store {
		t.Helper()
		s := open(t, dir)
		if s == nil {
			t.Fatal("open returned nil")
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	reopen := func(t *testing.T, s hub.Store, dir string) hub.Store {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		return openStore(t, dir)
	}

	t.Run("Reopen/EverythingSurvives", func(t *testing.T) {
		ctx := t.Context()
		dir := t.TempDir()
		s := openStore(t, dir)
		sid := mustStorageID(t, s)

		a, b, c := newDocID(t), newDocID(t), newDocID(t)
		var seqs []uint64
		for i := range 5 {
			seqs = append(seqs, mustAppend(t, s, a, fmt.Appendf(nil, "a-%d", i)))
		}
		snap := randBytes(t, 1000)
		mustCompact(t, s, a, snap, seqs[2])
		var want []hub.Batch
		for _, i := range []int{3, 4} {
			want = append(want, hub.Batch{Seq: seqs[i], Data: fmt.Appendf(nil, "a-%d", i)})
		}
		for i := 5; i < 7; i++ {
			seq := mustAppend(t, s, a, fmt.Appendf(nil, "a-%d", i))
			want = append(want, hub.Batch{Seq: seq, Data: fmt.Appendf(nil, "a-%d", i)})
		}
		mustAppend(t, s, b, nil)
		mustAppend(t, s, c, []byte("c"))
		mustSaveSync(t, s, a, "peer-1", []byte("a1"))
		mustSaveSync(t, s, a, "peer-2", []byte("a2"))
		mustSaveSync(t, s, c, "peer-1", []byte("c1"))
		if err := s.DeleteDoc(ctx, c); err != nil {
			t.Fatalf("DeleteDoc: %v", err)
		}

		s = reopen(t, s, dir)
		if got := mustStorageID(t, s); got != sid {
			t.Errorf("StorageID after reopen = %q, want %q", got, sid)
		}
		checkDoc(t, mustLoad(t, s, a), snap, want)
		checkDoc(t, mustLoad(t, s, b), nil, nil)
		checkNotFound(t, "LoadDoc of deleted doc", loadErr(s, ctx, c))
		checkSync(t, s, a, "peer-1", []byte("a1"))
		checkSync(t, s, a, "peer-2", []byte("a2"))
		_, err := s.LoadSyncState(ctx, c, "peer-1")
		checkNotFound(t, "LoadSyncState of deleted doc", err)

		last := want[len(want)-1].Seq
		if seq := mustAppend(t, s, a, []byte("after reopen")); seq <= last {
			t.Errorf("seq after reopen = %d, want > %d", seq, last)
		}
	})

	t.Run("Reopen/SeqNeverReusedAfterCompactAll", func(t *testing.T) {
		dir := t.TempDir()
		s := openStore(t, dir)
		a := newDocID(t)
		var last uint64
		for i := range 3 {
			last = mustAppend(t, s, a, fmt.Appendf(nil, "%d", i))
		}
		mustCompact(t, s, a, []byte("snap"), last)
		s = reopen(t, s, dir)
		checkDoc(t, mustLoad(t, s, a), []byte("snap"), nil)
		if seq := mustAppend(t, s, a, []byte("next")); seq <= last {
			t.Errorf("seq after compact and reopen = %d, want > %d (seq reused)", seq, last)
		}
	})

	t.Run("Reopen/CompactionVersionSurvives", func(t *testing.T) {
		dir := t.TempDir()
		s := openStore(t, dir)
		a := newDocID(t)
		var all []hub.Batch
		for i := range 3 {
			data := fmt.Appendf(nil, "%d", i)
			all = append(all, hub.Batch{Seq: mustAppend(t, s, a, data), Data: data})
		}
		mustCompact(t, s, a, []byte("snap"), all[1].Seq)
		s = reopen(t, s, dir)
		if err := s.Compact(t.Context(), a, []byte("stale"), all[1].Seq); !errors.Is(err, hub.ErrCompactConflict) {
			t.Fatalf("Compact through %d again after reopen: error = %v, want one wrapping hub.ErrCompactConflict", all[1].Seq, err)
		}
		checkDoc(t, mustLoad(t, s, a), []byte("snap"), all[2:])
		mustCompact(t, s, a, []byte("snap-2"), all[2].Seq)
		checkDoc(t, mustLoad(t, s, a), []byte("snap-2"), nil)
	})

	t.Run("Reopen/ConcurrentAppendsSurvive", func(t *testing.T) {
		dir := t.TempDir()
		s := openStore(t, dir)
		want := concurrentAppends(t, s, 16, 2, 10)
		s = reopen(t, s, dir)
		for id, batches := range want {
			checkDoc(t, mustLoad(t, s, id), nil, batches)
		}
	})

	t.Run("Reopen/RepeatedCycles", func(t *testing.T) {
		dir := t.TempDir()
		s := openStore(t, dir)
		sid := mustStorageID(t, s)
		a := newDocID(t)
		var want []hub.Batch
		for i := range 3 {
			data := fmt.Appendf(nil, "cycle-%d", i)
			want = append(want, hub.Batch{Seq: mustAppend(t, s, a, data), Data: data})
			s = reopen(t, s, dir)
			if got := mustStorageID(t, s); got != sid {
				t.Fatalf("cycle %d: StorageID = %q, want %q", i, got, sid)
			}
			checkDoc(t, mustLoad(t, s, a), nil, want)
		}
	})

	t.Run("StorageID/DistinctPerStorage", func(t *testing.T) {
		s1 := openStore(t, t.TempDir())
		s2 := openStore(t, t.TempDir())
		if id1, id2 := mustStorageID(t, s1), mustStorageID(t, s2); id1 == id2 {
			t.Errorf("two storages share StorageID %q; it must be created at random", id1)
		}
	})
}

// ---- RunStoreTests subtests ----

func testStorageIDStable(t *testing.T, s hub.Store) {
	first := mustStorageID(t, s)
	if first == "" {
		t.Fatal("StorageID is empty")
	}
	mustAppend(t, s, newDocID(t), []byte("x"))
	for i := range 3 {
		if got := mustStorageID(t, s); got != first {
			t.Fatalf("call %d: StorageID = %q, want %q", i+2, got, first)
		}
	}
}

func testLoadUnknown(t *testing.T, s hub.Store) {
	checkNotFound(t, "LoadDoc of unknown doc", loadErr(s, t.Context(), newDocID(t)))
}

func testAppendCreatesDoc(t *testing.T, s hub.Store) {
	id := newDocID(t)
	data := []byte("first batch")
	seq := mustAppend(t, s, id, data)
	checkDoc(t, mustLoad(t, s, id), nil, []hub.Batch{{Seq: seq, Data: data}})
}

func testEmptyBatch(t *testing.T, s hub.Store) {
	id := newDocID(t)
	s0 := mustAppend(t, s, id, nil)
	checkDoc(t, mustLoad(t, s, id), nil, nil)

	s1 := mustAppend(t, s, id, []byte{})
	checkDoc(t, mustLoad(t, s, id), nil, nil)

	data := []byte("real batch")
	s2 := mustAppend(t, s, id, data)
	if s2 <= s0 || s2 <= s1 {
		t.Errorf("seq of batch after empty appends = %d, want > %d and > %d", s2, s0, s1)
	}
	s3 := mustAppend(t, s, id, nil)
	if s3 < s2 {
		t.Errorf("empty append after batch %d returned %d; seqs must not go back", s2, s3)
	}
	checkDoc(t, mustLoad(t, s, id), nil, []hub.Batch{{Seq: s2, Data: data}})
	if s4 := mustAppend(t, s, id, []byte("again")); s4 <= s3 || s4 <= s2 {
		t.Errorf("seq = %d, want > %d", s4, max(s2, s3))
	}
}

func testSeqIncreasing(t *testing.T, s hub.Store) {
	id := newDocID(t)
	var prev uint64
	for i := range 50 {
		seq := mustAppend(t, s, id, fmt.Appendf(nil, "batch %d", i))
		if i > 0 && seq <= prev {
			t.Fatalf("append %d: seq %d not greater than previous %d", i, seq, prev)
		}
		prev = seq
	}
}

func testDocsIndependent(t *testing.T, s hub.Store) {
	a, b := newDocID(t), newDocID(t)
	want := map[protocol.DocumentID][]hub.Batch{}
	for i, id := range []protocol.DocumentID{a, b, a, a, b, b, b, a, b, a} {
		data := fmt.Appendf(nil, "%s/%d", id, i)
		seq := mustAppend(t, s, id, data)
		if n := len(want[id]); n > 0 && seq <= want[id][n-1].Seq {
			t.Fatalf("doc %s: seq %d not greater than previous %d", id, seq, want[id][n-1].Seq)
		}
		want[id] = append(want[id], hub.Batch{Seq: seq, Data: data})
	}
	checkDoc(t, mustLoad(t, s, a), nil, want[a])
	checkDoc(t, mustLoad(t, s, b), nil, want[b])
}

func testBatchesExactBytes(t *testing.T, s hub.Store) {
	id := newDocID(t)
	var want []hub.Batch
	for _, n := range []int{1, 2, 7, 255, 256, 4095, 4096, 4097, 70000} {
		data := randBytes(t, n)
		want = append(want, hub.Batch{Seq: mustAppend(t, s, id, data), Data: data})
	}
	// Bytes that trip up text or key encodings.
	for _, data := range [][]byte{{0}, {0, 0, 0}, {0xff}, []byte("\x00sep\x00"), []byte("\r\n")} {
		want = append(want, hub.Batch{Seq: mustAppend(t, s, id, data), Data: data})
	}
	checkDoc(t, mustLoad(t, s, id), nil, want)
}

func testInputReuse(t *testing.T, s hub.Store) {
	ctx := t.Context()
	id := newDocID(t)

	// One buffer reused for every call, as an encoder would.
	buf := make([]byte, 0, 64)
	var want []hub.Batch
	for i := range 3 {
		buf = fmt.Appendf(buf[:0], "batch %d", i)
		seq := mustAppend(t, s, id, buf)
		want = append(want, hub.Batch{Seq: seq, Data: fmt.Appendf(nil, "batch %d", i)})
		for j := range buf {
			buf[j] = 'X'
		}
	}
	checkDoc(t, mustLoad(t, s, id), nil, want)

	snap := []byte("snapshot")
	mustCompact(t, s, id, snap, want[0].Seq)
	copy(snap, "XXXXXXXX")
	checkDoc(t, mustLoad(t, s, id), []byte("snapshot"), want[1:])

	state := []byte("sync state")
	if err := s.SaveSyncState(ctx, id, "peer", state); err != nil {
		t.Fatalf("SaveSyncState: %v", err)
	}
	copy(state, "XXXXXXXXXX")
	checkSync(t, s, id, "peer", []byte("sync state"))
}

func testReturnedOwnership(t *testing.T, s hub.Store) {
	id := newDocID(t)
	mustAppend(t, s, id, []byte("one"))
	mustAppend(t, s, id, []byte("two"))
	mustCompact(t, s, id, []byte("snap"), 0)
	mustSaveSync(t, s, id, "peer", []byte("state"))

	doc := mustLoad(t, s, id)
	want := cloneDoc(doc)

	// Returned slices do not alias one another: appending to one (which
	// writes in place if it has spare capacity) leaves the others intact.
	_ = append(doc.Snapshot, '!')
	for _, b := range doc.Batches {
		_ = append(b.Data, '!')
	}
	checkDoc(t, doc, want.Snapshot, want.Batches)

	// Nor do they alias the store's copy.
	for _, b := range doc.Batches {
		scribble(b.Data)
	}
	scribble(doc.Snapshot)
	doc.Batches[0].Seq = 999999
	checkDoc(t, mustLoad(t, s, id), want.Snapshot, want.Batches)

	st, err := s.LoadSyncState(t.Context(), id, "peer")
	if err != nil {
		t.Fatalf("LoadSyncState: %v", err)
	}
	scribble(st)
	checkSync(t, s, id, "peer", []byte("state"))
}

func testCompact(t *testing.T, s hub.Store) {
	id := newDocID(t)
	var all []hub.Batch
	for i := range 5 {
		data := fmt.Appendf(nil, "b%d", i)
		all = append(all, hub.Batch{Seq: mustAppend(t, s, id, data), Data: data})
	}
	// throughSeq 0 on a never-compacted doc replaces only the snapshot.
	mustCompact(t, s, id, []byte("snap-0"), 0)
	checkDoc(t, mustLoad(t, s, id), []byte("snap-0"), all)

	mustCompact(t, s, id, []byte("snap-1"), all[2].Seq)
	checkDoc(t, mustLoad(t, s, id), []byte("snap-1"), all[3:])

	// A throughSeq between two stored seqs.
	mustCompact(t, s, id, []byte("snap-3"), all[3].Seq)
	checkDoc(t, mustLoad(t, s, id), []byte("snap-3"), all[4:])

	// Through the last seq removes all batches.
	mustCompact(t, s, id, []byte("snap-4"), all[4].Seq)
	checkDoc(t, mustLoad(t, s, id), []byte("snap-4"), nil)

	// A doc created by an empty batch (last seq 0) can be compacted
	// through 0.
	e := newDocID(t)
	if last := mustAppend(t, s, e, nil); last != 0 {
		t.Fatalf("empty batch on a new doc returned seq %d, want 0", last)
	}
	mustCompact(t, s, e, []byte("snap-e"), 0)
	checkDoc(t, mustLoad(t, s, e), []byte("snap-e"), nil)
}

// testCompactBeyondLast checks that Compact refuses a throughSeq beyond the
// last seq handed out: such a snapshot was built from batches the store no
// longer knows (it lost data) and must not replace batches that may reuse
// those seqs.
func testCompactBeyondLast(t *testing.T, s hub.Store) {
	ctx := t.Context()
	id := newDocID(t)
	var all []hub.Batch
	for i := range 3 {
		data := fmt.Appendf(nil, "b%d", i)
		all = append(all, hub.Batch{Seq: mustAppend(t, s, id, data), Data: data})
	}
	last := all[2].Seq // 3 in every store so far; the contract only says increasing
	for _, through := range []uint64{last + 1, math.MaxUint64} {
		err := s.Compact(ctx, id, []byte("beyond"), through)
		if !errors.Is(err, hub.ErrCompactConflict) {
			t.Fatalf("Compact through %d with last seq %d: error = %v, want one wrapping hub.ErrCompactConflict",
				through, last, err)
		}
		checkDoc(t, mustLoad(t, s, id), nil, all)
	}
	mustCompact(t, s, id, []byte("through-last"), last)
	checkDoc(t, mustLoad(t, s, id), []byte("through-last"), nil)

	// A doc created by an empty batch has last seq 0: 1 is beyond it.
	e := newDocID(t)
	mustAppend(t, s, e, nil)
	if err := s.Compact(ctx, e, []byte("beyond"), 1); !errors.Is(err, hub.ErrCompactConflict) {
		t.Fatalf("Compact through 1 with last seq 0: error = %v, want one wrapping hub.ErrCompactConflict", err)
	}
	checkDoc(t, mustLoad(t, s, e), nil, nil)
}

func testCompactKeepsLater(t *testing.T, s hub.Store) {
	id := newDocID(t)
	var all []hub.Batch
	for i := range 3 {
		data := fmt.Appendf(nil, "before-%d", i)
		all = append(all, hub.Batch{Seq: mustAppend(t, s, id, data), Data: data})
	}
	// The owner takes a snapshot covering all[2].Seq; more changes arrive
	// before Compact is called.
	through := all[2].Seq
	var later []hub.Batch
	for i := range 2 {
		data := fmt.Appendf(nil, "after-%d", i)
		later = append(later, hub.Batch{Seq: mustAppend(t, s, id, data), Data: data})
	}
	mustCompact(t, s, id, []byte("snap"), through)
	checkDoc(t, mustLoad(t, s, id), []byte("snap"), later)
}

func testCompactUnknown(t *testing.T, s hub.Store) {
	id := newDocID(t)
	err := s.Compact(t.Context(), id, []byte("snap"), 1)
	checkNotFound(t, "Compact of unknown doc", err)
	checkNotFound(t, "LoadDoc after Compact of unknown doc", loadErr(s, t.Context(), id))

	// A deleted doc is unknown too.
	mustAppend(t, s, id, []byte("x"))
	if err := s.DeleteDoc(t.Context(), id); err != nil {
		t.Fatalf("DeleteDoc: %v", err)
	}
	checkNotFound(t, "Compact of deleted doc", s.Compact(t.Context(), id, []byte("snap"), 1))
}

func testSeqNotReusedAfterCompact(t *testing.T, s hub.Store) {
	id := newDocID(t)
	var last uint64
	for i := range 3 {
		last = mustAppend(t, s, id, fmt.Appendf(nil, "%d", i))
	}
	mustCompact(t, s, id, []byte("snap"), last)
	next := mustAppend(t, s, id, []byte("next"))
	if next <= last {
		t.Fatalf("seq after Compact = %d, want > %d (seq reused)", next, last)
	}
	mustCompact(t, s, id, []byte("snap2"), next)
	if again := mustAppend(t, s, id, []byte("again")); again <= next {
		t.Fatalf("seq after second Compact = %d, want > %d", again, next)
	}
}

func testCompactConflict(t *testing.T, s hub.Store) {
	ctx := t.Context()
	id := newDocID(t)
	var all []hub.Batch
	for i := range 5 {
		data := fmt.Appendf(nil, "b%d", i)
		all = append(all, hub.Batch{Seq: mustAppend(t, s, id, data), Data: data})
	}
	mustCompact(t, s, id, []byte("through-3"), all[2].Seq)
	checkDoc(t, mustLoad(t, s, id), []byte("through-3"), all[3:])

	// An older or equal compaction version is refused and changes nothing:
	// its snapshot may lack batches the stored one holds.
	for _, through := range []uint64{all[1].Seq, all[2].Seq, 0} {
		err := s.Compact(ctx, id, []byte("stale"), through)
		if !errors.Is(err, hub.ErrCompactConflict) {
			t.Fatalf("Compact through %d after compacting through %d: error = %v, want one wrapping hub.ErrCompactConflict",
				through, all[2].Seq, err)
		}
		checkDoc(t, mustLoad(t, s, id), []byte("through-3"), all[3:])
	}

	// A later one still works.
	mustCompact(t, s, id, []byte("through-4"), all[3].Seq)
	checkDoc(t, mustLoad(t, s, id), []byte("through-4"), all[4:])

	// DeleteDoc resets the compaction version: a document created again
	// under the same id may be compacted through its own (possibly lower)
	// seqs.
	if err := s.DeleteDoc(ctx, id); err != nil {
		t.Fatalf("DeleteDoc: %v", err)
	}
	seq := mustAppend(t, s, id, []byte("new-0"))
	mustCompact(t, s, id, []byte("new-snap"), seq)
	checkDoc(t, mustLoad(t, s, id), []byte("new-snap"), nil)
}

// testConcurrentCompactors has writers append to one document while
// compactors, as other nodes sharing the store would, repeatedly load it,
// fold what they loaded into a new snapshot and compact through the last
// seq they saw. Whatever interleaving wins, every batch must end up in the
// snapshot or the remaining batches exactly once.
func testConcurrentCompactors(t *testing.T, s hub.Store) {
	const (
		writers, perWriter = 4, 30
		compactors         = 3
		maxRounds          = 2000 // per compactor
	)
	ctx := t.Context()
	id := newDocID(t)
	mustAppend(t, s, id, nil)

	var (
		wg, writing sync.WaitGroup
		stop        = make(chan struct{})
		errs        = make(chan error, writers+compactors)
	)
	var compacted, conflicts atomic.Int64
	writing.Add(writers)
	for w := range writers {
		wg.Go(func() {
			defer writing.Done()
			for i := range perWriter {
				if _, err := s.AppendChanges(ctx, id, concurrentItem(w, i)); err != nil {
					errs <- fmt.Errorf("AppendChanges: %w", err)
					return
				}
				// Let compactors run between appends even on a store
				// as fast as a map.
				time.Sleep(200 * time.Microsecond)
			}
		})
	}
	go func() { writing.Wait(); close(stop) }()
	deadline := time.Now().Add(20 * time.Second)
	for range compactors {
		wg.Go(func() {
			for round := 0; round < maxRounds && time.Now().Before(deadline); round++ {
				select {
				case <-stop:
					return
				default:
				}
				ok, err := compactOnce(ctx, s, id)
				switch {
				case errors.Is(err, hub.ErrCompactConflict):
					conflicts.Add(1)
				case err != nil:
					errs <- err
					return
				case ok:
					compacted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	// One last compaction with no one else around must succeed (if there
	// is anything left to fold in), so the check below covers a snapshot.
	if ok, err := compactOnce(ctx, s, id); err != nil {
		t.Fatalf("final compaction: %v", err)
	} else if ok {
		compacted.Add(1)
	}
	if compacted.Load() == 0 {
		t.Fatal("no compaction succeeded; the test checked nothing")
	}
	t.Logf("%d compactions, %d conflicts", compacted.Load(), conflicts.Load())

	doc := mustLoad(t, s, id)
	items, err := decodeItems(doc.Snapshot)
	if err != nil {
		t.Fatalf("stored snapshot: %v", err)
	}
	for _, b := range doc.Batches {
		items = append(items, b.Data)
	}
	count := map[string]int{}
	for _, it := range items {
		count[string(it)]++
	}
	for w := range writers {
		for i := range perWriter {
			item := string(concurrentItem(w, i))
			switch n := count[item]; n {
			case 1:
			case 0:
				t.Errorf("batch %q was lost", item)
			default:
				t.Errorf("batch %q is stored %d times", item, n)
			}
			delete(count, item)
		}
	}
	for item, n := range count {
		t.Errorf("stored %d times a batch never appended: %s", n, short([]byte(item)))
	}
}

// concurrentItem is the w-th writer's i-th batch in testConcurrentCompactors.
func concurrentItem(w, i int) []byte {
	return fmt.Appendf(nil, "w%d-i%d-%s", w, i, bytes.Repeat([]byte{byte(w), 0, '\n'}, i%5))
}

// compactOnce loads id, folds the loaded snapshot and batches into one
// snapshot and compacts through the last loaded batch. It reports whether it
// compacted: false if there was no batch to fold in.
func compactOnce(ctx context.Context, s hub.Store, id protocol.DocumentID) (bool, error) {
	doc, err := s.LoadDoc(ctx, id)
	if err != nil {
		return false, fmt.Errorf("LoadDoc: %w", err)
	}
	if len(doc.Batches) == 0 {
		return false, nil
	}
	items, err := decodeItems(doc.Snapshot)
	if err != nil {
		return false, fmt.Errorf("loaded snapshot: %w", err)
	}
	for _, b := range doc.Batches {
		items = append(items, b.Data)
	}
	through := doc.Batches[len(doc.Batches)-1].Seq
	if err := s.Compact(ctx, id, encodeItems(items), through); err != nil {
		return false, fmt.Errorf("Compact through %d: %w", through, err)
	}
	return true, nil
}

// encodeItems is a self-delimiting encoding of a list of byte strings:
// each item as a uvarint length and its bytes.
func encodeItems(items [][]byte) []byte {
	var out []byte
	for _, it := range items {
		out = binary.AppendUvarint(out, uint64(len(it)))
		out = append(out, it...)
	}
	return out
}

// decodeItems reverses encodeItems; nil and empty decode to no items.
func decodeItems(b []byte) ([][]byte, error) {
	var items [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, fmt.Errorf("malformed item list at %d bytes from the end", len(b))
		}
		items = append(items, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return items, nil
}

func testDelete(t *testing.T, s hub.Store) {
	ctx := t.Context()
	a, b := newDocID(t), newDocID(t)
	mustAppend(t, s, a, []byte("a0"))
	seqA := mustAppend(t, s, a, []byte("a1"))
	mustCompact(t, s, a, []byte("snap-a"), seqA)
	mustAppend(t, s, a, []byte("a2"))
	mustSaveSync(t, s, a, "peer-1", []byte("a-p1"))
	mustSaveSync(t, s, a, "peer-2", []byte("a-p2"))

	seqB := mustAppend(t, s, b, []byte("b0"))
	mustSaveSync(t, s, b, "peer-1", []byte("b-p1"))

	if err := s.DeleteDoc(ctx, a); err != nil {
		t.Fatalf("DeleteDoc: %v", err)
	}
	checkNotFound(t, "LoadDoc after DeleteDoc", loadErr(s, ctx, a))
	for _, peer := range []string{"peer-1", "peer-2"} {
		_, err := s.LoadSyncState(ctx, a, peer)
		checkNotFound(t, "LoadSyncState after DeleteDoc", err)
	}
	// The other document is untouched.
	checkDoc(t, mustLoad(t, s, b), nil, []hub.Batch{{Seq: seqB, Data: []byte("b0")}})
	checkSync(t, s, b, "peer-1", []byte("b-p1"))
}

func testDeleteIdempotent(t *testing.T, s hub.Store) {
	ctx := t.Context()
	if err := s.DeleteDoc(ctx, newDocID(t)); err != nil {
		t.Fatalf("DeleteDoc of a never-created doc: %v", err)
	}
	id := newDocID(t)
	mustAppend(t, s, id, []byte("x"))
	for i := range 3 {
		if err := s.DeleteDoc(ctx, id); err != nil {
			t.Fatalf("DeleteDoc #%d: %v", i+1, err)
		}
	}
	checkNotFound(t, "LoadDoc after DeleteDoc", loadErr(s, ctx, id))

	// A doc that only has a sync state can be deleted too.
	other := newDocID(t)
	mustSaveSync(t, s, other, "peer", []byte("state"))
	if err := s.DeleteDoc(ctx, other); err != nil {
		t.Fatalf("DeleteDoc of doc with only a sync state: %v", err)
	}
	_, err := s.LoadSyncState(ctx, other, "peer")
	checkNotFound(t, "LoadSyncState after DeleteDoc", err)
}

func testDeleteRecreate(t *testing.T, s hub.Store) {
	id := newDocID(t)
	old := mustAppend(t, s, id, []byte("old-0"))
	mustCompact(t, s, id, []byte("old-snap"), old)
	mustAppend(t, s, id, []byte("old-1"))
	mustSaveSync(t, s, id, "peer", []byte("old-state"))
	if err := s.DeleteDoc(t.Context(), id); err != nil {
		t.Fatalf("DeleteDoc: %v", err)
	}
	seq := mustAppend(t, s, id, []byte("new-0"))
	checkDoc(t, mustLoad(t, s, id), nil, []hub.Batch{{Seq: seq, Data: []byte("new-0")}})
	_, err := s.LoadSyncState(t.Context(), id, "peer")
	checkNotFound(t, "LoadSyncState of recreated doc", err)
}

func testDeletePrefixIDs(t *testing.T, s hub.Store) {
	// Ids that are prefixes of one another catch key-prefix scans that
	// overreach.
	short := newDocID(t)
	long := short + "x"
	mustAppend(t, s, short, []byte("short"))
	seqLong := mustAppend(t, s, long, []byte("long"))
	mustSaveSync(t, s, short, "peer", []byte("short-state"))
	mustSaveSync(t, s, long, "peer", []byte("long-state"))
	mustSaveSync(t, s, long, "", []byte("long-empty-peer"))
	if err := s.DeleteDoc(t.Context(), short); err != nil {
		t.Fatalf("DeleteDoc: %v", err)
	}
	checkDoc(t, mustLoad(t, s, long), nil, []hub.Batch{{Seq: seqLong, Data: []byte("long")}})
	checkSync(t, s, long, "peer", []byte("long-state"))
	checkSync(t, s, long, "", []byte("long-empty-peer"))
}

func testSyncStateUnknown(t *testing.T, s hub.Store) {
	ctx := t.Context()
	_, err := s.LoadSyncState(ctx, newDocID(t), "peer")
	checkNotFound(t, "LoadSyncState of unknown doc", err)

	id := newDocID(t)
	mustAppend(t, s, id, []byte("x"))
	mustSaveSync(t, s, id, "peer-1", []byte("state"))
	_, err = s.LoadSyncState(ctx, id, "peer-2")
	checkNotFound(t, "LoadSyncState of unknown storage id", err)
	_, err = s.LoadSyncState(ctx, id, "peer-")
	checkNotFound(t, "LoadSyncState of a prefix of a known storage id", err)
}

func testSyncStateIndependent(t *testing.T, s hub.Store) {
	a, b := newDocID(t), newDocID(t)
	peers := []string{"peer-1", "peer-2", "peer-10", ""}
	for _, id := range []protocol.DocumentID{a, b} {
		for _, p := range peers {
			mustSaveSync(t, s, id, p, []byte(string(id)+"|"+p))
		}
	}
	for _, id := range []protocol.DocumentID{a, b} {
		for _, p := range peers {
			checkSync(t, s, id, p, []byte(string(id)+"|"+p))
		}
	}
	// Sync states do not show up as batches or snapshot.
	mustAppend(t, s, a, nil)
	checkDoc(t, mustLoad(t, s, a), nil, nil)
}

func testSyncStateOverwrite(t *testing.T, s hub.Store) {
	id := newDocID(t)
	mustSaveSync(t, s, id, "peer-1", []byte("a long first state"))
	mustSaveSync(t, s, id, "peer-2", []byte("other"))
	mustSaveSync(t, s, id, "peer-1", []byte("short"))
	checkSync(t, s, id, "peer-1", []byte("short"))
	mustSaveSync(t, s, id, "peer-1", []byte("a much longer third state than before"))
	checkSync(t, s, id, "peer-1", []byte("a much longer third state than before"))
	checkSync(t, s, id, "peer-2", []byte("other"))
}

func testConcurrentManyDocs(t *testing.T, s hub.Store) {
	want := concurrentAppends(t, s, 32, 4, 15)
	for id, batches := range want {
		checkDoc(t, mustLoad(t, s, id), nil, batches)
		checkSync(t, s, id, "peer", fmt.Appendf(nil, "state-%s-%d", id, len(batches)-1))
	}
}

// concurrentAppends runs one goroutine per group of docs (as the hub runs
// one owner goroutine per document), each appending n batches to each of
// its docs, saving sync states and loading as it goes. It returns what each
// doc must hold.
func concurrentAppends(t *testing.T, s hub.Store, goroutines, docsEach, n int) map[protocol.DocumentID][]hub.Batch {
	t.Helper()
	ctx := t.Context()
	var (
		mu   sync.Mutex
		want = map[protocol.DocumentID][]hub.Batch{}
		wg   sync.WaitGroup
		errs = make(chan error, goroutines)
	)
	for g := range goroutines {
		ids := make([]protocol.DocumentID, docsEach)
		for i := range ids {
			ids[i] = newDocID(t)
		}
		wg.Go(func() {
			mine := map[protocol.DocumentID][]hub.Batch{}
			for i := range n {
				for _, id := range ids {
					data := fmt.Appendf(nil, "g%d-%s-%d-%s", g, id, i, bytes.Repeat([]byte{'.'}, i*7))
					seq, err := s.AppendChanges(ctx, id, data)
					if err != nil {
						errs <- fmt.Errorf("AppendChanges: %w", err)
						return
					}
					if prev := mine[id]; len(prev) > 0 && seq <= prev[len(prev)-1].Seq {
						errs <- fmt.Errorf("doc %s: seq %d not greater than %d", id, seq, prev[len(prev)-1].Seq)
						return
					}
					mine[id] = append(mine[id], hub.Batch{Seq: seq, Data: data})
					if err := s.SaveSyncState(ctx, id, "peer", fmt.Appendf(nil, "state-%s-%d", id, i)); err != nil {
						errs <- fmt.Errorf("SaveSyncState: %w", err)
						return
					}
					if i%5 == 4 {
						doc, err := s.LoadDoc(ctx, id)
						if err != nil {
							errs <- fmt.Errorf("LoadDoc: %w", err)
							return
						}
						if len(doc.Batches) != i+1 {
							errs <- fmt.Errorf("doc %s: LoadDoc has %d batches, want %d", id, len(doc.Batches), i+1)
							return
						}
					}
				}
			}
			mu.Lock()
			for id, b := range mine {
				want[id] = b
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if len(want) != goroutines*docsEach {
		t.Fatalf("got %d docs, want %d", len(want), goroutines*docsEach)
	}
	return want
}

func testConcurrentSameDoc(t *testing.T, s hub.Store) {
	// The hub never overlaps calls for one document within a node, but
	// nodes sharing a storage can, and every method is safe for concurrent
	// use: seqs must stay unique and nothing may be lost.
	ctx := t.Context()
	id := newDocID(t)
	const goroutines, n = 16, 10
	var (
		mu   sync.Mutex
		got  = map[uint64][]byte{}
		wg   sync.WaitGroup
		errs = make(chan error, goroutines)
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range n {
				data := fmt.Appendf(nil, "g%d-%d", g, i)
				seq, err := s.AppendChanges(ctx, id, data)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if _, dup := got[seq]; dup {
					errs <- fmt.Errorf("seq %d returned twice", seq)
				}
				got[seq] = data
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	doc := mustLoad(t, s, id)
	if len(doc.Batches) != goroutines*n {
		t.Fatalf("LoadDoc has %d batches, want %d", len(doc.Batches), goroutines*n)
	}
	for i, b := range doc.Batches {
		if i > 0 && b.Seq <= doc.Batches[i-1].Seq {
			t.Fatalf("batches out of order: seq %d after %d", b.Seq, doc.Batches[i-1].Seq)
		}
		if !bytes.Equal(b.Data, got[b.Seq]) {
			t.Fatalf("batch seq %d = %q, want %q", b.Seq, b.Data, got[b.Seq])
		}
	}
}

func testCancelledContext(t *testing.T, s hub.Store) {
	ctx := t.Context()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	existing := newDocID(t)
	seq := mustAppend(t, s, existing, []byte("kept"))
	mustCompact(t, s, existing, []byte("snap"), 0)
	mustSaveSync(t, s, existing, "peer", []byte("state"))
	fresh := newDocID(t)

	check := func(op string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s with a cancelled context: got nil error", op)
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: error %v does not wrap context.Canceled", op, err)
		}
	}
	_, err := s.StorageID(cancelled)
	check("StorageID", err)
	_, err = s.LoadDoc(cancelled, existing)
	check("LoadDoc", err)
	_, err = s.AppendChanges(cancelled, fresh, []byte("x"))
	check("AppendChanges (new doc)", err)
	_, err = s.AppendChanges(cancelled, existing, []byte("x"))
	check("AppendChanges (existing doc)", err)
	check("Compact", s.Compact(cancelled, existing, []byte("other"), seq))
	check("DeleteDoc", s.DeleteDoc(cancelled, existing))
	check("SaveSyncState", s.SaveSyncState(cancelled, existing, "peer", []byte("other")))
	_, err = s.LoadSyncState(cancelled, existing, "peer")
	check("LoadSyncState", err)

	// A call refused for its context changed nothing.
	checkNotFound(t, "LoadDoc of doc appended with cancelled context", loadErr(s, ctx, fresh))
	checkDoc(t, mustLoad(t, s, existing), []byte("snap"), []hub.Batch{{Seq: seq, Data: []byte("kept")}})
	checkSync(t, s, existing, "peer", []byte("state"))
}

func testAfterClose(t *testing.T, s hub.Store) {
	ctx := t.Context()
	id := newDocID(t)
	seq := mustAppend(t, s, id, []byte("x"))
	mustSaveSync(t, s, id, "peer", []byte("state"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check := func(op string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s after Close: got nil error", op)
		}
	}
	_, err := s.StorageID(ctx)
	check("StorageID", err)
	_, err = s.LoadDoc(ctx, id)
	check("LoadDoc", err)
	_, err = s.AppendChanges(ctx, id, []byte("y"))
	check("AppendChanges", err)
	_, err = s.AppendChanges(ctx, newDocID(t), nil)
	check("AppendChanges (empty batch)", err)
	check("Compact", s.Compact(ctx, id, []byte("snap"), seq))
	check("DeleteDoc", s.DeleteDoc(ctx, id))
	check("SaveSyncState", s.SaveSyncState(ctx, id, "peer", []byte("s")))
	_, err = s.LoadSyncState(ctx, id, "peer")
	check("LoadSyncState", err)
	check("Close", s.Close())
}

func testLargeValues(t *testing.T, s hub.Store) {
	id := newDocID(t)
	big := randBytes(t, 4<<20+3)
	small := []byte("small")
	s1 := mustAppend(t, s, id, big)
	s2 := mustAppend(t, s, id, small)
	big2 := randBytes(t, 2<<20)
	s3 := mustAppend(t, s, id, big2)
	checkDoc(t, mustLoad(t, s, id), nil, []hub.Batch{{Seq: s1, Data: big}, {Seq: s2, Data: small}, {Seq: s3, Data: big2}})

	snap := randBytes(t, 3<<20+1)
	mustCompact(t, s, id, snap, s2)
	checkDoc(t, mustLoad(t, s, id), snap, []hub.Batch{{Seq: s3, Data: big2}})

	state := randBytes(t, 1<<20)
	mustSaveSync(t, s, id, "peer", state)
	checkSync(t, s, id, "peer", state)
}

// ---- helpers ----

func newDocID(t *testing.T) protocol.DocumentID {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return protocol.DocumentID("storetest-" + hex.EncodeToString(b[:]))
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func scribble(b []byte) {
	for i := range b {
		b[i] ^= 0xA5
	}
}

func cloneDoc(d hub.StoredDoc) hub.StoredDoc {
	c := hub.StoredDoc{Snapshot: bytes.Clone(d.Snapshot)}
	for _, b := range d.Batches {
		c.Batches = append(c.Batches, hub.Batch{Seq: b.Seq, Data: bytes.Clone(b.Data)})
	}
	return c
}

func mustStorageID(t *testing.T, s hub.Store) string {
	t.Helper()
	id, err := s.StorageID(t.Context())
	if err != nil {
		t.Fatalf("StorageID: %v", err)
	}
	return id
}

func mustAppend(t *testing.T, s hub.Store, id protocol.DocumentID, data []byte) uint64 {
	t.Helper()
	seq, err := s.AppendChanges(t.Context(), id, data)
	if err != nil {
		t.Fatalf("AppendChanges(%s, %d bytes): %v", id, len(data), err)
	}
	return seq
}

func mustLoad(t *testing.T, s hub.Store, id protocol.DocumentID) hub.StoredDoc {
	t.Helper()
	doc, err := s.LoadDoc(t.Context(), id)
	if err != nil {
		t.Fatalf("LoadDoc(%s): %v", id, err)
	}
	return doc
}

func loadErr(s hub.Store, ctx context.Context, id protocol.DocumentID) error {
	_, err := s.LoadDoc(ctx, id)
	return err
}

func mustCompact(t *testing.T, s hub.Store, id protocol.DocumentID, snap []byte, through uint64) {
	t.Helper()
	if err := s.Compact(t.Context(), id, snap, through); err != nil {
		t.Fatalf("Compact(%s, through %d): %v", id, through, err)
	}
}

func mustSaveSync(t *testing.T, s hub.Store, id protocol.DocumentID, peer string, state []byte) {
	t.Helper()
	if err := s.SaveSyncState(t.Context(), id, peer, state); err != nil {
		t.Fatalf("SaveSyncState(%s, %q): %v", id, peer, err)
	}
}

func checkSync(t *testing.T, s hub.Store, id protocol.DocumentID, peer string, want []byte) {
	t.Helper()
	got, err := s.LoadSyncState(t.Context(), id, peer)
	if err != nil {
		t.Fatalf("LoadSyncState(%s, %q): %v", id, peer, err)
	}
	if got == nil || !bytes.Equal(got, want) {
		t.Fatalf("LoadSyncState(%s, %q) = %s, want %s", id, peer, short(got), short(want))
	}
}

func checkNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("%s: error = %v, want one wrapping hub.ErrNotFound", what, err)
	}
}

// checkDoc compares a loaded doc with the expected snapshot (nil: never
// compacted) and batches, by seq and exact bytes.
func checkDoc(t *testing.T, got hub.StoredDoc, snap []byte, batches []hub.Batch) {
	t.Helper()
	if (snap == nil) != (got.Snapshot == nil) || !bytes.Equal(got.Snapshot, snap) {
		t.Errorf("snapshot = %s, want %s", short(got.Snapshot), short(snap))
	}
	if len(got.Batches) != len(batches) {
		t.Fatalf("got %d batches %s, want %d %s", len(got.Batches), seqs(got.Batches), len(batches), seqs(batches))
	}
	for i := range batches {
		g, w := got.Batches[i], batches[i]
		if g.Seq != w.Seq {
			t.Fatalf("batch %d: seq %d, want %d (got %s, want %s)", i, g.Seq, w.Seq, seqs(got.Batches), seqs(batches))
		}
		if !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("batch %d (seq %d): data %s, want %s", i, g.Seq, short(g.Data), short(w.Data))
		}
	}
}

func seqs(bs []hub.Batch) string {
	out := make([]uint64, len(bs))
	for i, b := range bs {
		out[i] = b.Seq
	}
	return fmt.Sprint(out)
}

// short formats bytes for a failure message without dumping megabytes.
func short(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%q... (%d bytes)", b[:32], len(b))
}
