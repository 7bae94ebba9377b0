package hub_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// pipeConn is an in-memory hub.Conn: the test plays the client.
type pipeConn struct {
	toHub   chan []byte
	fromHub chan []byte
	mu      sync.Mutex
	closed  bool
	code    protocol.CloseCode
	done    chan struct{}
}

func newPipe() *pipeConn {
	return &pipeConn{toHub: make(chan []byte, 64), fromHub: make(chan []byte, 1024), done: make(chan struct{})}
}

func (c *pipeConn) Read(ctx context.Context) ([]byte, error) {
	select {
	case b := <-c.toHub:
		return b, nil
	case <-c.done:
		return nil, hub.ErrConnClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Done is closed once the connection is closed (as wstransport.Conn's).
func (c *pipeConn) Done() <-chan struct{} { return c.done }

func (c *pipeConn) Send(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return hub.ErrConnClosed
	}
	c.fromHub <- frame
	return nil
}

func (c *pipeConn) Close(code protocol.CloseCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed, c.code = true, code
		close(c.done)
	}
}

func (c *pipeConn) closeCode() (protocol.CloseCode, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.closed
}

// client is the test's side of one pipeConn.
type client struct {
	t    testing.TB
	c    *pipeConn
	id   string
	hub  string
	errc chan error
}

func connect(t testing.TB, h *hub.Hub, id, storageID string) *client {
	t.Helper()
	cl := &client{t: t, c: newPipe(), id: id, errc: make(chan error, 1)}
	go func() { cl.errc <- h.Serve(context.Background(), cl.c, hub.ConnInfo{RemoteAddr: "pipe"}) }()
	cl.send(&protocol.Message{Type: protocol.TypeJoin, SenderID: id, SupportedProtocolVersions: []string{"1"},
		PeerMetadata: &protocol.PeerMetadata{StorageID: storageID, IsEphemeral: storageID == ""}})
	m := cl.recv(time.Second)
	if m == nil || m.Type != protocol.TypePeer {
		t.Fatalf("expected peer, got %+v", m)
	}
	cl.hub = m.SenderID
	t.Cleanup(func() { cl.c.Close(protocol.CloseNormal, "") })
	return cl
}

func (cl *client) send(m *protocol.Message) {
	cl.t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.c.toHub <- b
}

// recv returns the next message or nil after timeout.
func (cl *client) recv(timeout time.Duration) *protocol.Message {
	cl.t.Helper()
	select {
	case b := <-cl.c.fromHub:
		m, err := protocol.Decode(b)
		if err != nil {
			cl.t.Fatalf("hub sent an undecodable frame: %v", err)
		}
		return m
	case <-time.After(timeout):
		return nil
	}
}

func (cl *client) sync(id protocol.DocumentID, ss *automerge.SyncState, typ string) bool {
	sm, ok := ss.GenerateMessage()
	if ok {
		cl.send(&protocol.Message{Type: typ, SenderID: cl.id, TargetID: cl.hub, DocumentID: id, Data: sm.Bytes()})
	}
	return ok
}

// syncUntilQuiet exchanges sync messages until nothing more arrives.
func (cl *client) syncUntilQuiet(id protocol.DocumentID, ss *automerge.SyncState) {
	cl.t.Helper()
	cl.sync(id, ss, protocol.TypeSync)
	for {
		m := cl.recv(300 * time.Millisecond)
		if m == nil {
			return
		}
		if m.Type != protocol.TypeSync {
			continue
		}
		if _, err := ss.ReceiveMessage(m.Data); err != nil {
			cl.t.Fatal(err)
		}
		cl.sync(id, ss, protocol.TypeSync)
	}
}

func newHub(t testing.TB, store hub.Store, mod ...func(*hub.Options)) *hub.Hub {
	t.Helper()
	opts := hub.Options{Store: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), IdleDocTimeout: 200 * time.Millisecond, PendingWait: 20 * time.Millisecond}
	for _, f := range mod {
		f(&opts)
	}
	h, err := hub.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return h
}

func edit(t *testing.T, doc *automerge.Doc, key string, v any) {
	t.Helper()
	if err := doc.RootMap().Set(key, v); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit(key); err != nil {
		t.Fatal(err)
	}
}

// gateStore delays AppendChanges until the test opens the gate.
type gateStore struct {
	hub.Store
	gate     chan struct{}
	mu       sync.Mutex
	appended int
}

func (g *gateStore) AppendChanges(ctx context.Context, id protocol.DocumentID, b []byte) (uint64, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	seq, err := g.Store.AppendChanges(ctx, id, b)
	g.mu.Lock()
	g.appended++
	g.mu.Unlock()
	return seq, err
}

