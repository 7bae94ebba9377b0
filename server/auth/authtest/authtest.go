package authtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
)

// concurrency is how many goroutines race in the concurrency tests.
const concurrency = 8

// timeSlack is how far a time read back may be from the one stored: the
// contracts do not promise more than millisecond precision.
const timeSlack = time.Millisecond

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

// RunACLTests runs the access.ACL conformance suite. newACL is called once
// per subtest and must return a ready ACL; it releases it with t.Cleanup.
func RunACLTests(t *testing.T, newACL func(t *testing.T) access.ACL) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, a access.ACL)
	}{
		{"Unclaimed/NotFound", testUnclaimed},
		{"Claim/FirstOwner", testClaim},
		{"Claim/TwiceIsClaimed", testClaimTwice},
		{"Claim/ConcurrentOneWins", testClaimConcurrent},
		{"Share/GiveChangeRemove", testShare},
		{"Share/LastOwner", testLastOwner},
		{"Share/ConcurrentDemotionsKeepAnOwner", testConcurrentDemotions},
		{"Share/InvalidRole", testShareInvalidRole},
		{"Share/ManyUsersConcurrently", testShareConcurrentUsers},
		{"SetLink/Roles", testSetLink},
		{"Access/RoleSemantics", testRoleSemantics},
		{"Access/ReturnsACopy", testAccessCopy},
		{"DocsOf/SortedAndExact", testDocsOf},
		{"DocsOf/ConsistentWithAccessUnderConcurrency", testDocsOfConcurrent},
		{"Context/CancelledFailsWithoutEffect", testACLCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newACL(t)
			if a == nil {
				t.Fatal("newACL returned nil")
			}
			tc.fn(t, a)
		})
	}
}

// RunEventsTests runs the auth.Events conformance suite. newEvents is
// called once per subtest and returns two nodes of one cluster: a and b
// share a backend that no other subtest uses (for a single-node
// implementation, a and b may be the same value). It releases them with
// t.Cleanup.
//
// A Watch has started once it receives events; the suite cannot see that
// moment from outside, so it publishes probe events (User "authtest-probe")
// until every watcher under test has received one, and only then publishes
// the events it checks. Watchers skip probes.
func RunEventsTests(t *testing.T, newEvents func(t *testing.T) (a, b auth.Events)) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, a, b auth.Events)
	}{
		{"DeliveredToEveryWatcherInOrder", testEventsFanOut},
		{"ConcurrentPublishersOneOrder", testEventsConcurrentPublishers},
		{"NotDeliveredBeforeWatchStarted", testEventsBeforeWatch},
		{"PublishCancelledHasNoEffect", testEventsPublishCancelled},
		{"WatchReturnsWhenContextDone", testEventsWatchReturns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newEvents(t)
			if a == nil || b == nil {
				t.Fatal("newEvents returned nil")
			}
			tc.fn(t, a, b)
		})
	}
}

// ---- TokenStore ----

func newFamilyID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func newUser(t *testing.T) string {
	t.Helper()
	return "authtest-user-" + newFamilyID(t)
}

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

func sameTime(a, b time.Time) bool {
	d := a.Sub(b)
	return d < timeSlack && d > -timeSlack
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

func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error = %v, want one wrapping %q", what, err, want)
	}
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

// cancelled returns a context that is already done.
func cancelled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}

func checkCancelled(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%s with a cancelled context: error = %v, want one wrapping context.Canceled", what, err)
	}
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

// ---- ACL ----

func newDoc() protocol.DocumentID { return protocol.NewDocumentID() }

// claimed claims a new document for a new user and returns both.
func claimed(t *testing.T, a access.ACL) (protocol.DocumentID, string, time.Time) {
	t.Helper()
	doc, owner := newDoc(), newUser(t)
	at := time.Now().Add(-time.Minute)
	if err := a.Claim(t.Context(), doc, owner, at); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return doc, owner, at
}

func mustAccess(t *testing.T, a access.ACL, doc protocol.DocumentID) access.DocAccess {
	t.Helper()
	acc, err := a.Access(t.Context(), doc)
	if err != nil {
		t.Fatalf("Access(%s): %v", doc, err)
	}
	return acc
}

