package authtest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
)

// ListACL is an access.ACL that can list its claimed documents: what
// backups (server/backup) need to export every access list.
type ListACL interface {
	access.ACL
	// ClaimedDocs returns the id of every claimed document, each once,
	// sorted. A call whose ctx is done fails.
	ClaimedDocs(ctx context.Context) ([]protocol.DocumentID, error)
}

// RunClaimedDocsTests checks ClaimedDocs. newACL is called once per
// subtest and must return a ready ACL (released with t.Cleanup). The ACL
// may hold documents of other tests: the suite compares listings before
// and after its own claims.
func RunClaimedDocsTests(t *testing.T, newACL func(t *testing.T) ListACL) {
	t.Run("ClaimedDocs/ListsExactlyTheClaimed", func(t *testing.T) {
		a := newACL(t)
		ctx := t.Context()
		before, err := a.ClaimedDocs(ctx)
		if err != nil {
			t.Fatalf("ClaimedDocs: %v", err)
		}
		base := string(newDoc())
		ids := []protocol.DocumentID{protocol.DocumentID(base), protocol.DocumentID(base + "x"),
			protocol.DocumentID(base + "{"), protocol.DocumentID(base + "}x"), protocol.DocumentID(base + "%7B")}
		u, v := newUser(t), newUser(t)
		for _, id := range ids {
			if err := a.Claim(ctx, id, u, time.Now()); err != nil {
				t.Fatalf("Claim(%q): %v", id, err)
			}
		}
		mustShare(t, a, ids[0], v, hub.RoleEditor)
		// Sharing an unclaimed document fails and does not claim it.
		if err := a.Share(ctx, protocol.DocumentID(base+"-unclaimed"), v, hub.RoleViewer); !errors.Is(err, access.ErrNotFound) {
			t.Fatalf("Share of an unclaimed document: %v, want ErrNotFound", err)
		}
		after, err := a.ClaimedDocs(ctx)
		if err != nil {
			t.Fatalf("ClaimedDocs: %v", err)
		}
		want := append(slices.Clone(before), ids...)
		slices.Sort(want)
		if !slices.Equal(after, want) {
			t.Errorf("ClaimedDocs = %q\nwant %q", after, want)
		}
	})
	t.Run("ClaimedDocs/CancelledFails", func(t *testing.T) {
		a := newACL(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := a.ClaimedDocs(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("ClaimedDocs with a cancelled context: %v, want context.Canceled", err)
		}
	})
}
