package authtest

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
)

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
		{"Delete/UnclaimedAndUnindexed", testACLDelete},
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

// testACLDelete: a deleted document is unclaimed for everyone, gone from
// every user's list, may be claimed again from scratch, and other
// documents keep their access.
func testACLDelete(t *testing.T, a access.ACL) {
	ctx := t.Context()
	doc, owner, _ := claimed(t, a)
	other, _, otherAt := claimed(t, a)
	editor, viewer := newUser(t), newUser(t)
	mustShare(t, a, doc, editor, hub.RoleEditor)
	mustShare(t, a, doc, viewer, hub.RoleViewer)
	mustShare(t, a, other, editor, hub.RoleEditor)
	if err := a.SetLink(ctx, doc, hub.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, doc); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := a.Access(ctx, doc)
	checkErr(t, "Access after Delete", err, access.ErrNotFound)
	checkErr(t, "Delete again", a.Delete(ctx, doc), access.ErrNotFound)
	checkErr(t, "Delete of an unclaimed document", a.Delete(ctx, newDoc()), access.ErrNotFound)
	checkErr(t, "Share after Delete", a.Share(ctx, doc, viewer, hub.RoleEditor), access.ErrNotFound)
	checkDocsOf(t, a, owner, nil)
	checkDocsOf(t, a, viewer, nil)
	checkDocsOf(t, a, editor, []access.UserDoc{{ID: other, Role: hub.RoleEditor}})
	checkAccess(t, "the other document", mustAccess(t, a, other), map[string]hub.Role{mustOwner(t, a, other): hub.RoleOwner, editor: hub.RoleEditor}, hub.RoleNone, otherAt)
	// Claimed again, by someone else: only they have a role.
	at := time.Now()
	if err := a.Claim(ctx, doc, viewer, at); err != nil {
		t.Fatalf("Claim after Delete: %v", err)
	}
	checkAccess(t, "Access after a new Claim", mustAccess(t, a, doc), map[string]hub.Role{viewer: hub.RoleOwner}, hub.RoleNone, at)
	checkDocsOf(t, a, viewer, []access.UserDoc{{ID: doc, Role: hub.RoleOwner}})
	checkDocsOf(t, a, owner, nil)
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Delete(ctx2, doc); err == nil {
		t.Fatal("Delete with a cancelled context succeeded")
	}
	mustAccess(t, a, doc)
}

// mustOwner returns the only owner of doc.
func mustOwner(t *testing.T, a access.ACL, doc protocol.DocumentID) string {
	t.Helper()
	for u, r := range mustAccess(t, a, doc).Users {
		if r == hub.RoleOwner {
			return u
		}
	}
	t.Fatalf("%s has no owner", doc)
	return ""
}