func mustShare(t *testing.T, a access.ACL, doc protocol.DocumentID, user string, role hub.Role) {
	t.Helper()
	if err := a.Share(t.Context(), doc, user, role); err != nil {
		t.Fatalf("Share(%s, %q, %v): %v", doc, user, role, err)
	}
}

func checkAccess(t *testing.T, what string, got access.DocAccess, users map[string]hub.Role, link hub.Role, created time.Time) {
	t.Helper()
	if len(got.Users) != len(users) || got.Link != link || !sameTime(got.Created, created) {
		t.Fatalf("%s = %+v, want users %v, link %v, created %v", what, got, users, link, created)
	}
	for u, r := range users {
		if got.Users[u] != r {
			t.Fatalf("%s = %+v, want users %v, link %v", what, got, users, link)
		}
	}
}

func mustDocsOf(t *testing.T, a access.ACL, user string) []access.UserDoc {
	t.Helper()
	docs, err := a.DocsOf(t.Context(), user)
	if err != nil {
		t.Fatalf("DocsOf(%q): %v", user, err)
	}
	return docs
}

func checkDocsOf(t *testing.T, a access.ACL, user string, want []access.UserDoc) {
	t.Helper()
	got := mustDocsOf(t, a, user)
	if len(want) == 0 && len(got) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("DocsOf(%q) = %v, want %v", user, got, want)
	}
}

func testUnclaimed(t *testing.T, a access.ACL) {
	ctx := t.Context()
	doc, user := newDoc(), newUser(t)
	_, err := a.Access(ctx, doc)
	checkErr(t, "Access of an unclaimed document", err, access.ErrNotFound)
	checkErr(t, "Share on an unclaimed document", a.Share(ctx, doc, user, hub.RoleEditor), access.ErrNotFound)
	checkErr(t, "SetLink on an unclaimed document", a.SetLink(ctx, doc, hub.RoleViewer), access.ErrNotFound)
	_, err = a.Access(ctx, doc)
	checkErr(t, "Access after refused changes", err, access.ErrNotFound)
	checkDocsOf(t, a, user, nil)
}

func testClaim(t *testing.T, a access.ACL) {
	doc, owner, at := claimed(t, a)
	acc := mustAccess(t, a, doc)
	checkAccess(t, "Access after Claim", acc, map[string]hub.Role{owner: hub.RoleOwner}, hub.RoleNone, at)
	if r := acc.Role(owner); r != hub.RoleOwner {
		t.Fatalf("owner's role = %v", r)
	}
	if r := acc.Role(newUser(t)); r != hub.RoleNone {
		t.Fatalf("a stranger's role on a claimed document = %v, want none", r)
	}
	checkDocsOf(t, a, owner, []access.UserDoc{{ID: doc, Role: hub.RoleOwner}})
}

func testClaimTwice(t *testing.T, a access.ACL) {
	doc, owner, at := claimed(t, a)
	other := newUser(t)
	checkErr(t, "Claim by the owner again", a.Claim(t.Context(), doc, owner, time.Now()), access.ErrClaimed)
	checkErr(t, "Claim by another user", a.Claim(t.Context(), doc, other, time.Now()), access.ErrClaimed)
	checkAccess(t, "Access after refused claims", mustAccess(t, a, doc), map[string]hub.Role{owner: hub.RoleOwner}, hub.RoleNone, at)
	checkDocsOf(t, a, other, nil)
	checkDocsOf(t, a, owner, []access.UserDoc{{ID: doc, Role: hub.RoleOwner}})
}

