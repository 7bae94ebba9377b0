package authtest

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plaithub/plait/server/auth"
)

// newFamily stores a family of a new user, generation 0, created a minute
// ago and expiring in an hour.
func newFamily(t *testing.T, s auth.TokenStore) auth.Family {
	t.Helper()
	return newFamilyOf(t, s, newUser(t))
}

func newFamilyOf(t *testing.T, s auth.TokenStore, user string) auth.Family {
	t.Helper()
	now := time.Now()
	f := auth.Family{ID: newFamilyID(t), User: user, Created: now.Add(-time.Minute), Expires: now.Add(time.Hour)}
	if err := s.CreateFamily(t.Context(), f); err != nil {
		t.Fatalf("CreateFamily: %v", err)
	}
	return f
}

func checkFamily(t *testing.T, what string, got, want auth.Family) {
	t.Helper()
	if got.ID != want.ID || got.User != want.User || got.Gen != want.Gen || got.Revoked != want.Revoked ||
		!sameTime(got.Created, want.Created) || !sameTime(got.Expires, want.Expires) {
		t.Fatalf("%s = %+v, want %+v", what, got, want)
	}
}

func mustFamily(t *testing.T, s auth.TokenStore, id string) auth.Family {
	t.Helper()
	f, err := s.Family(t.Context(), id)
	if err != nil {
		t.Fatalf("Family(%q): %v", id, err)
	}
	return f
}

func mustRotate(t *testing.T, s auth.TokenStore, id string, gen uint64, exp time.Time) auth.Family {
	t.Helper()
	f, err := s.Rotate(t.Context(), id, gen, exp)
	if err != nil {
		t.Fatalf("Rotate(%q, gen %d): %v", id, gen, err)
	}
	return f
}

func checkRevoked(t *testing.T, s auth.TokenStore, user, family string, issuedAt time.Time, want bool) {
	t.Helper()
	got, err := s.Revoked(t.Context(), user, family, issuedAt)
	if err != nil {
		t.Fatalf("Revoked(%q, %q, %v): %v", user, family, issuedAt, err)
	}
	if got != want {
		t.Fatalf("Revoked(%q, %q, %v) = %v, want %v", user, family, issuedAt.Format(time.RFC3339Nano), got, want)
	}
}

func testFamilyRoundTrip(t *testing.T, s auth.TokenStore) {
	ctx := t.Context()
	user := newUser(t)
	now := time.Now()
	f := auth.Family{ID: newFamilyID(t), User: user, Gen: 5, Created: now.Add(-time.Hour), Expires: now.Add(48 * time.Hour)}
	if err := s.CreateFamily(ctx, f); err != nil {
		t.Fatalf("CreateFamily: %v", err)
	}
	g := auth.Family{ID: newFamilyID(t), User: user, Created: now, Expires: now.Add(time.Hour)}
	if err := s.CreateFamily(ctx, g); err != nil {
		t.Fatalf("CreateFamily: %v", err)
	}
	checkFamily(t, "Family", mustFamily(t, s, f.ID), f)
	checkFamily(t, "Family of a second family of the user", mustFamily(t, s, g.ID), g)
	checkRevoked(t, s, user, f.ID, now, false)
}

func testFamilyUnknown(t *testing.T, s auth.TokenStore) {
	_, err := s.Family(t.Context(), newFamilyID(t))
	checkErr(t, "Family of an unknown id", err, auth.ErrNotFound)
}

func testRotateNext(t *testing.T, s auth.TokenStore) {
	f := newFamily(t, s)
	want := f
	for gen := range uint64(4) {
		exp := time.Now().Add(time.Duration(gen+2) * time.Hour)
		got := mustRotate(t, s, f.ID, gen, exp)
		want.Gen, want.Expires = gen+1, exp
		checkFamily(t, fmt.Sprintf("Rotate(gen %d)", gen), got, want)
		checkFamily(t, fmt.Sprintf("Family after Rotate(gen %d)", gen), mustFamily(t, s, f.ID), want)
	}

	// The expiry Rotate sets is the one Rotate checks next: a rotation
	// to an expiry already past makes the next one ErrExpired.
	g := newFamily(t, s)
	mustRotate(t, s, g.ID, 0, time.Now().Add(-time.Second))
	_, err := s.Rotate(t.Context(), g.ID, 1, time.Now().Add(time.Hour))
	checkErr(t, "Rotate after a rotation set a past expiry", err, auth.ErrExpired)
	if got := mustFamily(t, s, g.ID); got.Gen != 1 {
		t.Fatalf("Family after a refused Rotate has gen %d, want 1", got.Gen)
	}
}

