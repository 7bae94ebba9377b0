package hub_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
)

// roles is a static Authorizer: user -> role on every document.
type roles map[string]hub.Role

func (r roles) Role(_ context.Context, who hub.Identity, _ protocol.DocumentID) (hub.Role, error) {
	return r[who.User], nil
}

// peer is a test client with its document and sync state.
type peer struct {
	c   *client
	doc *automerge.Doc
	ss  *automerge.SyncState
}

// writeThenRead connects a writer (as user wUser) that stores key=value in
// id, then a reader (as rUser) that fetches the document.
func writeThenRead(t *testing.T, h *hub.Hub, id protocol.DocumentID, wID, wUser, rID, rUser, key, value string) (w, r peer) {
	t.Helper()
	w = peer{c: connectAs(t, h, wID, wUser), doc: automerge.New()}
	edit(t, w.doc, key, value)
	w.ss = automerge.NewSyncState(w.doc)
	w.c.syncUntilQuiet(id, w.ss)
	r = peer{c: connectAs(t, h, rID, rUser), doc: automerge.New()}
	r.ss = automerge.NewSyncState(r.doc)
	r.c.sync(id, r.ss, protocol.TypeRequest)
	r.c.syncUntilQuiet(id, r.ss)
	return w, r
}

// TestViewerChangesAreRefused: a viewer reads; its change reaches nobody,
// is not stored, and it is told once (an error, then close 4403); an
// editor's changes sync; a peer without a role gets doc-unavailable,
// exactly like an unknown document.
func TestViewerChangesAreRefused(t *testing.T) {
	store := memstore.New()
	m := hub.NewMetrics(nil)
	h := newHub(t, store, func(o *hub.Options) {
		o.Authorizer = roles{"ed": hub.RoleEditor, "vi": hub.RoleViewer}
		o.Metrics = m
	})
	id := protocol.NewDocumentID()
	e, v := writeThenRead(t, h, id, "editor", "ed", "viewer", "vi", "title", "by the editor")
	ed, docE, ssE := e.c, e.doc, e.ss
	vi, docV, ssV := v.c, v.doc, v.ss
	if v, err := docV.RootMap().Get("title"); err != nil || v.Str() != "by the editor" {
		t.Fatalf("the viewer reads %v, %v", v, err)
	}
	stored := func() int {
		sd, err := store.LoadDoc(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return len(sd.Batches)
	}
	before := stored()

	// The viewer changes the document and syncs.
	edit(t, docV, "title", "by the viewer")
	errMsg := pushUntilClosed(t, vi, id, ssV)
	code, closed := vi.c.closeCode()
	if !closed || code != protocol.CloseReadOnly || errMsg == "" {
		t.Fatalf("viewer: closed %v with %v after error %q; want close %d after an error", closed, code, errMsg, protocol.CloseReadOnly)
	}
	if got := stored(); got != before {
		t.Fatalf("the viewer's change was stored: %d batches, was %d", got, before)
	}
	if msg := ed.recv(300 * time.Millisecond); msg != nil && msg.Type == protocol.TypeSync {
		if _, err := ssE.ReceiveMessage(msg.Data); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := docE.RootMap().Get("title"); v.Str() != "by the editor" {
		t.Fatalf("the viewer's change reached the editor: %q", v.Str())
	}

	// The editor's changes still sync.
	edit(t, docE, "more", "yes")
	ed.syncUntilQuiet(id, ssE)
	if got := stored(); got != before+1 {
		t.Fatalf("the editor's change: %d batches stored, want %d", got, before+1)
	}

	// A stranger: doc-unavailable, like for a document that does not exist.
	st := connectAs(t, h, "stranger", "")
	docS := automerge.New()
	st.sync(id, automerge.NewSyncState(docS), protocol.TypeRequest)
	if msg := st.recv(2 * time.Second); msg == nil || msg.Type != protocol.TypeDocUnavailable {
		t.Fatalf("stranger got %+v, want doc-unavailable", msg)
	}
	unknown := protocol.NewDocumentID()
	st.sync(unknown, automerge.NewSyncState(automerge.New()), protocol.TypeRequest)
	if msg := st.recv(2 * time.Second); msg == nil || msg.Type != protocol.TypeDocUnavailable {
		t.Fatalf("unknown document: %+v", msg)
	}
}

// TestPermissionChangeOnOpenSession: an editor demoted to viewer has its
// next change refused; a viewer whose role is revoked stops receiving the
// document and is told it is unavailable.
func TestPermissionChangeOnOpenSession(t *testing.T) {
	auth := &mutableRoles{r: map[string]hub.Role{"a": hub.RoleEditor, "b": hub.RoleEditor}}
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.Authorizer = auth })
	id := protocol.NewDocumentID()
	pa, pb := writeThenRead(t, h, id, "pa", "a", "pb", "b", "k", "v0")
	a, docA, ssA := pa.c, pa.doc, pa.ss
	b := pb.c

	// b loses its role: told once, then nothing more of the document.
	auth.set("b", hub.RoleNone)
	if err := h.Reauthorize(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if m := b.recv(2 * time.Second); m == nil || m.Type != protocol.TypeDocUnavailable {
		t.Fatalf("revoked peer got %+v, want doc-unavailable", m)
	}
	edit(t, docA, "k", "v1")
	a.syncUntilQuiet(id, ssA)
	for {
		m := b.recv(300 * time.Millisecond)
		if m == nil {
			break
		}
		if m.Type == protocol.TypeSync {
			t.Fatal("a revoked peer still receives the document's changes")
		}
	}

	// a is demoted to viewer: its next change is refused with 4403.
	auth.set("a", hub.RoleViewer)
	if err := h.Reauthorize(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	edit(t, docA, "k", "v2")
	pushUntilClosed(t, a, id, ssA)
	if code, closed := a.c.closeCode(); !closed || code != protocol.CloseReadOnly {
		t.Fatalf("demoted editor: closed %v with %v, want %d", closed, code, protocol.CloseReadOnly)
	}
}

// pushUntilClosed syncs cl's local changes until the hub closes it (or 10
// s pass) and returns the error message it got.
func pushUntilClosed(t *testing.T, cl *client, id protocol.DocumentID, ss *automerge.SyncState) string {
	t.Helper()
	var errMsg string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, closed := cl.c.closeCode(); closed {
			break
		}
		cl.sync(id, ss, protocol.TypeSync)
		msg := cl.recv(200 * time.Millisecond)
		if msg == nil {
			continue
		}
		switch msg.Type {
		case protocol.TypeError:
			errMsg = msg.ErrorMessage
		case protocol.TypeSync:
			if _, err := ss.ReceiveMessage(msg.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	for msg := cl.recv(100 * time.Millisecond); msg != nil; msg = cl.recv(100 * time.Millisecond) {
		if msg.Type == protocol.TypeError {
			errMsg = msg.ErrorMessage
		}
	}
	return errMsg
}

// TestGrantReachesDeniedPeer: a client that creates a document before it
// is allowed to (it claims it through the REST API a moment later) is
// refused, then, once the permission lands and Reauthorize runs, offered a
// sync message, and its document is stored without the client changing it
// again. The denial is reported as a security event.
func TestGrantReachesDeniedPeer(t *testing.T) {
	auth := &mutableRoles{r: map[string]hub.Role{}}
	store := memstore.New()
	var mu sync.Mutex
	var events []hub.SecurityEvent
	h := newHub(t, store, func(o *hub.Options) {
		o.Authorizer = auth
		o.OnSecurityEvent = func(ev hub.SecurityEvent) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		}
	})
	id := protocol.NewDocumentID()
	c := connectAs(t, h, "creator", "u1")
	doc := automerge.New()
	edit(t, doc, "title", "made offline")
	ss := automerge.NewSyncState(doc)
	c.sync(id, ss, protocol.TypeSync)
	if m := c.recv(2 * time.Second); m == nil || m.Type != protocol.TypeDocUnavailable {
		t.Fatalf("before the grant: %+v, want doc-unavailable", m)
	}
	mu.Lock()
	if len(events) != 1 || events[0].Kind != hub.EventDenied || events[0].Doc != id || events[0].Conn.Identity.User != "u1" || events[0].Peer != "creator" {
		t.Fatalf("security events %+v, want one denial of u1 on %s", events, id)
	}
	mu.Unlock()

	auth.set("u1", hub.RoleOwner)
	if err := h.Reauthorize(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	m := c.recv(2 * time.Second)
	if m == nil || m.Type != protocol.TypeSync {
		t.Fatalf("after the grant: %+v, want a sync message", m)
	}
	if _, err := ss.ReceiveMessage(m.Data); err != nil {
		t.Fatal(err)
	}
	c.syncUntilQuiet(id, ss)
	eventually(t, "the granted creator's document stored", func() bool {
		sd, err := store.LoadDoc(context.Background(), id)
		return err == nil && len(sd.Batches) > 0
	})
}

// TestViewerChangeWithMissingDependencyRefused: a viewer's change whose
// dependency the hub lacks would be queued (not applied, so not seen by
// the accept check): it is refused on arrival all the same, and nobody is
// asked for the missing dependency.
func TestViewerChangeWithMissingDependencyRefused(t *testing.T) {
	h := newHub(t, memstore.New(), func(o *hub.Options) {
		o.Authorizer = roles{"ed": hub.RoleEditor, "vi": hub.RoleViewer}
	})
	id := protocol.NewDocumentID()
	e, v := writeThenRead(t, h, id, "editor", "ed", "viewer", "vi", "k", "v0")
	ed, vi, docV := e.c, v.c, v.doc
	edit(t, docV, "k", "v1") // A: its dependency is the editor's change
	mid := docV.Heads()
	edit(t, docV, "k", "v2") // B: depends on A
	chs, err := docV.Changes(mid...)
	if err != nil || len(chs) != 1 {
		t.Fatalf("changes after A: %d, %v", len(chs), err)
	}
	msg := &amsync.Message{Type: amsync.MessageTypeSync, Changes: [][]byte{chs[0].Save()}}
	for _, hd := range docV.Heads() {
		msg.Heads = append(msg.Heads, amsync.Hash(hd))
	}
	vi.send(&protocol.Message{Type: protocol.TypeSync, SenderID: "viewer", TargetID: vi.hub, DocumentID: id, Data: msg.Encode()})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, closed := vi.c.closeCode(); closed {
			if code != protocol.CloseReadOnly {
				t.Fatalf("closed with %v, want %d", code, protocol.CloseReadOnly)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a viewer's change with a missing dependency was not refused")
		}
		vi.recv(100 * time.Millisecond)
	}
	// The editor is not asked for the viewer's missing change.
	for m := ed.recv(300 * time.Millisecond); m != nil; m = ed.recv(300 * time.Millisecond) {
		if m.Type != protocol.TypeSync {
			continue
		}
		pm, err := amsync.ParseMessage(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if len(pm.Need) > 0 {
			t.Fatalf("the editor was asked for %d changes after the viewer's refused one", len(pm.Need))
		}
	}
}