func testClaimConcurrent(t *testing.T, a access.ACL) {
	for range 3 {
		doc := newDoc()
		users := make([]string, concurrency)
		errs := make([]error, concurrency)
		for i := range users {
			users[i] = newUser(t)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range concurrency {
			wg.Go(func() {
				<-start
				errs[i] = a.Claim(t.Context(), doc, users[i], time.Now())
			})
		}
		close(start)
		wg.Wait()
		winner := ""
		for i, err := range errs {
			switch {
			case err == nil:
				if winner != "" {
					t.Fatalf("two concurrent claims of one document succeeded: %q and %q", winner, users[i])
				}
				winner = users[i]
			case errors.Is(err, access.ErrClaimed):
			default:
				t.Fatalf("concurrent Claim: error = %v, want nil or one wrapping ErrClaimed", err)
			}
		}
		if winner == "" {
			t.Fatal("no concurrent Claim succeeded")
		}
		acc := mustAccess(t, a, doc)
		if len(acc.Users) != 1 || acc.Users[winner] != hub.RoleOwner {
			t.Fatalf("Access after concurrent claims = %+v, want %q the only owner", acc, winner)
		}
		for _, u := range users {
			if u != winner {
				checkDocsOf(t, a, u, nil)
			}
		}
		checkDocsOf(t, a, winner, []access.UserDoc{{ID: doc, Role: hub.RoleOwner}})
	}
}

func testShare(t *testing.T, a access.ACL) {
	doc, owner, at := claimed(t, a)
	u := newUser(t)
	for _, r := range []hub.Role{hub.RoleViewer, hub.RoleEditor, hub.RoleOwner, hub.RoleViewer} {
		mustShare(t, a, doc, u, r)
		checkAccess(t, "Access after Share "+r.String(), mustAccess(t, a, doc),
			map[string]hub.Role{owner: hub.RoleOwner, u: r}, hub.RoleNone, at)
		checkDocsOf(t, a, u, []access.UserDoc{{ID: doc, Role: r}})
	}
	mustShare(t, a, doc, u, hub.RoleNone)
	acc := mustAccess(t, a, doc)
	if _, ok := acc.Users[u]; ok {
		t.Fatalf("Share none left the user in Users: %+v", acc)
	}
	checkAccess(t, "Access after Share none", acc, map[string]hub.Role{owner: hub.RoleOwner}, hub.RoleNone, at)
	checkDocsOf(t, a, u, nil)
	// Removing a user who has no role changes nothing.
	stranger := newUser(t)
	mustShare(t, a, doc, stranger, hub.RoleNone)
	checkAccess(t, "Access after removing a stranger", mustAccess(t, a, doc), map[string]hub.Role{owner: hub.RoleOwner}, hub.RoleNone, at)
	checkDocsOf(t, a, stranger, nil)
	checkDocsOf(t, a, owner, []access.UserDoc{{ID: doc, Role: hub.RoleOwner}})
}

func testLastOwner(t *testing.T, a access.ACL) {
	doc, owner, at := claimed(t, a)
	only := map[string]hub.Role{owner: hub.RoleOwner}
	for _, r := range []hub.Role{hub.RoleEditor, hub.RoleViewer, hub.RoleNone} {
		checkErr(t, "demoting the only owner to "+r.String(), a.Share(t.Context(), doc, owner, r), access.ErrLastOwner)
		checkAccess(t, "Access after a refused demotion", mustAccess(t, a, doc), only, hub.RoleNone, at)
	}
	mustShare(t, a, doc, owner, hub.RoleOwner) // no change: allowed

	second := newUser(t)
	mustShare(t, a, doc, second, hub.RoleOwner)
	mustShare(t, a, doc, owner, hub.RoleEditor) // another owner remains
	checkAccess(t, "Access after demoting one of two owners", mustAccess(t, a, doc),
		map[string]hub.Role{owner: hub.RoleEditor, second: hub.RoleOwner}, hub.RoleNone, at)
	checkErr(t, "removing the new only owner", a.Share(t.Context(), doc, second, hub.RoleNone), access.ErrLastOwner)
	checkDocsOf(t, a, second, []access.UserDoc{{ID: doc, Role: hub.RoleOwner}})

	mustShare(t, a, doc, owner, hub.RoleOwner)
	mustShare(t, a, doc, second, hub.RoleNone)
	checkAccess(t, "Access after removing one of two owners", mustAccess(t, a, doc), only, hub.RoleNone, at)
	checkDocsOf(t, a, second, nil)
}

func testConcurrentDemotions(t *testing.T, a access.ACL) {
	for range 5 {
		doc, u, _ := claimed(t, a)
		v := newUser(t)
		mustShare(t, a, doc, v, hub.RoleOwner)
		var wg sync.WaitGroup
		start := make(chan struct{})
		var errU, errV error
		wg.Go(func() { <-start; errU = a.Share(t.Context(), doc, u, hub.RoleEditor) })
		wg.Go(func() { <-start; errV = a.Share(t.Context(), doc, v, hub.RoleNone) })
		close(start)
		wg.Wait()
		for _, err := range []error{errU, errV} {
			if err != nil && !errors.Is(err, access.ErrLastOwner) {
				t.Fatalf("concurrent demotion: %v", err)
			}
		}
		if (errU == nil) == (errV == nil) {
			t.Fatalf("concurrent demotions of both owners: errors %v and %v, want exactly one ErrLastOwner", errU, errV)
		}
		owners := 0
		for _, r := range mustAccess(t, a, doc).Users {
			if r == hub.RoleOwner {
				owners++
			}
		}
		if owners != 1 {
			t.Fatalf("%d owners after concurrent demotions, want 1", owners)
		}
	}
}

func testShareInvalidRole(t *testing.T, a access.ACL) {
	doc, owner, at := claimed(t, a)
	u := newUser(t)
	for _, r := range []hub.Role{-1, hub.RoleOwner + 1, 42} {
		checkErr(t, fmt.Sprintf("Share with role %d", int(r)), a.Share(t.Context(), doc, u, r), access.ErrInvalidRole)
	}
	checkAccess(t, "Access after refused shares", mustAccess(t, a, doc), map[string]hub.Role{owner: hub.RoleOwner}, hub.RoleNone, at)
	checkDocsOf(t, a, u, nil)
}

func testShareConcurrentUsers(t *testing.T, a access.ACL) {
	doc, owner, at := claimed(t, a)
	const n = 16
	want := map[string]hub.Role{owner: hub.RoleOwner}
	users := make([]string, n)
	for i := range users {
		users[i] = newUser(t)
		want[users[i]] = hub.Role(1 + i%3)
	}
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() {
			if err := a.Share(t.Context(), doc, u, want[u]); err != nil {
				t.Errorf("Share: %v", err)
			}
		})
	}
	wg.Wait()
	checkAccess(t, "Access after concurrent shares", mustAccess(t, a, doc), want, hub.RoleNone, at)
	for _, u := range users {
		checkDocsOf(t, a, u, []access.UserDoc{{ID: doc, Role: want[u]}})
	}
}

