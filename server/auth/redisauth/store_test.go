package redisauth

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/auth/authtest"
)

// prefixes gives every store and event stream of a test run its own key
// prefix, so subtests sharing one Redis never see each other's keys.
var prefixes atomic.Int64

func newPrefix() string { return fmt.Sprintf("authtest-%d", prefixes.Add(1)) }

func newStore(t *testing.T, c redis.UniversalClient) *Store {
	t.Helper()
	s, err := New(t.Context(), c, newPrefix())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestStore(t *testing.T) {
	c := redistest.Start(t, redistest.Options{}).Client(t)
	t.Run("TokenStore", func(t *testing.T) {
		authtest.RunTokenStoreTests(t, func(t *testing.T) auth.TokenStore { return newStore(t, c) })
	})
	t.Run("ACL", func(t *testing.T) {
		authtest.RunACLTests(t, func(t *testing.T) access.ACL { return newStore(t, c) })
		authtest.RunClaimedDocsTests(t, func(t *testing.T) authtest.ListACL { return newStore(t, c) })
	})
}

// TestCluster runs every suite on a Redis Cluster of three masters, where
// a script touching keys of two slots fails (CROSSSLOT) and pipelines span
// masters.
func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	t.Run("TokenStore", func(t *testing.T) {
		authtest.RunTokenStoreTests(t, func(t *testing.T) auth.TokenStore { return newStore(t, c) })
	})
	t.Run("ACL", func(t *testing.T) {
		authtest.RunACLTests(t, func(t *testing.T) access.ACL { return newStore(t, c) })
		authtest.RunClaimedDocsTests(t, func(t *testing.T) authtest.ListACL { return newStore(t, c) })
	})
	t.Run("Events", func(t *testing.T) {
		authtest.RunEventsTests(t, func(t *testing.T) (a, b auth.Events) {
			p := newPrefix()
			return NewEvents(c, p, nil), NewEvents(cl.Client(t), p, nil)
		})
	})
	// The ids of one user's documents land in many slots: DocsOf's
	// confirming pipeline spans every master.
	t.Run("DocsOfAcrossSlots", func(t *testing.T) {
		s := newStore(t, c)
		ctx := t.Context()
		want := make(map[protocol.DocumentID]bool)
		for range 40 {
			doc := protocol.NewDocumentID()
			if err := s.Claim(ctx, doc, "user{1}", time.Now()); err != nil {
				t.Fatal(err)
			}
			want[doc] = true
		}
		docs, err := s.DocsOf(ctx, "user{1}")
		if err != nil {
			t.Fatal(err)
		}
		if len(docs) != len(want) {
			t.Fatalf("DocsOf listed %d documents, want %d", len(docs), len(want))
		}
		for _, d := range docs {
			if !want[d.ID] || d.Role != hub.RoleOwner {
				t.Fatalf("DocsOf listed %v", d)
			}
		}
	})
}

func TestNew(t *testing.T) {
	c := redistest.Start(t, redistest.Options{}).Client(t)
	ctx := t.Context()
	for _, p := range []string{"a{b", "a}b", "{x}"} {
		if _, err := New(ctx, c, p); err == nil {
			t.Errorf("New with prefix %q: no error", p)
		}
	}
	if _, err := New(ctx, nil, ""); err == nil {
		t.Error("New with a nil client: no error")
	}
	s, err := New(ctx, c, "")
	if err != nil {
		t.Fatal(err)
	}
	if k := s.familyKey("f"); k != "plait:auth:{fam:f}" {
		t.Errorf("family key with the default prefix = %q", k)
	}

	// Nothing listens: New fails, within its context's bound.
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer dead.Close()
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := New(tctx, dead, ""); err == nil {
		t.Error("New with an unreachable Redis: no error")
	}
}

// Ids holding the hash-tag characters map to distinct keys.
func TestEscapedIDsAreDistinct(t *testing.T) {
	s := newStore(t, redistest.Start(t, redistest.Options{}).Client(t))
	ctx := t.Context()
	ids := []string{"{", "%7B", "}", "%7D", "%", "%25", "a{b}c"}
	now := time.Now()
	for i, id := range ids {
		f := auth.Family{ID: id, User: id, Gen: uint64(i), Created: now, Expires: now.Add(time.Hour)}
		if err := s.CreateFamily(ctx, f); err != nil {
			t.Fatalf("CreateFamily(%q): %v", id, err)
		}
		if ok, err := s.ConsumeOnce(ctx, id, time.Hour); err != nil || !ok {
			t.Fatalf("ConsumeOnce(%q) = %v, %v", id, ok, err)
		}
	}
	for i, id := range ids {
		f, err := s.Family(ctx, id)
		if err != nil || f.Gen != uint64(i) || f.User != id {
			t.Fatalf("Family(%q) = %+v, %v; want gen %d", id, f, err, i)
		}
	}
}

// A script that go-redis runs a second time, because the answer to the
// first run was lost, finds its own work and reports success.
func TestRetriedScriptsFindTheirOwnWork(t *testing.T) {
	s := newStore(t, redistest.Start(t, redistest.Options{}).Client(t))
	ctx := t.Context()
	now := time.Now()
	f := auth.Family{ID: "fam", User: "u", Created: now, Expires: now.Add(time.Hour)}
	for range 2 {
		if err := s.createFamily(ctx, f, "op-1"); err != nil {
			t.Fatalf("createFamily, run again: %v", err)
		}
	}
	if err := s.createFamily(ctx, f, "op-2"); !errors.Is(err, errFamilyExists) {
		t.Fatalf("createFamily by another call: %v, want errFamilyExists", err)
	}

	exp := now.Add(2 * time.Hour)
	for range 2 {
		got, err := s.rotate(ctx, f.ID, 0, exp, "op-3")
		if err != nil || got.Gen != 1 || !got.Expires.Equal(exp) {
			t.Fatalf("rotate, run again = %+v, %v; want gen 1", got, err)
		}
	}
	if _, err := s.rotate(ctx, f.ID, 0, exp, "op-4"); !errors.Is(err, auth.ErrTokenReused) {
		t.Fatalf("rotate of gen 0 by another call: %v, want ErrTokenReused", err)
	}

	for range 2 {
		if ok, err := s.consumeOnce(ctx, "key", time.Hour, "op-5"); err != nil || !ok {
			t.Fatalf("consumeOnce, run again = %v, %v; want true", ok, err)
		}
	}
	if ok, err := s.consumeOnce(ctx, "key", time.Hour, "op-6"); err != nil || ok {
		t.Fatalf("consumeOnce by another call = %v, %v; want false", ok, err)
	}

	doc := protocol.NewDocumentID()
	for range 2 {
		out, err := s.change(ctx, doc, "u", true, claimScript, userField("u"), "1", "op-7")
		if err != nil || out != "ok" {
			t.Fatalf("claim, run again = %q, %v; want ok", out, err)
		}
	}
	if err := s.Claim(ctx, doc, "u", now); !errors.Is(err, access.ErrClaimed) {
		t.Fatalf("Claim by another call: %v, want ErrClaimed", err)
	}
}

// Arguments that mean nothing are refused before anything is sent; a
// sub-millisecond ttl is rounded up, not refused.
func TestInvalidArguments(t *testing.T) {
	s := newStore(t, redistest.Start(t, redistest.Options{}).Client(t))
	authtest.RunInvalidArgumentTests(t, s)
	if ok, err := s.ConsumeOnce(t.Context(), "short", time.Microsecond); err != nil || !ok {
		t.Errorf("ConsumeOnce with a 1µs ttl = %v, %v; want true", ok, err)
	}
}
