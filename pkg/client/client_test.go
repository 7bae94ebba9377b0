package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
	"github.com/plaithub/plait/pkg/protocol"
)

func TestCreateFindChangeSubscribe(t *testing.T) {
	n := startNode(t)
	a := newClient(t, client.Options{URLs: []string{n.URL()}})
	b := newClient(t, client.Options{URLs: []string{n.URL()}})
	ha := created(t, a, set("title", "hello"))
	hb, err := b.Find(ctxT(t), ha.URL())
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, hb, "title"); got != "hello" {
		t.Fatalf("found title %v", got)
	}
	// Subscribe's callback runs on the client's reader goroutine: one that
	// blocks stops the client from reading anything more. The concurrent
	// edits below reach b as up to one message each, so the callback
	// must not wait for room (only the first event is read).
	events := make(chan client.Event, 16)
	cancel := hb.Subscribe(func(e client.Event) {
		select {
		case events <- e:
		default:
		}
	})
	defer cancel()
	if err := ha.Change(set("title", "changed")); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Changes != 1 || !slices.Equal(e.Heads, ha.Heads()) {
			t.Fatalf("event %+v, want 1 change and heads %x", e, ha.Heads())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for the remote change")
	}
	if got := get(t, hb, "title"); got != "changed" {
		t.Fatalf("title after the change: %v", got)
	}
	// Concurrent edits on both sides converge.
	var wg sync.WaitGroup
	for i, h := range []*client.Handle{ha, hb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if err := h.Change(set(fmt.Sprintf("k%d-%d", i, j), int64(j))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	waitSame(t, ha, hb)
	if get(t, ha, "k1-19") != int64(19) || get(t, hb, "k0-19") != int64(19) {
		t.Fatal("concurrent edits missing")
	}
}

// TestCreateEmptyAndNoOpChange: a document created with nothing in it
// still reaches the server; a change that changes nothing is no error.
func TestCreateEmptyAndNoOpChange(t *testing.T) {
	n := startNode(t)
	a := newClient(t, client.Options{URLs: []string{n.URL()}})
	b := newClient(t, client.Options{URLs: []string{n.URL()}})
	h := created(t, a, nil)
	if err := h.Change(func(*automerge.Doc) error { return nil }); err != nil {
		t.Fatalf("a change that changes nothing: %v", err)
	}
	hb, err := b.Find(ctxT(t), h.URL())
	if err != nil {
		t.Fatal(err)
	}
	waitSame(t, h, hb)
}

func TestFindUnknownIsUnavailable(t *testing.T) {
	n := startNode(t)
	c := newClient(t, client.Options{URLs: []string{n.URL()}})
	_, err := c.Find(ctxT(t), protocol.NewDocumentID().URL())
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Find of an unknown document: %v, want ErrUnavailable", err)
	}
	if _, err := c.Find(ctxT(t), "automerge:not-a-doc"); err == nil {
		t.Fatal("Find of a malformed URL succeeded")
	}
}

