package redisauth

import (
	"errors"
	"testing"
	"time"

	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/server/auth"
)

// A family's key expires FamilyRetention after the family, and rotation
// moves that.
func TestFamilyKeyExpires(t *testing.T) {
	c := redistest.Start(t, redistest.Options{}).Client(t)
	s := newStore(t, c)
	ctx := t.Context()
	now := time.Now()
	f := auth.Family{ID: "f", User: "u", Created: now, Expires: now.Add(time.Hour)}
	if err := s.CreateFamily(ctx, f); err != nil {
		t.Fatal(err)
	}
	check := func(exp time.Time) {
		t.Helper()
		ttl, err := c.PTTL(ctx, s.familyKey(f.ID)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Until(exp.Add(FamilyRetention)); ttl < want-5*time.Second || ttl > want+time.Second {
			t.Fatalf("family key TTL %v, want about %v", ttl, want)
		}
	}
	check(f.Expires)
	exp := now.Add(3 * time.Hour)
	if _, err := s.Rotate(ctx, f.ID, 0, exp); err != nil {
		t.Fatal(err)
	}
	check(exp)
	if err := s.RevokeFamily(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	check(exp)

	// A family that expired longer ago than the retention is gone at once.
	old := auth.Family{ID: "old", User: "u", Created: now.Add(-72 * time.Hour), Expires: now.Add(-FamilyRetention - time.Minute)}
	if err := s.CreateFamily(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Family(ctx, old.ID); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("Family past its retention: %v, want ErrNotFound", err)
	}
}

func TestTimesOutOfRange(t *testing.T) {
	s := newStore(t, redistest.Start(t, redistest.Options{}).Client(t))
	ctx := t.Context()
	if err := s.CreateFamily(ctx, auth.Family{ID: "f", User: "u", Expires: time.Now()}); err == nil {
		t.Error("CreateFamily with a zero Created: no error")
	}
	if err := s.RevokeUser(ctx, "u", time.Time{}); err == nil {
		t.Error("RevokeUser at the zero time: no error")
	}
	// Comparisons clamp instead: a token issued at the zero time of a user
	// revoked now is revoked.
	now := time.Now()
	if err := s.CreateFamily(ctx, auth.Family{ID: "f", User: "u", Created: now, Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeUser(ctx, "u", now); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Revoked(ctx, "u", "f", time.Time{}); err != nil || !r {
		t.Errorf("Revoked at the zero time = %v, %v; want true", r, err)
	}
}