func testSetLink(t *testing.T, a access.ACL) {
	doc, owner, at := claimed(t, a)
	users := map[string]hub.Role{owner: hub.RoleOwner}
	stranger := newUser(t)
	for _, r := range []hub.Role{hub.RoleViewer, hub.RoleEditor, hub.RoleNone, hub.RoleEditor} {
		if err := a.SetLink(t.Context(), doc, r); err != nil {
			t.Fatalf("SetLink(%v): %v", r, err)
		}
		acc := mustAccess(t, a, doc)
		checkAccess(t, "Access after SetLink "+r.String(), acc, users, r, at)
		if got := acc.Role(stranger); got != r {
			t.Fatalf("a stranger's role with link %v = %v", r, got)
		}
	}
	for _, r := range []hub.Role{hub.RoleOwner, -1, 42} {
		checkErr(t, fmt.Sprintf("SetLink(%d)", int(r)), a.SetLink(t.Context(), doc, r), access.ErrInvalidRole)
		checkAccess(t, "Access after a refused SetLink", mustAccess(t, a, doc), users, hub.RoleEditor, at)
	}
	// A link role is no explicit role: it lists no document.
	checkDocsOf(t, a, stranger, nil)
}

func testRoleSemantics(t *testing.T, a access.ACL) {
	doc, owner, _ := claimed(t, a)
	viewer, stranger := newUser(t), newUser(t)
	mustShare(t, a, doc, viewer, hub.RoleViewer)
	if err := a.SetLink(t.Context(), doc, hub.RoleEditor); err != nil {
		t.Fatalf("SetLink: %v", err)
	}
	acc := mustAccess(t, a, doc)
	for _, c := range []struct {
		user string
		want hub.Role
	}{
		{owner, hub.RoleOwner},
		{viewer, hub.RoleViewer}, // the explicit role wins, even below the link's
		{stranger, hub.RoleEditor},
		{"", hub.RoleNone}, // anonymous: never the link's role
	} {
		if got := acc.Role(c.user); got != c.want {
			t.Fatalf("Role(%q) = %v, want %v (access %+v)", c.user, got, c.want, acc)
		}
	}
}

