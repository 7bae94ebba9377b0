package client_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
)

func newClient(t *testing.T, opts client.Options) *client.Client {
	t.Helper()
	if opts.MaxBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	c, err := client.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("connect: %v (%s)", err, c.Stats().LastError)
	}
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func set(key string, v any) func(*automerge.Doc) error {
	return func(d *automerge.Doc) error { return d.RootMap().Set(key, v) }
}

func get(t *testing.T, h *client.Handle, key string) any {
	t.Helper()
	var out any
	if err := h.View(func(d *automerge.Doc) error {
		v, err := d.RootMap().Get(key)
		if err != nil {
			return err
		}
		out = v.Interface()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// created makes a document on c and waits until the server has it.
func created(t *testing.T, c *client.Client, init func(*automerge.Doc) error) *client.Handle {
	t.Helper()
	h, err := c.Create(init)
	if err != nil {
		t.Fatal(err)
	}
	waitInSync(t, h)
	return h
}

func waitInSync(t *testing.T, h *client.Handle) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !h.InSync() {
		if time.Now().After(deadline) {
			t.Fatal("the server never acknowledged the document's heads")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSame waits until every handle has the same heads.
func waitSame(t *testing.T, hs ...*client.Handle) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		same := true
		for _, h := range hs[1:] {
			if !slices.Equal(h.Heads(), hs[0].Heads()) {
				same = false
			}
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			for i, h := range hs {
				t.Logf("handle %d heads %x", i, h.Heads())
			}
			t.Fatal("handles did not converge")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor polls cond for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
