package redisstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/redisstore"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/hub/storetest"
	"github.com/plaithub/plait/pkg/protocol"
)

// prefixes hands every store of a test run its own key prefix, so subtests
// sharing one Redis never see each other's keys (the storage id included).
var prefixes atomic.Int64

func newStore(t *testing.T, c redis.UniversalClient) hub.Store {
	t.Helper()
	s, err := redisstore.New(t.Context(), c, redisstore.Options{Prefix: fmt.Sprintf("plait-test-%d", prefixes.Add(1))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestStore(t *testing.T) {
	c := redistest.Start(t, redistest.Options{}).Client(t)
	storetest.RunStoreTests(t, func(t *testing.T) hub.Store { return newStore(t, c) })
	storetest.RunListTests(t, func(t *testing.T) storetest.ListStore { return newStore(t, c).(storetest.ListStore) })
}

func TestStoreCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3).Client(t)
	storetest.RunStoreTests(t, func(t *testing.T) hub.Store { return newStore(t, c) })
	storetest.RunListTests(t, func(t *testing.T) storetest.ListStore { return newStore(t, c).(storetest.ListStore) })

	// Ids with the hash-tag characters: unescaped, "}x" would make an empty
	// tag (each key hashed whole, so the scripts would fail with CROSSSLOT)
	// and "{" and "%7B" must not share keys.
	t.Run("HashTagCharactersInIDs", func(t *testing.T) {
		s := newStore(t, c)
		defer s.Close()
		ctx := t.Context()
		ids := []protocol.DocumentID{"}x", "{", "%7B", "}", "%7D", "%", "%25", "a{b}c", "{}", "x}{y"}
		for i, id := range ids {
			for j := range i + 1 {
				if _, err := s.AppendChanges(ctx, id, fmt.Appendf(nil, "%s/%d", id, j)); err != nil {
					t.Fatalf("AppendChanges(%q): %v", id, err)
				}
			}
			if err := s.SaveSyncState(ctx, id, "peer", []byte(id)); err != nil {
				t.Fatalf("SaveSyncState(%q): %v", id, err)
			}
		}
		for i, id := range ids {
			if err := s.Compact(ctx, id, []byte("snap "+id), 1); err != nil {
				t.Fatalf("Compact(%q): %v", id, err)
			}
			doc, err := s.LoadDoc(ctx, id)
			if err != nil {
				t.Fatalf("LoadDoc(%q): %v", id, err)
			}
			if string(doc.Snapshot) != "snap "+string(id) || len(doc.Batches) != i {
				t.Fatalf("LoadDoc(%q) = snapshot %q, %d batches; want %q, %d", id, doc.Snapshot, len(doc.Batches), "snap "+id, i)
			}
			for j, b := range doc.Batches {
				if want := fmt.Sprintf("%s/%d", id, j+1); string(b.Data) != want || b.Seq != uint64(j+2) {
					t.Fatalf("LoadDoc(%q) batch %d = seq %d %q, want seq %d %q", id, j, b.Seq, b.Data, j+2, want)
				}
			}
			st, err := s.LoadSyncState(ctx, id, "peer")
			if err != nil || string(st) != string(id) {
				t.Fatalf("LoadSyncState(%q) = %q, %v", id, st, err)
			}
			if err := s.DeleteDoc(ctx, id); err != nil {
				t.Fatalf("DeleteDoc(%q): %v", id, err)
			}
		}
	})
}

func TestPersistence(t *testing.T) {
	// "Reopen" is Close and New again on the same Redis with the same
	// prefix: what the test checks is that nothing lives in the Store
	// value. Surviving a Redis restart is TestRedisRestart's.
	c := redistest.Start(t, redistest.Options{}).Client(t)
	storetest.RunPersistenceTests(t, func(t *testing.T, dir string) hub.Store {
		sum := sha256.Sum256([]byte(dir))
		s, err := redisstore.New(t.Context(), c, redisstore.Options{Prefix: "plait-persist-" + hex.EncodeToString(sum[:8])})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return s
	})
}

func TestNew(t *testing.T) {
	c := redistest.Start(t, redistest.Options{}).Client(t)
	ctx := t.Context()
	for _, p := range []string{"a{b", "a}b", "{x}"} {
		if _, err := redisstore.New(ctx, c, redisstore.Options{Prefix: p}); err == nil {
			t.Errorf("New with prefix %q: no error", p)
		}
	}
	if _, err := redisstore.New(ctx, nil, redisstore.Options{}); err == nil {
		t.Error("New with a nil client: no error")
	}

	// The default prefix, and concurrent News agreeing on one StorageID.
	var ids [8]string
	errs := make(chan error, len(ids))
	for i := range ids {
		go func() {
			s, err := redisstore.New(ctx, c, redisstore.Options{})
			if err == nil {
				ids[i], err = s.StorageID(ctx)
			}
			errs <- err
		}()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent News got StorageIDs %q", ids)
		}
	}
	if got, err := c.Get(ctx, "plait:storage-id").Result(); err != nil || got != ids[0] {
		t.Fatalf("plait:storage-id = %q, %v; want %q", got, err, ids[0])
	}
}

