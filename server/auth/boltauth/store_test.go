package boltauth

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/auth/authtest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "auth.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestPersistence(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "data", "auth.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	live := auth.Family{ID: "live", User: "alice", Created: now, Expires: now.Add(time.Hour)}
	dead := auth.Family{ID: "dead", User: "alice", Created: now, Expires: now.Add(time.Hour)}
	for _, f := range []auth.Family{live, dead} {
		if err := s.CreateFamily(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	rotated, err := s.Rotate(ctx, live.ID, 0, now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeFamily(ctx, dead.ID); err != nil {
		t.Fatal(err)
	}
	cut := now.Add(-time.Minute)
	if err := s.RevokeUser(ctx, "bob", cut); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.ConsumeOnce(ctx, "nonce", time.Hour); err != nil || !ok {
		t.Fatalf("ConsumeOnce = %v, %v", ok, err)
	}
	doc := protocol.NewDocumentID()
	if err := s.Claim(ctx, doc, "alice", now); err != nil {
		t.Fatal(err)
	}
	if err := s.Share(ctx, doc, "bob", hub.RoleEditor); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLink(ctx, doc, hub.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if f, err := s.Family(ctx, live.ID); err != nil || f.Gen != 1 || !f.Expires.Equal(rotated.Expires) || f.Revoked {
		t.Errorf("live family after reopen = %+v, %v; want gen 1 expiring %v", f, err, rotated.Expires)
	}
	if _, err := s.Rotate(ctx, live.ID, 0, now.Add(time.Hour)); !errors.Is(err, auth.ErrTokenReused) {
		t.Errorf("Rotate of the old generation after reopen: %v, want ErrTokenReused", err)
	}
	if f, err := s.Family(ctx, dead.ID); err != nil || !f.Revoked {
		t.Errorf("revoked family after reopen = %+v, %v", f, err)
	}
	if r, err := s.Revoked(ctx, "bob", "any", cut); err != nil || !r {
		t.Errorf("Revoked after reopen = %v, %v", r, err)
	}
	if ok, err := s.ConsumeOnce(ctx, "nonce", time.Hour); err != nil || ok {
		t.Errorf("ConsumeOnce of a recorded key after reopen = %v, %v; want false", ok, err)
	}
	acc, err := s.Access(ctx, doc)
	if err != nil || acc.Users["alice"] != hub.RoleOwner || acc.Users["bob"] != hub.RoleEditor || acc.Link != hub.RoleViewer || !acc.Created.Equal(now) {
		t.Errorf("Access after reopen = %+v, %v", acc, err)
	}
	if docs, err := s.DocsOf(ctx, "bob"); err != nil || len(docs) != 1 || docs[0] != (access.UserDoc{ID: doc, Role: hub.RoleEditor}) {
		t.Errorf("DocsOf after reopen = %v, %v", docs, err)
	}
}

func count(t *testing.T, s *Store, bucket []byte) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucket).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSweep(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t)
	now := time.Now()
	for _, k := range []string{"a", "b", "c"} {
		if ok, err := s.ConsumeOnce(ctx, k, time.Minute); err != nil || !ok {
			t.Fatalf("ConsumeOnce(%q) = %v, %v", k, ok, err)
		}
	}
	if ok, err := s.ConsumeOnce(ctx, "long", time.Hour); err != nil || !ok {
		t.Fatalf("ConsumeOnce = %v, %v", ok, err)
	}
	old := auth.Family{ID: "old", User: "u", Created: now.Add(-48 * time.Hour), Expires: now.Add(-FamilyRetention - time.Minute)}
	recent := auth.Family{ID: "recent", User: "u", Created: now.Add(-48 * time.Hour), Expires: now.Add(-time.Minute)}
	rotated := auth.Family{ID: "rotated", User: "u", Created: now, Expires: now.Add(time.Minute)}
	for _, f := range []auth.Family{old, recent, rotated} {
		if err := s.CreateFamily(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	// Rotation moves the family's index entry to its new expiry.
	if _, err := s.Rotate(ctx, rotated.ID, 0, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	if err := s.sweep(now.Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, bucketOnce); n != 4 {
		t.Fatalf("%d once keys after sweeping nothing due, want 4", n)
	}
	if _, err := s.Family(ctx, old.ID); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("family past its retention after a sweep: %v, want ErrNotFound", err)
	}
	if _, err := s.Family(ctx, recent.ID); err != nil {
		t.Fatalf("recently expired family after a sweep: %v", err)
	}

	if err := s.sweep(now.Add(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n, ni := count(t, s, bucketOnce), count(t, s, bucketOnceExp); n != 1 || ni != 1 {
		t.Fatalf("%d once keys and %d index entries after the sweep, want 1 and 1", n, ni)
	}
	// A swept key is recorded anew; one not due is still a replay.
	if ok, err := s.ConsumeOnce(ctx, "a", time.Minute); err != nil || !ok {
		t.Fatalf("ConsumeOnce of a swept key = %v, %v", ok, err)
	}
	if ok, err := s.ConsumeOnce(ctx, "long", time.Minute); err != nil || ok {
		t.Fatalf("ConsumeOnce of a key not due = %v, %v", ok, err)
	}

	if err := s.sweep(now.Add(2 * time.Minute).Add(FamilyRetention)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Family(ctx, recent.ID); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("family past its retention after a sweep: %v, want ErrNotFound", err)
	}
	if f, err := s.Family(ctx, rotated.ID); err != nil || f.Gen != 1 {
		t.Fatalf("rotated family after a sweep of its old expiry = %+v, %v", f, err)
	}
	if n := count(t, s, bucketFamExp); n != 1 {
		t.Fatalf("%d family index entries, want 1", n)
	}
	if n, ni := count(t, s, bucketOnce), count(t, s, bucketOnceExp); n != 0 || ni != 0 {
		t.Fatalf("%d once keys and %d index entries a day later, want none", n, ni)
	}
}

// Many due keys are swept in several transactions, all of them.
func TestSweepBacklog(t *testing.T) {
	s := openTemp(t)
	err := s.db.Update(func(tx *bolt.Tx) error {
		exp := timeKey(time.Now())
		for i := range 2*sweepBatch + 10 {
			k := []byte{byte(i >> 8), byte(i)}
			if err := tx.Bucket(bucketOnce).Put(k, exp); err != nil {
				return err
			}
			if err := tx.Bucket(bucketOnceExp).Put(append(exp, k...), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.sweep(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, ni := count(t, s, bucketOnce), count(t, s, bucketOnceExp); n != 0 || ni != 0 {
		t.Fatalf("%d keys and %d index entries left after sweeping a backlog", n, ni)
	}
}

func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	if _, err := s.Family(t.Context(), "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Family after Close: %v, want ErrClosed", err)
	}
	if err := s.Claim(t.Context(), protocol.NewDocumentID(), "u", time.Now()); !errors.Is(err, ErrClosed) {
		t.Errorf("Claim after Close: %v, want ErrClosed", err)
	}
	// The file is released: it opens again at once.
	s2, err := Open(path)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	_ = s2.Close()
}

// Arguments the layout cannot hold, or that mean nothing, are refused
// before anything is written.
func TestInvalidArguments(t *testing.T) {
	authtest.RunInvalidArgumentTests(t, openTemp(t))
}