func TestEphemeralBroadcast(t *testing.T) {
	n := startNode(t)
	a := newClient(t, client.Options{URLs: []string{n.URL()}})
	b := newClient(t, client.Options{URLs: []string{n.URL()}})
	ha := created(t, a, set("x", int64(1)))
	hb, err := b.Find(ctxT(t), ha.URL())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	hb.OnEphemeral(func(from string, data []byte) { got <- from + ":" + string(data) })
	if err := ha.Broadcast([]byte("cursor 7")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != a.PeerID()+":cursor 7" {
			t.Fatalf("ephemeral %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ephemeral message not received")
	}
}

// TestOfflineEditAndResume: a client with a Dir goes away, both sides edit,
// and the restarted client resumes from disk, exchanging only what is
// missing.
func TestOfflineEditAndResume(t *testing.T) {
	n := startNode(t)
	dirA := t.TempDir()
	a := newClient(t, client.Options{URLs: []string{n.URL()}, Dir: dirA, PeerID: "alice"})
	b := newClient(t, client.Options{URLs: []string{n.URL()}, Dir: t.TempDir()})
	ha := created(t, a, set("n", int64(0)))
	// A document with some history: 300 changes of 1 KiB each.
	big := bytes.Repeat([]byte("x"), 1024)
	for i := 0; i < 300; i++ {
		if err := ha.Change(func(d *automerge.Doc) error { return d.RootMap().Set(fmt.Sprintf("blob%d", i), big) }); err != nil {
			t.Fatal(err)
		}
	}
	waitInSync(t, ha)
	hb, err := b.Find(ctxT(t), ha.URL())
	if err != nil {
		t.Fatal(err)
	}
	waitSame(t, ha, hb)
	url := ha.URL()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// Apart: both edit.
	for i := 0; i < 3; i++ {
		if err := hb.Change(set(fmt.Sprintf("b%d", i), int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Offline edits: a client that is not connected (no server reachable).
	off, err := client.New(context.Background(), client.Options{URLs: []string{"ws://127.0.0.1:1/ws"}, Dir: dirA, PeerID: "alice", MinBackoff: time.Hour, MaxBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	hOff, err := off.Find(ctxT(t), url)
	if err != nil {
		t.Fatalf("Find from disk while offline: %v", err)
	}
	if got := get(t, hOff, "blob299"); !bytes.Equal(got.([]byte), big) {
		t.Fatal("the kept document lacks its history")
	}
	for i := 0; i < 3; i++ {
		if err := hOff.Change(set(fmt.Sprintf("a%d", i), int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}

	// Resume: a new client on the same Dir.
	a2 := newClient(t, client.Options{URLs: []string{n.URL()}, Dir: dirA, PeerID: "alice"})
	before := a2.Stats()
	ha2, err := a2.Find(ctxT(t), url)
	if err != nil {
		t.Fatal(err)
	}
	waitSame(t, ha2, hb)
	for _, k := range []string{"a2", "b2"} {
		if get(t, ha2, k) == nil || get(t, hb, k) == nil {
			t.Fatalf("%s missing after resume", k)
		}
	}
	after := a2.Stats()
	resumeBytes := after.BytesIn + after.BytesOut - before.BytesIn - before.BytesOut
	t.Logf("resume exchanged %d bytes for a document of more than %d bytes of changes", resumeBytes, 300*1024)
	if resumeBytes > 50*1024 {
		t.Fatalf("resume exchanged %d bytes: more than the missing changes (the document has 300 KiB)", resumeBytes)
	}
}

// TestReconnectAcrossNodeRestart: edits made while the node is down reach
// the other client once it is back.
func TestReconnectAcrossNodeRestart(t *testing.T) {
	n := startNode(t)
	a := newClient(t, client.Options{URLs: []string{n.URL()}, Dir: t.TempDir()})
	b := newClient(t, client.Options{URLs: []string{n.URL()}, Dir: t.TempDir()})
	ha := created(t, a, set("v", int64(0)))
	hb, err := b.Find(ctxT(t), ha.URL())
	if err != nil {
		t.Fatal(err)
	}
	n.stop()
	if err := ha.Change(set("v", int64(1))); err != nil {
		t.Fatal(err)
	}
	if err := hb.Change(set("w", int64(2))); err != nil {
		t.Fatal(err)
	}
	n.start()
	waitSame(t, ha, hb)
	if get(t, hb, "v") != int64(1) || get(t, ha, "w") != int64(2) {
		t.Fatal("edits made while the node was down did not cross")
	}
	if s := a.Stats(); s.Connects < 2 || s.Disconnects < 1 {
		t.Fatalf("stats %+v: want a reconnect", s)
	}
}

// TestSecondURLWhenFirstIsDown: the client rotates through its URLs.
func TestSecondURLWhenFirstIsDown(t *testing.T) {
	n := startNode(t)
	c := newClient(t, client.Options{URLs: []string{"ws://127.0.0.1:1/ws", n.URL()}})
	if _, err := c.Create(set("ok", true)); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Connects != 1 {
		t.Fatalf("stats %+v", s)
	}
}
