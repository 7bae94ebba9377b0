package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
)

// TestGoClientCreateThenClaim: the Go client on a login node, its tokens
// from a TokenSource (refresh rotation included), creates a document
// before claiming it, as an app offline-first would; the claim lets the
// client's open session in at once and the document is stored, so a
// viewer it is shared with finds it.
func TestGoClientCreateThenClaim(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""))
	_, _, refresh := login(t, e, n, n, "alice")
	var mu sync.Mutex
	var rotated []string
	ts, err := client.NewTokenSource(client.TokenSourceOptions{BaseURL: n.HTTP, RefreshToken: refresh,
		OnRotate: func(rt string) { mu.Lock(); rotated = append(rotated, rt); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Options{URLs: []string{n.URL}, Token: ts.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.Create(func(d *automerge.Doc) error { return d.RootMap().Set("title", "made before the claim") })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(rotated) != 1 || rotated[0] == refresh {
		t.Fatalf("the token source rotated %d refresh tokens, want 1 new one", len(rotated))
	}
	mu.Unlock()
	// The client's first sync is refused: nobody claimed the document yet.
	for metricValue(t, n, "plait_denials_total") < 1 {
		if ctx.Err() != nil {
			t.Fatal("the unclaimed document was never refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Refused, the client waits: it does not offer the document again and
	// again (it used to, thousands of times a second, until rate limited).
	time.Sleep(300 * time.Millisecond)
	if d := metricValue(t, n, "plait_denials_total"); d > 2 {
		t.Fatalf("%v denials of one unclaimed document: the client keeps offering it", d)
	}
	access, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code, out := api(t, "POST", n.HTTP+"/api/docs", access, map[string]string{"documentId": h.URL()}); code != 201 {
		t.Fatalf("claim: %d %v", code, out)
	}
	_, bob, _ := login(t, e, n, n, "bob")
	if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+string(h.ID())+"/users/oidc:bob", access, map[string]string{"role": "viewer"}); code != 204 {
		t.Fatalf("share: %d", code)
	}
	cb, err := client.New(ctx, client.Options{URLs: []string{n.URL}, Token: func(context.Context) (string, error) { return bob, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	var title string
	for title == "" && ctx.Err() == nil {
		hb, err := cb.Find(ctx, h.URL())
		if err != nil { // the creator's first sync may still be on its way
			time.Sleep(100 * time.Millisecond)
			continue
		}
		_ = hb.View(func(d *automerge.Doc) error {
			v, err := d.RootMap().Get("title")
			if err == nil && v.Kind() == automerge.KindStr {
				title = v.Str()
			}
			return nil
		})
	}
	if title != "made before the claim" {
		t.Fatalf("the viewer reads %q", title)
	}
}