func testAccessCopy(t *testing.T, a access.ACL) {
	doc, owner, at := claimed(t, a)
	acc := mustAccess(t, a, doc)
	acc.Users[owner] = hub.RoleViewer
	acc.Users[newUser(t)] = hub.RoleOwner
	checkAccess(t, "Access after changing an earlier result", mustAccess(t, a, doc), map[string]hub.Role{owner: hub.RoleOwner}, hub.RoleNone, at)
}

func testDocsOf(t *testing.T, a access.ACL) {
	ctx := t.Context()
	u, other := newUser(t), newUser(t)
	claim := func(user string) protocol.DocumentID {
		t.Helper()
		doc := newDoc()
		if err := a.Claim(ctx, doc, user, time.Now()); err != nil {
			t.Fatalf("Claim: %v", err)
		}
		return doc
	}
	o1, o2, o3 := claim(u), claim(u), claim(u)
	s1, s2 := claim(other), claim(other)
	mustShare(t, a, s1, u, hub.RoleViewer)
	mustShare(t, a, s2, u, hub.RoleEditor)
	linked := claim(other) // reachable by link only: not listed
	if err := a.SetLink(ctx, linked, hub.RoleEditor); err != nil {
		t.Fatalf("SetLink: %v", err)
	}
	sorted := func(docs ...access.UserDoc) []access.UserDoc {
		slices.SortFunc(docs, func(x, y access.UserDoc) int { return strings.Compare(string(x.ID), string(y.ID)) })
		return docs
	}
	checkDocsOf(t, a, u, sorted(
		access.UserDoc{ID: o1, Role: hub.RoleOwner}, access.UserDoc{ID: o2, Role: hub.RoleOwner}, access.UserDoc{ID: o3, Role: hub.RoleOwner},
		access.UserDoc{ID: s1, Role: hub.RoleViewer}, access.UserDoc{ID: s2, Role: hub.RoleEditor}))
	checkDocsOf(t, a, other, sorted(
		access.UserDoc{ID: s1, Role: hub.RoleOwner}, access.UserDoc{ID: s2, Role: hub.RoleOwner}, access.UserDoc{ID: linked, Role: hub.RoleOwner}))

	// A removal and a role change show at once.
	mustShare(t, a, s1, u, hub.RoleNone)
	mustShare(t, a, o1, other, hub.RoleOwner)
	mustShare(t, a, o1, u, hub.RoleViewer)
	checkDocsOf(t, a, u, sorted(
		access.UserDoc{ID: o1, Role: hub.RoleViewer}, access.UserDoc{ID: o2, Role: hub.RoleOwner}, access.UserDoc{ID: o3, Role: hub.RoleOwner},
		access.UserDoc{ID: s2, Role: hub.RoleEditor}))
	checkDocsOf(t, a, newUser(t), nil)
}

