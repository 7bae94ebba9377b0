package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/membroker"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// quotas is a DocMaxBytes the test changes.
type quotas struct {
	mu    sync.Mutex
	bytes map[protocol.DocumentID]int
}

func (q *quotas) get(_ context.Context, id protocol.DocumentID) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n, ok := q.bytes[id]; ok {
		return n, nil
	}
	return 0, nil
}

func (q *quotas) set(id protocol.DocumentID, n int) {
	q.mu.Lock()
	q.bytes[id] = n
	q.mu.Unlock()
}

// pushBig sends a sync message carrying a change of size bytes for id and
// reports whether the connection was closed for it.
func pushBig(t *testing.T, h *hub.Hub, name string, id protocol.DocumentID, size int) (*client, bool) {
	t.Helper()
	cl := connect(t, h, name, "")
	cl.send(&protocol.Message{Type: protocol.TypeSync, SenderID: cl.id, TargetID: cl.hub, DocumentID: id, Data: bigChange(t, name, size)})
	select {
	case <-cl.errc:
		return cl, true
	case <-time.After(time.Second):
		cl.alive()
		return cl, false
	}
}

// TestDocMaxBytesOverrides: the quota of one document replaces
// MaxDocBytes, tighter or looser, and a change of it applies after a
// Reauthorize; an edit past the bound is refused with an error naming the
// bound and close 4413, counted, and nothing of it is stored.
func TestDocMaxBytesOverrides(t *testing.T) {
	q := &quotas{bytes: map[protocol.DocumentID]int{}}
	m := hub.NewMetrics(nil)
	store := memstore.New()
	h := newHub(t, store, func(o *hub.Options) { o.MaxDocBytes, o.DocMaxBytes, o.Metrics = 64<<10, q.get, m })
	small, big, free, dflt := protocol.NewDocumentID(), protocol.NewDocumentID(), protocol.NewDocumentID(), protocol.NewDocumentID()
	q.set(small, 8<<10)
	q.set(big, 1<<20)
	q.set(free, hub.Unlimited)

	cl, closed := pushBig(t, h, "to-small", small, 16<<10)
	if !closed {
		t.Fatal("a change past the document's quota was taken")
	}
	if code, _ := cl.c.closeCode(); code != protocol.CloseLimitExceeded {
		t.Fatalf("closed with %v, want %v", code, protocol.CloseLimitExceeded)
	}
	var e *protocol.Message
	for e == nil || e.Type != protocol.TypeError {
		if e = cl.recv(time.Second); e == nil {
			t.Fatal("no error message before the close")
		}
	}
	if !strings.Contains(e.ErrorMessage, "MaxBytes is 8192") {
		t.Fatalf("the error does not name the bound: %q", e.ErrorMessage)
	}
	if _, err := store.LoadDoc(t.Context(), small); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("the refused change was stored: %v", err)
	}
	if got := testutil.ToFloat64(m.LimitHits.WithLabelValues(hub.LimitDocBytes)); got != 1 {
		t.Fatalf("plait_limit_hits_total{limit=doc_bytes} = %v, want 1", got)
	}
	for _, tc := range []struct {
		id   protocol.DocumentID
		size int
		want bool // closed
	}{{big, 128 << 10, false}, {free, 128 << 10, false}, {dflt, 128 << 10, true}} {
		if _, closed := pushBig(t, h, "to-"+string(tc.id)[:6], tc.id, tc.size); closed != tc.want {
			t.Fatalf("a %d-byte change to %s: closed %v, want %v", tc.size, tc.id, closed, tc.want)
		}
	}
	// The quota of big shrinks: the document learns it on Reauthorize if
	// it is open, on its next load otherwise.
	q.set(big, 130<<10)
	if err := h.Reauthorize(t.Context(), big); err != nil {
		t.Fatal(err)
	}
	if _, closed := pushBig(t, h, "to-big-again", big, 16<<10); !closed {
		t.Fatal("a change past the lowered quota was taken")
	}
}

// TestOnStored: the hook hears of a document's creation and of each
// batch its peers' changes were stored in, not of another node's
// changes.
func TestOnStored(t *testing.T) {
	var mu sync.Mutex
	calls := map[int][]bool{} // hub index -> created flags
	store, bus := memstore.New(), membroker.NewBus(0)
	var hubs []*hub.Hub
	for i := range 2 {
		hubs = append(hubs, newHub(t, store, func(o *hub.Options) {
			o.Broker, o.PeerID, o.IdleDocTimeout = membroker.New(bus), fmt.Sprintf("node-%d", i), 5*time.Second
			o.OnStored = func(_ protocol.DocumentID, created bool) {
				mu.Lock()
				calls[i] = append(calls[i], created)
				mu.Unlock()
			}
		}))
	}
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 1, id)
	for r := range 3 {
		edit(t, peers[0].doc, "k", int64(r))
		converge(t, id, peers)
	}
	mu.Lock()
	got0, got1 := append([]bool(nil), calls[0]...), append([]bool(nil), calls[1]...)
	mu.Unlock()
	// Whichever node's peer synced first created the record (an empty
	// first sync creates it too; two nodes that both find no record at
	// the same moment both create it). Only node 0's peer made changes,
	// one batch per round at least.
	count := func(cs []bool, v bool) int {
		n := 0
		for _, c := range cs {
			if c == v {
				n++
			}
		}
		return n
	}
	if c := count(got0, true) + count(got1, true); c < 1 || count(got0, true) > 1 || count(got1, true) > 1 || count(got1, false) != 0 || count(got0, false) < 3 {
		t.Fatalf("hook calls %v on node 0 and %v on node 1: want a creation (one per node at most), and 3 change batches on node 0 only", got0, got1)
	}
}