func TestCloseLeavesClientOpen(t *testing.T) {
	c := redistest.Start(t, redistest.Options{}).Client(t)
	s := newStore(t, c)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadDoc(t.Context(), "doc"); !errors.Is(err, hub.ErrStoreClosed) {
		t.Errorf("LoadDoc after Close: %v, want hub.ErrStoreClosed", err)
	}
	if err := s.Close(); !errors.Is(err, hub.ErrStoreClosed) {
		t.Errorf("second Close: %v, want hub.ErrStoreClosed", err)
	}
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Errorf("client after Store.Close: %v", err)
	}
}

func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Persist: true})
	c := srv.Client(t)
	ctx := t.Context()
	const prefix = "plait-restart"
	s, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sid, _ := s.StorageID(ctx)
	id := protocol.DocumentID("restart-doc")
	var want []hub.Batch
	for i := range 3 {
		data := append(fmt.Appendf(nil, "batch %d ", i), 0, 0xff, '\r', '\n')
		seq, err := s.AppendChanges(ctx, id, data)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, hub.Batch{Seq: seq, Data: data})
	}
	if err := s.Compact(ctx, id, []byte("snap"), want[0].Seq); err != nil {
		t.Fatal(err)
	}
	want = want[1:]
	if err := s.SaveSyncState(ctx, id, "peer", []byte("state")); err != nil {
		t.Fatal(err)
	}

	// Down: every call fails, clearly and within its context's bound.
	srv.Stop()
	const bound = 3 * time.Second
	down := func(op, wantMsg string, call func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), bound)
		defer cancel()
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		if err == nil {
			t.Fatalf("%s with Redis down: no error", op)
		}
		if !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("%s with Redis down: error %q does not say %q", op, err, wantMsg)
		}
		if took > bound+time.Second {
			t.Errorf("%s with Redis down took %v, want at most about %v", op, took, bound)
		}
		t.Logf("%s with Redis down: %v (after %v)", op, err, took.Round(time.Millisecond))
	}
	down("AppendChanges", "failed to append changes", func(ctx context.Context) error {
		_, err := s.AppendChanges(ctx, id, []byte("lost"))
		return err
	})
	down("LoadDoc", "failed to load document", func(ctx context.Context) error {
		_, err := s.LoadDoc(ctx, id)
		return err
	})
	down("Compact", "failed to compact", func(ctx context.Context) error {
		return s.Compact(ctx, id, []byte("x"), 99)
	})

	// Back with its append-only file: everything acknowledged is there.
	srv.Restart(false)
	check := func(s hub.Store) {
		t.Helper()
		doc, err := s.LoadDoc(ctx, id)
		if err != nil {
			t.Fatalf("LoadDoc after restart: %v", err)
		}
		if string(doc.Snapshot) != "snap" || len(doc.Batches) != len(want) {
			t.Fatalf("after restart: snapshot %q, %d batches; want %q, %d", doc.Snapshot, len(doc.Batches), "snap", len(want))
		}
		for i, b := range doc.Batches {
			if b.Seq != want[i].Seq || !bytes.Equal(b.Data, want[i].Data) {
				t.Fatalf("after restart: batch %d = seq %d %q, want seq %d %q", i, b.Seq, b.Data, want[i].Seq, want[i].Data)
			}
		}
		if st, err := s.LoadSyncState(ctx, id, "peer"); err != nil || string(st) != "state" {
			t.Fatalf("LoadSyncState after restart = %q, %v", st, err)
		}
	}
	check(s)
	s2, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
	if got, _ := s2.StorageID(ctx); got != sid {
		t.Errorf("StorageID after restart = %q, want %q", got, sid)
	}
	seq, err := s2.AppendChanges(ctx, id, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if last := want[len(want)-1].Seq; seq != last+1 {
		t.Errorf("seq after restart = %d, want %d", seq, last+1)
	}

	// Restarted empty (what a Redis without persistence does): the data is
	// gone, as the package doc says, and a new StorageID is made.
	srv.Restart(true)
	if _, err := s2.LoadDoc(ctx, id); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("LoadDoc after an empty restart: %v, want hub.ErrNotFound", err)
	}
	s3, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if got, _ := s3.StorageID(ctx); got == sid {
		t.Errorf("StorageID after an empty restart is the old %q", got)
	}
}