func testDocsOfConcurrent(t *testing.T, a access.ACL) {
	const nDocs, nUsers, workers, ops = 3, 4, 4, 25
	docs := make([]protocol.DocumentID, nDocs)
	owners := make([]string, nDocs)
	for i := range docs {
		docs[i], owners[i], _ = claimed(t, a)
	}
	users := make([]string, nUsers)
	for i := range users {
		users[i] = newUser(t)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(w), 1))
			for range ops {
				doc := docs[rng.IntN(nDocs)]
				u := users[rng.IntN(nUsers)]
				r := hub.Role(rng.IntN(int(hub.RoleOwner) + 1))
				if err := a.Share(t.Context(), doc, u, r); err != nil && !errors.Is(err, access.ErrLastOwner) {
					t.Errorf("Share: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := make(map[string][]access.UserDoc)
	for _, doc := range docs {
		for u, r := range mustAccess(t, a, doc).Users {
			want[u] = append(want[u], access.UserDoc{ID: doc, Role: r})
		}
	}
	for _, u := range append(users, owners...) {
		w := want[u]
		slices.SortFunc(w, func(x, y access.UserDoc) int { return strings.Compare(string(x.ID), string(y.ID)) })
		checkDocsOf(t, a, u, w)
	}
}

func testACLCancelled(t *testing.T, a access.ACL) {
	ctx := cancelled(t)
	doc, u := newDoc(), newUser(t)
	checkCancelled(t, "Claim", a.Claim(ctx, doc, u, time.Now()))
	_, err := a.Access(t.Context(), doc)
	checkErr(t, "Access after a cancelled Claim", err, access.ErrNotFound)
	checkDocsOf(t, a, u, nil)

	doc, owner, at := claimed(t, a)
	checkCancelled(t, "Share", a.Share(ctx, doc, u, hub.RoleEditor))
	checkCancelled(t, "Share none", a.Share(ctx, doc, owner, hub.RoleNone))
	checkCancelled(t, "SetLink", a.SetLink(ctx, doc, hub.RoleViewer))
	_, err = a.Access(ctx, doc)
	checkCancelled(t, "Access", err)
	_, err = a.DocsOf(ctx, owner)
	checkCancelled(t, "DocsOf", err)
	checkAccess(t, "Access after cancelled calls", mustAccess(t, a, doc), map[string]hub.Role{owner: hub.RoleOwner}, hub.RoleNone, at)
	checkDocsOf(t, a, u, nil)
}

// ---- Events ----

// probeUser marks the suite's probe events.
const probeUser = "authtest-probe"

// watcher is one running Watch and what it received.
type watcher struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{} // closed when Watch has returned
	err    error         // Watch's result; read after done

	// calls is touched by fn only, without a lock: the race detector
	// reports fn running on more than one goroutine. Read after done.
	calls int
	inFn  atomic.Int32

	mu     sync.Mutex
	events []auth.Event // non-probe events, duplicates (at least once) skipped
	seen   map[string]bool
	probed bool
	notify chan struct{} // 1-slot: something arrived
}

// startWatch runs e.Watch until the test ends or w.cancel is called.
func startWatch(t *testing.T, name string, e auth.Events) *watcher {
	t.Helper()
	// t.Context() ends before the cleanups run: every watcher of the test
	// stops at once, and each cleanup only waits for its own.
	ctx, cancel := context.WithCancel(t.Context())
	w := &watcher{name: name, cancel: cancel, done: make(chan struct{}), seen: make(map[string]bool), notify: make(chan struct{}, 1)}
	go func() {
		defer close(w.done)
		w.err = e.Watch(ctx, w.fn(t))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Errorf("watcher %s: Watch did not return within 10s of its context's end", name)
		}
	})
	return w
}

func (w *watcher) fn(t *testing.T) func(auth.Event) {
	return func(ev auth.Event) {
		if w.inFn.Add(1) != 1 {
			t.Errorf("watcher %s: fn called concurrently", w.name)
		}
		defer w.inFn.Add(-1)
		w.calls++
		w.mu.Lock()
		if ev.User == probeUser {
			w.probed = true
		} else if !w.seen[ev.Family] {
			w.seen[ev.Family] = true
			w.events = append(w.events, ev)
		}
		w.mu.Unlock()
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
}

func (w *watcher) probedYet() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.probed
}

func (w *watcher) received() []auth.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events)
}

// waitFor waits until w has received n events (besides probes).
func (w *watcher) waitFor(t *testing.T, n int, within time.Duration) []auth.Event {
	t.Helper()
	deadline := time.After(within)
	for {
		if got := w.received(); len(got) >= n {
			return got
		}
		select {
		case <-w.notify:
		case <-w.done:
			t.Fatalf("watcher %s: Watch returned early: %v", w.name, w.err)
		case <-deadline:
			t.Fatalf("watcher %s: %d events within %v, want %d", w.name, len(w.received()), within, n)
		}
	}
}

