package redisauth

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// DocsOf confirms the index against the documents: entries too many are
// skipped, pending ones count when the document says so, and the role is
// the document's.
func TestDocsOfConfirmsIndex(t *testing.T) {
	c := redistest.Start(t, redistest.Options{}).Client(t)
	s := newStore(t, c)
	ctx := t.Context()
	mine, theirs, unknown, pend := protocol.NewDocumentID(), protocol.NewDocumentID(), protocol.NewDocumentID(), protocol.NewDocumentID()
	for _, d := range []protocol.DocumentID{mine, pend} {
		if err := s.Claim(ctx, d, "u", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Claim(ctx, theirs, "v", time.Now()); err != nil {
		t.Fatal(err)
	}
	idx := s.userDocsKey("u")
	// A crash between the document's change and the index's: the document
	// says editor, the index has the pending entry only.
	if err := c.HSet(ctx, s.docKey(pend), userField("u"), "editor").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, idx, string(pend), pending, string(theirs), "7", string(unknown), "3").Err(); err != nil {
		t.Fatal(err)
	}
	docs, err := s.DocsOf(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	want := map[protocol.DocumentID]hub.Role{mine: hub.RoleOwner, pend: hub.RoleEditor}
	if len(docs) != len(want) {
		t.Fatalf("DocsOf = %v, want %v", docs, want)
	}
	for i, d := range docs {
		if want[d.ID] != d.Role || (i > 0 && docs[i-1].ID >= d.ID) {
			t.Fatalf("DocsOf = %v, want %v sorted", docs, want)
		}
	}
}

// Index writes that arrive out of order end as the latest version says.
func TestIndexVersions(t *testing.T) {
	c := redistest.Start(t, redistest.Options{}).Client(t)
	s := newStore(t, c)
	ctx := t.Context()
	idx := s.userDocsKey("u")
	apply := func(ver, present string) {
		t.Helper()
		if err := indexScript.Run(ctx, c, []string{idx}, "doc", ver, present).Err(); err != nil {
			t.Fatal(err)
		}
	}
	entry := func() string {
		t.Helper()
		v, err := c.HGet(ctx, idx, "doc").Result()
		if errors.Is(err, redis.Nil) {
			return "absent"
		}
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := c.HSetNX(ctx, idx, "doc", pending).Err(); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ ver, present, want string }{
		{"5", "1", "5"},
		{"4", "0", "5"}, // an older removal arriving late changes nothing
		{"5", "0", "5"},
		{"6", "0", "absent"},
		{"12", "1", "12"}, // compared as numbers, not strings
		{"9", "0", "12"},
	} {
		apply(step.ver, step.present)
		if got := entry(); got != step.want {
			t.Fatalf("after version %s present %s: entry %s, want %s", step.ver, step.present, got, step.want)
		}
	}
	// A pending entry never replaces a version.
	if err := c.HSetNX(ctx, idx, "doc", pending).Err(); err != nil {
		t.Fatal(err)
	}
	if got := entry(); got != "12" {
		t.Fatalf("entry after a pending write = %s, want 12", got)
	}
}
