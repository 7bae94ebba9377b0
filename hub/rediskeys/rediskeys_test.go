package rediskeys_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub/rediskeys"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// Escape keeps braces out of a hash tag, one to one; Unescape undoes it.
func TestEscape(t *testing.T) {
	for _, s := range []string{"", "plain", "a{b}", "}", "{", "%", "%7B", "%257B", "{%}", "ünï{cödé}"} {
		e := rediskeys.Escape(s)
		if slices.ContainsFunc([]rune(e), func(r rune) bool { return r == '{' || r == '}' }) {
			t.Errorf("Escape(%q) = %q keeps a brace", s, e)
		}
		if got := rediskeys.Unescape(e); got != s {
			t.Errorf("Unescape(Escape(%q)) = %q", s, got)
		}
	}
	if rediskeys.Escape("%7B") == rediskeys.Escape("{") {
		t.Error("Escape maps two names to one key")
	}
	if got := rediskeys.GlobEscape(`p*?[x]\^-{}`); got != `p\*\?\[x\]\\\^\-{}` {
		t.Errorf("GlobEscape = %q", got)
	}
}

// ScanIDs finds the ids of one family of keys, on one server and on every
// master of a cluster: escaped ids come back as they were, keys of other
// families and malformed keys are left out, and glob characters in the
// prefix match only themselves.
func TestScanIDs(t *testing.T) {
	check := func(t *testing.T, c redis.UniversalClient) {
		ctx := context.Background()
		const prefix = "p*[1]" // a glob pattern if it were not escaped
		head, tail := prefix+":{", "}:meta"
		want := []protocol.DocumentID{"%7B", "a{b}", "doc", "}"}
		for i := range 200 { // spread over every master's slots
			want = append(want, protocol.DocumentID(fmt.Sprintf("n%03d", i)))
		}
		for _, id := range want {
			if err := c.Set(ctx, head+rediskeys.Escape(string(id))+tail, "1", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, other := range []string{
			head + "x}:snap",        // another key of a document
			head + tail,             // an empty id
			"p1[1]:{y}:meta",        // what an unescaped glob would match
			prefix + ":{a{b}}:meta", // an id that was not escaped
		} {
			if err := c.Set(ctx, other, "1", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := rediskeys.ScanIDs(ctx, c, head, tail)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			var missing, extra []protocol.DocumentID
			for _, id := range want {
				if !slices.Contains(got, id) {
					missing = append(missing, id)
				}
			}
			for _, id := range got {
				if !slices.Contains(want, id) {
					extra = append(extra, id)
				}
			}
			t.Fatalf("ScanIDs found %d ids, want %d: missing %q, extra %q", len(got), len(want), missing, extra)
		}
	}
	t.Run("server", func(t *testing.T) { check(t, redistest.Start(t, redistest.Options{}).Client(t)) })
	t.Run("cluster", func(t *testing.T) { check(t, redistest.StartCluster(t, 3).Client(t)) })
}