func testRotateConcurrent(t *testing.T, s auth.TokenStore) {
	// Several rounds: one race might be won by luck.
	for range 3 {
		f := newFamily(t, s)
		exp := time.Now().Add(2 * time.Hour)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, concurrency)
		fams := make([]auth.Family, concurrency)
		for i := range concurrency {
			wg.Go(func() {
				<-start
				fams[i], errs[i] = s.Rotate(t.Context(), f.ID, 0, exp)
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
				if fams[i].Gen != 1 {
					t.Fatalf("winning Rotate returned gen %d, want 1", fams[i].Gen)
				}
			case errors.Is(err, auth.ErrTokenReused):
			default:
				t.Fatalf("concurrent Rotate: error = %v, want nil or one wrapping ErrTokenReused", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d of %d concurrent rotations of one generation succeeded, want exactly 1", wins, concurrency)
		}
		if got := mustFamily(t, s, f.ID); !got.Revoked {
			t.Fatalf("family after a reuse is not revoked: %+v", got)
		}
		checkRevoked(t, s, f.User, f.ID, time.Now(), true)
		_, err := s.Rotate(t.Context(), f.ID, 1, exp)
		checkErr(t, "Rotate of the winner's generation after the reuse", err, auth.ErrRevoked)
	}
}

func testRotateReuse(t *testing.T, s auth.TokenStore) {
	for _, old := range []uint64{0, 1} { // long ago, and the one just before
		f := newFamily(t, s)
		other := newFamilyOf(t, s, f.User)
		exp := time.Now().Add(time.Hour)
		mustRotate(t, s, f.ID, 0, exp)
		mustRotate(t, s, f.ID, 1, exp)
		_, err := s.Rotate(t.Context(), f.ID, old, exp)
		checkErr(t, fmt.Sprintf("Rotate of old gen %d", old), err, auth.ErrTokenReused)
		got := mustFamily(t, s, f.ID)
		if !got.Revoked || got.Gen != 2 {
			t.Fatalf("family after a reuse = %+v, want revoked at gen 2", got)
		}
		checkRevoked(t, s, f.User, f.ID, time.Now(), true)
		_, err = s.Rotate(t.Context(), f.ID, 2, exp)
		checkErr(t, "Rotate of the current gen after a reuse", err, auth.ErrRevoked)
		// Only that family: the user's other login stays.
		checkRevoked(t, s, f.User, other.ID, time.Now(), false)
		mustRotate(t, s, other.ID, 0, exp)
	}
}

func testRotateNewer(t *testing.T, s auth.TokenStore) {
	f := newFamily(t, s)
	_, err := s.Rotate(t.Context(), f.ID, 3, time.Now().Add(time.Hour))
	checkErr(t, "Rotate of a generation newer than the current one", err, auth.ErrRevoked)
	if got := mustFamily(t, s, f.ID); got.Gen != 0 {
		t.Fatalf("a refused Rotate moved the generation to %d", got.Gen)
	}
}

func testRotateExpired(t *testing.T, s auth.TokenStore) {
	now := time.Now()
	f := auth.Family{ID: newFamilyID(t), User: newUser(t), Created: now.Add(-2 * time.Hour), Expires: now.Add(-time.Minute)}
	if err := s.CreateFamily(t.Context(), f); err != nil {
		t.Fatalf("CreateFamily: %v", err)
	}
	_, err := s.Rotate(t.Context(), f.ID, 0, now.Add(time.Hour))
	checkErr(t, "Rotate of an expired family", err, auth.ErrExpired)
	checkFamily(t, "Family after a refused Rotate", mustFamily(t, s, f.ID), f)
}

func testRotateUnknown(t *testing.T, s auth.TokenStore) {
	_, err := s.Rotate(t.Context(), newFamilyID(t), 0, time.Now().Add(time.Hour))
	checkErr(t, "Rotate of an unknown family", err, auth.ErrNotFound)
}

func testRotateRevoked(t *testing.T, s auth.TokenStore) {
	f := newFamily(t, s)
	if err := s.RevokeFamily(t.Context(), f.ID); err != nil {
		t.Fatalf("RevokeFamily: %v", err)
	}
	_, err := s.Rotate(t.Context(), f.ID, 0, time.Now().Add(time.Hour))
	checkErr(t, "Rotate of a revoked family", err, auth.ErrRevoked)
	if got := mustFamily(t, s, f.ID); got.Gen != 0 || !got.Revoked {
		t.Fatalf("family after a refused Rotate = %+v, want revoked at gen 0", got)
	}
}

func testRevokeFamily(t *testing.T, s auth.TokenStore) {
	ctx := t.Context()
	f := newFamily(t, s)
	other := newFamilyOf(t, s, f.User)
	for i := range 2 {
		if err := s.RevokeFamily(ctx, f.ID); err != nil {
			t.Fatalf("RevokeFamily, call %d: %v", i+1, err)
		}
		want := f
		want.Revoked = true
		checkFamily(t, "Family after RevokeFamily", mustFamily(t, s, f.ID), want)
		// Every token of the family, whenever issued.
		checkRevoked(t, s, f.User, f.ID, time.Now().Add(time.Hour), true)
		checkRevoked(t, s, f.User, f.ID, f.Created, true)
	}
	checkRevoked(t, s, f.User, other.ID, time.Now(), false)
	checkFamily(t, "other family of the user", mustFamily(t, s, other.ID), other)
}

func testRevokeFamilyUnknown(t *testing.T, s auth.TokenStore) {
	checkErr(t, "RevokeFamily of an unknown family", s.RevokeFamily(t.Context(), newFamilyID(t)), auth.ErrNotFound)
}

func testRevokedUnknown(t *testing.T, s auth.TokenStore) {
	checkRevoked(t, s, newUser(t), newFamilyID(t), time.Now(), true)
}

func testRevokeUserCutOff(t *testing.T, s auth.TokenStore) {
	f := newFamily(t, s)
	g := newFamily(t, s) // another user
	at := time.Now().Truncate(time.Millisecond)
	// A user with nothing to revoke yet is fine too.
	if err := s.RevokeUser(t.Context(), newUser(t), at); err != nil {
		t.Fatalf("RevokeUser of a user without families: %v", err)
	}
	checkRevoked(t, s, f.User, f.ID, at.Add(-time.Second), false)
	if err := s.RevokeUser(t.Context(), f.User, at); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	checkRevoked(t, s, f.User, f.ID, at.Add(-time.Hour), true)
	checkRevoked(t, s, f.User, f.ID, at.Add(-time.Second), true)
	checkRevoked(t, s, f.User, f.ID, at, true) // "at or after issuedAt"
	checkRevoked(t, s, f.User, f.ID, at.Add(time.Second), false)
	checkRevoked(t, s, g.User, g.ID, at.Add(-time.Second), false)
}

func testRevokeUserMonotonic(t *testing.T, s auth.TokenStore) {
	ctx := t.Context()
	f := newFamily(t, s)
	at := time.Now().Truncate(time.Millisecond)
	if err := s.RevokeUser(ctx, f.User, at); err != nil {
		t.Fatalf("RevokeUser: %v", err)
	}
	if err := s.RevokeUser(ctx, f.User, at.Add(-time.Hour)); err != nil {
		t.Fatalf("RevokeUser with an earlier at: %v", err)
	}
	checkRevoked(t, s, f.User, f.ID, at.Add(-time.Second), true)
	checkRevoked(t, s, f.User, f.ID, at, true)
	checkRevoked(t, s, f.User, f.ID, at.Add(time.Second), false)
	if err := s.RevokeUser(ctx, f.User, at.Add(time.Hour)); err != nil {
		t.Fatalf("RevokeUser with a later at: %v", err)
	}
	checkRevoked(t, s, f.User, f.ID, at.Add(30*time.Minute), true)
	checkRevoked(t, s, f.User, f.ID, at.Add(2*time.Hour), false)
}

func testRevokeUserConcurrent(t *testing.T, s auth.TokenStore) {
	f := newFamily(t, s)
	base := time.Now().Truncate(time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for _, i := range mrand.Perm(concurrency) {
		wg.Go(func() { errs <- s.RevokeUser(t.Context(), f.User, base.Add(time.Duration(i)*time.Second)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("RevokeUser: %v", err)
		}
	}
	latest := base.Add((concurrency - 1) * time.Second)
	checkRevoked(t, s, f.User, f.ID, latest, true)
	checkRevoked(t, s, f.User, f.ID, latest.Add(time.Millisecond), false)
}

func newKey(t *testing.T) string {
	t.Helper()
	return "authtest-key-" + newFamilyID(t)
}

func mustConsume(t *testing.T, s auth.TokenStore, key string, ttl time.Duration, want bool) {
	t.Helper()
	got, err := s.ConsumeOnce(t.Context(), key, ttl)
	if err != nil {
		t.Fatalf("ConsumeOnce(%q): %v", key, err)
	}
	if got != want {
		t.Fatalf("ConsumeOnce(%q) = %v, want %v", key, got, want)
	}
}

func testConsumeOnce(t *testing.T, s auth.TokenStore) {
	k := newKey(t)
	mustConsume(t, s, k, time.Hour, true)
	mustConsume(t, s, k, time.Hour, false)
	mustConsume(t, s, k, time.Hour, false)
	mustConsume(t, s, k+"-other", time.Hour, true)
	mustConsume(t, s, k, time.Hour, false)
}

func testConsumeOnceConcurrent(t *testing.T, s auth.TokenStore) {
	for range 3 {
		k := newKey(t)
		var wg sync.WaitGroup
		var wins, fails atomic.Int32
		start := make(chan struct{})
		for range concurrency {
			wg.Go(func() {
				<-start
				ok, err := s.ConsumeOnce(t.Context(), k, time.Hour)
				switch {
				case err != nil:
					fails.Add(1)
					t.Errorf("ConsumeOnce: %v", err)
				case ok:
					wins.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if fails.Load() == 0 && wins.Load() != 1 {
			t.Fatalf("%d of %d concurrent ConsumeOnce of one key reported true, want exactly 1", wins.Load(), concurrency)
		}
	}
}

func testConsumeOnceTTL(t *testing.T, s auth.TokenStore) {
	const ttl = 400 * time.Millisecond
	k, long := newKey(t), newKey(t)
	start := time.Now()
	mustConsume(t, s, k, ttl, true)
	mustConsume(t, s, long, time.Hour, true)
	if time.Since(start) < ttl/2 {
		mustConsume(t, s, k, ttl, false) // within the ttl (if the machine is not too slow to tell)
	}
	time.Sleep(time.Until(start.Add(ttl + 200*time.Millisecond)))
	mustConsume(t, s, k, ttl, true) // forgotten after its ttl: recorded anew
	mustConsume(t, s, k, ttl, false)
	mustConsume(t, s, long, time.Hour, false) // a longer ttl is kept
}

func testTokenStoreCancelled(t *testing.T, s auth.TokenStore) {
	ctx := cancelled(t)
	now := time.Now()

	nf := auth.Family{ID: newFamilyID(t), User: newUser(t), Created: now, Expires: now.Add(time.Hour)}
	checkCancelled(t, "CreateFamily", s.CreateFamily(ctx, nf))
	_, err := s.Family(t.Context(), nf.ID)
	checkErr(t, "Family after a cancelled CreateFamily", err, auth.ErrNotFound)

	f := newFamily(t, s)
	_, err = s.Family(ctx, f.ID)
	checkCancelled(t, "Family", err)
	_, err = s.Rotate(ctx, f.ID, 0, now.Add(2*time.Hour))
	checkCancelled(t, "Rotate", err)
	checkCancelled(t, "RevokeFamily", s.RevokeFamily(ctx, f.ID))
	checkCancelled(t, "RevokeUser", s.RevokeUser(ctx, f.User, now))
	_, err = s.Revoked(ctx, f.User, f.ID, now)
	checkCancelled(t, "Revoked", err)
	checkFamily(t, "Family after cancelled calls", mustFamily(t, s, f.ID), f)
	checkRevoked(t, s, f.User, f.ID, now.Add(-time.Second), false)

	k := newKey(t)
	_, err = s.ConsumeOnce(ctx, k, time.Hour)
	checkCancelled(t, "ConsumeOnce", err)
	mustConsume(t, s, k, time.Hour, true)
}

// RunTokenStoreTests runs the auth.TokenStore conformance suite. newStore
// is called once per subtest and must return a ready store; it releases
// the store with t.Cleanup.
func RunTokenStoreTests(t *testing.T, newStore func(t *testing.T) auth.TokenStore) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s auth.TokenStore)
	}{
		{"Family/CreateAndRead", testFamilyRoundTrip},
		{"Family/UnknownIsNotFound", testFamilyUnknown},
		{"Rotate/NextGenerationAndExpiry", testRotateNext},
		{"Rotate/ConcurrentSameGenerationOneWins", testRotateConcurrent},
		{"Rotate/OlderGenerationIsReuseAndRevokes", testRotateReuse},
		{"Rotate/NewerGenerationIsRevoked", testRotateNewer},
		{"Rotate/ExpiredFamily", testRotateExpired},
		{"Rotate/UnknownIsNotFound", testRotateUnknown},
		{"Rotate/RevokedFamily", testRotateRevoked},
		{"RevokeFamily/IdempotentAndScoped", testRevokeFamily},
		{"RevokeFamily/UnknownIsNotFound", testRevokeFamilyUnknown},
		{"Revoked/UnknownFamilyIsRevoked", testRevokedUnknown},
		{"RevokeUser/CutOff", testRevokeUserCutOff},
		{"RevokeUser/EarlierDoesNotMoveBack", testRevokeUserMonotonic},
		{"RevokeUser/ConcurrentKeepsLatest", testRevokeUserConcurrent},
		{"ConsumeOnce/SecondIsReplay", testConsumeOnce},
		{"ConsumeOnce/ConcurrentOneWins", testConsumeOnceConcurrent},
		{"ConsumeOnce/AgainAfterTTL", testConsumeOnceTTL},
		{"Context/CancelledFailsWithoutEffect", testTokenStoreCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			if s == nil {
				t.Fatal("newStore returned nil")
			}
			tc.fn(t, s)
		})
	}
}
