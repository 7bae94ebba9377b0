package boltstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

func openGroupTest(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "plait.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// queueBlocking queues a write whose function puts key in the meta
// bucket once release is called. entered is closed when the writer first
// runs it; done receives its result.
func queueBlocking(t *testing.T, s *Store, key string) (entered <-chan struct{}, release func(), done <-chan error) {
	t.Helper()
	in := make(chan struct{})
	var enteredOnce, releaseOnce sync.Once
	rel := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.write(context.Background(), func(tx *bolt.Tx) error {
			enteredOnce.Do(func() { close(in) })
			<-rel
			return tx.Bucket(bucketMeta).Put([]byte(key), []byte("1"))
		})
	}()
	release = func() { releaseOnce.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return in, release, errc
}

// blockWriter has the writer run a write that waits for release (and then
// puts "blocker"), and returns once it does: writes queued after that
// form one group when release is called. done receives the blocking
// write's result.
func blockWriter(t *testing.T, s *Store) (release func(), done <-chan error) {
	t.Helper()
	entered, release, done := queueBlocking(t, s, "blocker")
	waitClosed(t, "the blocking write", entered)
	return release, done
}

func waitClosed(t *testing.T, what string, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("the writer did not start %s", what)
	}
}

// waitQueued waits until n writes are queued for the writer.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.writes) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", len(s.writes), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func recvErr(t *testing.T, what string, c <-chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// waitGoroutines waits until no more than n goroutines run: the store's
// writer and every caller have ended.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want <= %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGroupFailureDoesNotFailOthers(t *testing.T) {
	s := openGroupTest(t, Options{})
	ctx := t.Context()
	release, blocked := blockWriter(t, s)

	// Queue, in this order: two appends, a write that counts its runs, a
	// write that fails after it has put something, two more appends. They
	// all go in the group that starts when the blocker is released.
	type result struct {
		seq uint64
		err error
	}
	appends := make([]chan result, 4)
	queueAppend := func(i int) {
		appends[i] = make(chan result, 1)
		go func() {
			seq, err := s.AppendChanges(ctx, protocol.DocumentID(fmt.Sprintf("doc-%d", i)), []byte{byte(i)})
			appends[i] <- result{seq, err}
		}()
	}
	queueAppend(0)
	queueAppend(1)
	waitQueued(t, s, 2)
	var runs atomic.Int32
	counted := make(chan error, 1)
	go func() {
		counted <- s.write(ctx, func(tx *bolt.Tx) error {
			runs.Add(1)
			return tx.Bucket(bucketMeta).Put([]byte("counted"), []byte("1"))
		})
	}()
	waitQueued(t, s, 3)
	errBoom := errors.New("boom")
	failed := make(chan error, 1)
	go func() {
		failed <- s.write(ctx, func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketMeta).Put([]byte("failed"), []byte("1")); err != nil {
				return err
			}
			return errBoom
		})
	}()
	waitQueued(t, s, 4)
	queueAppend(2)
	queueAppend(3)
	waitQueued(t, s, 6)
	release()

	if err := recvErr(t, "blocking write", blocked); err != nil {
		t.Fatalf("blocking write: %v", err)
	}
	if err := recvErr(t, "failing write", failed); !errors.Is(err, errBoom) {
		t.Errorf("failing write: %v, want errBoom", err)
	}
	if err := recvErr(t, "counting write", counted); err != nil {
		t.Errorf("counting write: %v", err)
	}
	for i, c := range appends {
		select {
		case r := <-c:
			if r.err != nil || r.seq != 1 {
				t.Errorf("AppendChanges %d = %d, %v; want 1, nil", i, r.seq, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("AppendChanges %d did not return", i)
		}
	}
	// The counting write ran in the failed transaction and again in the
	// retry: the failure was in its group and did not fail it.
	if n := runs.Load(); n != 2 {
		t.Errorf("counting write ran %d times, want 2 (once with the failing write, once without)", n)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m.Get([]byte("failed")) != nil {
			t.Error("the failing write's put was committed")
		}
		if m.Get([]byte("counted")) == nil {
			t.Error("the counting write's put was not committed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range appends {
		doc, err := s.LoadDoc(ctx, protocol.DocumentID(fmt.Sprintf("doc-%d", i)))
		if err != nil || len(doc.Batches) != 1 || doc.Batches[0].Data[0] != byte(i) {
			t.Errorf("doc-%d: %+v, %v; want its one batch", i, doc, err)
		}
	}
}

func TestConcurrentWritersAllLand(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"default", Options{}},
		{"one per commit", Options{MaxBatchSize: -1}},
		{"small groups with delay", Options{MaxBatchSize: 3, MaxBatchDelay: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openGroupTest(t, tc.opts)
			ctx := t.Context()
			const (
				writers = 32
				rounds  = 20
				docs    = 8
			)
			var wg sync.WaitGroup
			for g := range writers {
				wg.Go(func() {
					id := protocol.DocumentID(fmt.Sprintf("doc-%d", g%docs))
					for i := range rounds {
						if _, err := s.AppendChanges(ctx, id, fmt.Appendf(nil, "%d/%d", g, i)); err != nil {
							t.Errorf("AppendChanges: %v", err)
							return
						}
						if err := s.SaveSyncState(ctx, id, fmt.Sprint("peer-", g), fmt.Appendf(nil, "%d", i)); err != nil {
							t.Errorf("SaveSyncState: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
			seen := map[string]bool{}
			for d := range docs {
				id := protocol.DocumentID(fmt.Sprintf("doc-%d", d))
				doc, err := s.LoadDoc(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				want := writers / docs * rounds
				if len(doc.Batches) != want {
					t.Errorf("%s has %d batches, want %d", id, len(doc.Batches), want)
				}
				for i, b := range doc.Batches {
					if b.Seq != uint64(i+1) {
						t.Errorf("%s batch %d has seq %d", id, i, b.Seq)
					}
					if seen[string(b.Data)] {
						t.Errorf("batch %q stored twice", b.Data)
					}
					seen[string(b.Data)] = true
				}
			}
			if len(seen) != writers*rounds {
				t.Errorf("%d distinct batches stored, want %d", len(seen), writers*rounds)
			}
			for g := range writers {
				id := protocol.DocumentID(fmt.Sprintf("doc-%d", g%docs))
				st, err := s.LoadSyncState(ctx, id, fmt.Sprint("peer-", g))
				if err != nil || string(st) != fmt.Sprint(rounds-1) {
					t.Errorf("sync state of writer %d = %q, %v; want %q", g, st, err, fmt.Sprint(rounds-1))
				}
			}
		})
	}
}

func TestCloseAnswersQueuedWrites(t *testing.T) {
	base := runtime.NumGoroutine()
	path := filepath.Join(t.TempDir(), "plait.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	release, blocked := blockWriter(t, s)
	const queued = 5
	errs := make(chan error, queued)
	for i := range queued {
		go func() {
			_, err := s.AppendChanges(context.Background(), protocol.DocumentID(fmt.Sprintf("doc-%d", i)), []byte("x"))
			errs <- err
		}()
		waitQueued(t, s, i+1)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-s.quit:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not signal the writer")
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the group in flight committed", err)
	case <-time.After(20 * time.Millisecond):
	}
	release()

	// The group in flight commits; the queued writes get ErrClosed.
	if err := recvErr(t, "blocking write", blocked); err != nil {
		t.Errorf("write in flight at Close: %v, want nil", err)
	}
	for range queued {
		if err := recvErr(t, "queued write", errs); !errors.Is(err, ErrClosed) {
			t.Errorf("write queued at Close: %v, want ErrClosed", err)
		}
	}
	if err := recvErr(t, "Close", closed); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.AppendChanges(t.Context(), "doc", []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("AppendChanges after Close: %v, want ErrClosed", err)
	}
	if err := s.SaveSyncState(t.Context(), "doc", "peer", []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("SaveSyncState after Close: %v, want ErrClosed", err)
	}
	waitGoroutines(t, base)

	// What was in flight is on disk; what was queued is not.
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	err = s2.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get([]byte("blocker")) == nil {
			t.Error("the write in flight at Close was not committed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range queued {
		if _, err := s2.LoadDoc(t.Context(), protocol.DocumentID(fmt.Sprintf("doc-%d", i))); !errors.Is(err, hub.ErrNotFound) {
			t.Errorf("doc-%d, queued at Close: %v, want ErrNotFound", i, err)
		}
	}
}

// TestCloseRacesWrites closes the store while writers keep writing: every
// call returns nil or ErrClosed, none hangs, no goroutine is left.
func TestCloseRacesWrites(t *testing.T) {
	base := runtime.NumGoroutine()
	for round := range 20 {
		s, err := Open(filepath.Join(t.TempDir(), fmt.Sprintf("plait-%d.db", round)), Options{MaxBatchSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := 0; ; i++ {
					_, err := s.AppendChanges(context.Background(), protocol.DocumentID(fmt.Sprint("doc-", g)), []byte("x"))
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("AppendChanges: %v", err)
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("writers hang after Close")
		}
	}
	waitGoroutines(t, base)
}

func TestCancelWhileQueued(t *testing.T) {
	s := openGroupTest(t, Options{})
	release, blocked := blockWriter(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 1)
	go func() {
		_, err := s.AppendChanges(ctx, "doc", []byte("x"))
		errs <- err
	}()
	waitQueued(t, s, 1)
	cancel()
	// The writer is still blocked: the caller returns on its own.
	if err := recvErr(t, "cancelled AppendChanges", errs); !errors.Is(err, context.Canceled) {
		t.Errorf("AppendChanges cancelled while queued: %v, want context.Canceled", err)
	}
	release()
	if err := recvErr(t, "blocking write", blocked); err != nil {
		t.Fatal(err)
	}
	// A write cancelled before it ran is never written.
	if _, err := s.AppendChanges(t.Context(), "other", nil); err != nil { // one more group: the queue is done
		t.Fatal(err)
	}
	if _, err := s.LoadDoc(t.Context(), "doc"); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("LoadDoc of a write cancelled while queued: %v, want ErrNotFound", err)
	}
}

func TestCancelWhileQueueFull(t *testing.T) {
	s := openGroupTest(t, Options{MaxBatchSize: -1}) // a queue of one
	release, blocked := blockWriter(t, s)
	first := make(chan error, 1)
	go func() {
		_, err := s.AppendChanges(t.Context(), "first", []byte("x"))
		first <- err
	}()
	waitQueued(t, s, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.AppendChanges(ctx, "second", []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AppendChanges on a full queue: %v, want context.DeadlineExceeded", err)
	}
	release()
	if err := recvErr(t, "blocking write", blocked); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, "queued write", first); err != nil {
		t.Fatal(err)
	}
}

// TestCancelWhileCommitting gives up on a write whose group is committing:
// the caller gets ctx's error at once and may reuse its batch, and the
// write may still commit (here it does, with the bytes it was given), as
// the package doc says.
func TestCancelWhileCommitting(t *testing.T) {
	s := openGroupTest(t, Options{})
	release1, blocked1 := blockWriter(t, s)
	batch := []byte("original")
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 1)
	go func() {
		_, err := s.AppendChanges(ctx, "doc", batch)
		errs <- err
	}()
	waitQueued(t, s, 1)
	entered2, release2, blocked2 := queueBlocking(t, s, "blocker2")
	waitQueued(t, s, 2)
	// The next group is the append, then the second blocker: once the
	// second blocker runs, the append has run in the same transaction.
	release1()
	waitClosed(t, "the second blocking write", entered2)
	cancel()
	if err := recvErr(t, "cancelled AppendChanges", errs); !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendChanges cancelled during its commit: %v, want context.Canceled", err)
	}
	copy(batch, "CHANGED!") // the caller owns its slice again (-race checks this too)
	release2()
	for _, c := range []<-chan error{blocked1, blocked2} {
		if err := recvErr(t, "blocking write", c); err != nil {
			t.Fatal(err)
		}
	}
	doc, err := s.LoadDoc(t.Context(), "doc")
	if err != nil {
		t.Fatalf("LoadDoc of the abandoned write: %v", err)
	}
	if len(doc.Batches) != 1 || string(doc.Batches[0].Data) != "original" {
		t.Errorf("abandoned write stored %+v, want the one batch %q", doc.Batches, "original")
	}
}

func TestWritePanicReachesCaller(t *testing.T) {
	s := openGroupTest(t, Options{})
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Errorf("recovered %v, want the write's panic", p)
			}
		}()
		_ = s.write(t.Context(), func(*bolt.Tx) error { panic("kaboom") })
		t.Error("write returned after its function panicked")
	}()
	// The writer survives.
	if _, err := s.AppendChanges(t.Context(), "doc", []byte("x")); err != nil {
		t.Fatalf("AppendChanges after a panicking write: %v", err)
	}
}