// ready publishes probes on e until every watcher has received one: their
// Watch has started, and every event published from now on reaches them.
func ready(t *testing.T, e auth.Events, ws ...*watcher) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		all := true
		for _, w := range ws {
			all = all && w.probedYet()
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("watchers did not receive probe events within 15s")
		}
		if err := e.Publish(t.Context(), auth.Event{Kind: auth.EventAccess, User: probeUser, At: time.Now()}); err != nil {
			t.Fatalf("Publish probe: %v", err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-t.Context().Done():
		}
	}
}

// event returns a distinct event; its Family is its unique mark.
func event(i int) auth.Event {
	kinds := []auth.EventKind{auth.EventRevokeFamily, auth.EventRevokeUser, auth.EventAccess}
	ev := auth.Event{Kind: kinds[i%3], Family: fmt.Sprintf("ev-%d-%d", i, mrand.Int64()), At: time.Now().Add(time.Duration(i) * time.Microsecond)}
	switch ev.Kind {
	case auth.EventRevokeUser:
		ev.User = fmt.Sprintf("user-%d", i)
	case auth.EventAccess:
		ev.Doc = protocol.NewDocumentID()
	}
	return ev
}

func mustPublish(t *testing.T, e auth.Events, ev auth.Event) {
	t.Helper()
	if err := e.Publish(t.Context(), ev); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func sameEvent(a, b auth.Event) bool {
	return a.Kind == b.Kind && a.User == b.User && a.Family == b.Family && a.Doc == b.Doc && sameTime(a.At, b.At)
}

func checkEvents(t *testing.T, w *watcher, got, want []auth.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("watcher %s received %d events, want %d", w.name, len(got), len(want))
	}
	for i := range want {
		if !sameEvent(got[i], want[i]) {
			t.Fatalf("watcher %s: event %d = %+v, want %+v", w.name, i, got[i], want[i])
		}
	}
}

// deliveryTime bounds how long an event may take to arrive: the contract
// says a second or two.
const deliveryTime = 5 * time.Second

func testEventsFanOut(t *testing.T, a, b auth.Events) {
	ws := []*watcher{startWatch(t, "a1", a), startWatch(t, "a2", a), startWatch(t, "b1", b)}
	ready(t, a, ws...)
	var want []auth.Event
	for i := range 40 {
		ev := event(i)
		if i%2 == 0 {
			mustPublish(t, a, ev)
		} else {
			mustPublish(t, b, ev)
		}
		want = append(want, ev)
	}
	for _, w := range ws {
		checkEvents(t, w, w.waitFor(t, len(want), deliveryTime), want)
	}
}