func connectAs(t *testing.T, h *hub.Hub, id, user string) *client {
	t.Helper()
	cl := &client{t: t, c: newPipe(), id: id, errc: make(chan error, 1)}
	go func() {
		cl.errc <- h.Serve(context.Background(), cl.c, hub.ConnInfo{RemoteAddr: "pipe", Identity: hub.Identity{User: user}})
	}()
	cl.send(&protocol.Message{Type: protocol.TypeJoin, SenderID: id, SupportedProtocolVersions: []string{"1"},
		PeerMetadata: &protocol.PeerMetadata{IsEphemeral: true}})
	m := cl.recv(time.Second)
	if m == nil || m.Type != protocol.TypePeer {
		t.Fatalf("expected peer, got %+v", m)
	}
	cl.hub = m.SenderID
	t.Cleanup(func() { cl.c.Close(protocol.CloseNormal, "") })
	return cl
}

// mutableRoles is an Authorizer whose answers the test changes.
type mutableRoles struct {
	mu sync.Mutex
	r  map[string]hub.Role
}

func (m *mutableRoles) Role(_ context.Context, who hub.Identity, _ protocol.DocumentID) (hub.Role, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.r[who.User], nil
}

func (m *mutableRoles) set(user string, r hub.Role) {
	m.mu.Lock()
	m.r[user] = r
	m.mu.Unlock()
}

func closedWith(t *testing.T, cl *client, want protocol.CloseCode) {
	t.Helper()
	select {
	case <-cl.errc:
	case <-time.After(2 * time.Second):
		t.Fatalf("connection not closed, want %v", want)
	}
	if code, _ := cl.c.closeCode(); code != want {
		t.Fatalf("closed with %v, want %v", code, want)
	}
}

// createDoc syncs a new document with one change from cl.
func createDoc(t *testing.T, cl *client) protocol.DocumentID {
	t.Helper()
	doc := automerge.New()
	edit(t, doc, "k", "v")
	id := protocol.NewDocumentID()
	cl.syncUntilQuiet(id, automerge.NewSyncState(doc))
	return id
}

// bigChange returns a sync message whose change carries about size bytes.
func bigChange(t *testing.T, key string, size int) []byte {
	t.Helper()
	doc := automerge.New()
	edit(t, doc, key, strings.Repeat("x", size))
	sm, _ := automerge.NewSyncState(doc).GenerateMessage()
	first := sm.Bytes()
	// The first message of a sync state has no changes; answer it as an
	// empty peer would, and take the one that carries them.
	peer := automerge.NewSyncState(automerge.New())
	if _, err := peer.ReceiveMessage(first); err != nil {
		t.Fatal(err)
	}
	ss := automerge.NewSyncState(doc)
	if _, err := ss.ReceiveMessage(first); err != nil {
		t.Fatal(err)
	}
	reply, _ := peer.GenerateMessage()
	if _, err := ss.ReceiveMessage(reply.Bytes()); err != nil {
		t.Fatal(err)
	}
	withChanges, ok := ss.GenerateMessage()
	if !ok || len(withChanges.Bytes()) < size {
		t.Fatalf("no message with the change")
	}
	return withChanges.Bytes()
}

func waitInflightZero(t *testing.T, h *hub.Hub) {
	t.Helper()
	eventually(t, "bytes in flight given back", func() bool { return h.InflightBytes() == 0 })
}

// blockingStore holds every AppendChanges until the test opens the gate,
// then fails it if fail is set.
type blockingStore struct {
	hub.Store
	called chan struct{} // gets a value when AppendChanges is called
	gate   chan struct{}
	fail   bool
}

func newBlockingStore(fail bool) *blockingStore {
	return &blockingStore{Store: memstore.New(), called: make(chan struct{}, 1), gate: make(chan struct{}), fail: fail}
}

// blocked waits until an AppendChanges call is held at the gate.
func (f *blockingStore) blocked(t *testing.T) {
	t.Helper()
	select {
	case <-f.called:
	case <-time.After(5 * time.Second):
		t.Fatal("the store was never written")
	}
}

func (f *blockingStore) AppendChanges(ctx context.Context, id protocol.DocumentID, b []byte) (uint64, error) {
	select {
	case f.called <- struct{}{}:
	default:
	}
	select {
	case <-f.gate:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if f.fail {
		return 0, errors.New("disk on fire")
	}
	return f.Store.AppendChanges(ctx, id, b)
}

// alive checks that cl's connection still answers: a request for an
// unknown document gets doc-unavailable.
func (cl *client) alive() {
	cl.t.Helper()
	id := protocol.NewDocumentID()
	cl.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: cl.id, TargetID: cl.hub, DocumentID: id, Data: emptySyncMessage()})
	for {
		m := cl.recv(2 * time.Second)
		if m == nil {
			cl.t.Fatal("connection did not answer")
		}
		if m.Type == protocol.TypeDocUnavailable && m.DocumentID == id {
			return
		}
		if m.Type == protocol.TypeError {
			cl.t.Fatalf("error: %s", m.ErrorMessage)
		}
	}
}

func emptySyncMessage() []byte {
	return []byte{0x42, 0, 0, 0, 0} // sync message: no heads, need, have or changes
}

// eventually waits until cond holds, failing the test with what if it
// does not within 10 s. Tests wait on conditions, never on time alone.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// noOpenDocuments waits until h has no document in memory.
func noOpenDocuments(t *testing.T, h *hub.Hub) {
	t.Helper()
	eventually(t, "documents left open", func() bool { return h.OpenDocuments() == 0 })
}