func testEventsConcurrentPublishers(t *testing.T, a, b auth.Events) {
	ws := []*watcher{startWatch(t, "a", a), startWatch(t, "b", b)}
	ready(t, b, ws...)
	const publishers, each = 4, 300
	var wg sync.WaitGroup
	sent := make([][]auth.Event, publishers)
	for p := range publishers {
		e := a
		if p%2 == 1 {
			e = b
		}
		wg.Go(func() {
			for i := range each {
				ev := event(p*each + i)
				if err := e.Publish(t.Context(), ev); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				sent[p] = append(sent[p], ev)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	first := ws[0].waitFor(t, publishers*each, 2*deliveryTime)
	// Every watcher sees the one publication order.
	for _, w := range ws[1:] {
		checkEvents(t, w, w.waitFor(t, publishers*each, 2*deliveryTime), first)
	}
	// Which keeps each publisher's own order.
	pos := make(map[string]int, len(first))
	for i, ev := range first {
		pos[ev.Family] = i
	}
	for p, evs := range sent {
		last := -1
		for _, ev := range evs {
			i, ok := pos[ev.Family]
			if !ok {
				t.Fatalf("event %+v of publisher %d never arrived", ev, p)
			}
			if i <= last {
				t.Fatalf("publisher %d's events arrived out of order", p)
			}
			last = i
		}
	}
}

func testEventsBeforeWatch(t *testing.T, a, b auth.Events) {
	mustPublish(t, a, event(0))
	mustPublish(t, b, event(1))
	ws := []*watcher{startWatch(t, "a", a), startWatch(t, "b", b)}
	ready(t, a, ws...)
	after := event(2)
	mustPublish(t, a, after)
	for _, w := range ws {
		checkEvents(t, w, w.waitFor(t, 1, deliveryTime), []auth.Event{after})
	}
}

func testEventsPublishCancelled(t *testing.T, a, b auth.Events) {
	ws := []*watcher{startWatch(t, "a", a), startWatch(t, "b", b)}
	ready(t, a, ws...)
	checkCancelled(t, "Publish", a.Publish(cancelled(t), event(0)))
	next := event(1)
	mustPublish(t, a, next)
	for _, w := range ws {
		checkEvents(t, w, w.waitFor(t, 1, deliveryTime), []auth.Event{next})
	}
}

func testEventsWatchReturns(t *testing.T, a, b auth.Events) {
	// A done context: Watch returns at once, or nearly.
	start := time.Now()
	err := a.Watch(cancelled(t), func(auth.Event) { t.Error("fn called by a Watch whose context was done") })
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Watch with a done context returned %v, want nil or context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Watch with a done context took %v to return", d)
	}

	w, keep := startWatch(t, "stopped", b), startWatch(t, "kept", b)
	ready(t, a, w, keep)
	first := event(0)
	mustPublish(t, a, first)
	w.waitFor(t, 1, deliveryTime)
	start = time.Now()
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return within 5s of its context's end")
	}
	t.Logf("Watch returned %v after its context's end", time.Since(start).Round(time.Millisecond))
	if w.err != nil && !errors.Is(w.err, context.Canceled) {
		t.Errorf("Watch returned %v, want nil or context.Canceled", w.err)
	}
	calls := w.calls // read after done: Watch has returned
	second := event(1)
	mustPublish(t, a, second)
	checkEvents(t, keep, keep.waitFor(t, 2, deliveryTime), []auth.Event{first, second})
	if got := w.received(); len(got) != 1 || calls != w.calls {
		t.Fatalf("a returned Watch still received events: %v", got)
	}

	// A new Watch on the same node works after that.
	again := startWatch(t, "again", b)
	ready(t, a, again)
	third := event(2)
	mustPublish(t, b, third)
	checkEvents(t, again, again.waitFor(t, 1, deliveryTime), []auth.Event{third})
}

// RunInvalidArgumentTests checks that s refuses arguments that mean
// nothing (empty ids and users, a ttl <= 0) before it writes anything.
func RunInvalidArgumentTests(t *testing.T, s interface {
	auth.TokenStore
	access.ACL
}) {
	t.Helper()
	ctx := t.Context()
	now := time.Now()
	doc := protocol.NewDocumentID()
	for name, err := range map[string]error{
		"CreateFamily without id":   s.CreateFamily(ctx, auth.Family{User: "u", Created: now, Expires: now}),
		"CreateFamily without user": s.CreateFamily(ctx, auth.Family{ID: "f", Created: now, Expires: now}),
		"RevokeUser without user":   s.RevokeUser(ctx, "", now),
		"Claim without user":        s.Claim(ctx, doc, "", now),
		"Claim of an empty id":      s.Claim(ctx, "", "u", now),
		"Share without user":        s.Share(ctx, doc, "", hub.RoleEditor),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := s.ConsumeOnce(ctx, "k", ttl); err == nil {
			t.Errorf("ConsumeOnce with ttl %v: no error", ttl)
		}
	}
	if _, err := s.ConsumeOnce(ctx, "", time.Minute); err == nil {
		t.Error("ConsumeOnce of an empty key: no error")
	}
	if docs, err := s.DocsOf(ctx, ""); err != nil || len(docs) != 0 {
		t.Errorf("DocsOf(\"\") = %v, %v; want nothing", docs, err)
	}
	if _, err := s.Access(ctx, doc); !errors.Is(err, access.ErrNotFound) {
		t.Errorf("Access after refused calls: %v, want ErrNotFound", err)
	}
}
