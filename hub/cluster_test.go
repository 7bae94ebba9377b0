package hub_test

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/membroker"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// lossyBroker drops some change deliveries to its node, as pub/sub may.
type lossyBroker struct {
	hub.Broker
	drop func(p hub.Publication) bool
}

type lossyHandler struct {
	h    hub.BrokerHandler
	drop func(p hub.Publication) bool
}

func (b *lossyBroker) Start(h hub.BrokerHandler) error {
	return b.Broker.Start(&lossyHandler{h: h, drop: b.drop})
}

func (l *lossyHandler) HandlePublication(id protocol.DocumentID, p hub.Publication) {
	if p.Kind == hub.PubChanges && l.drop(p) {
		return
	}
	l.h.HandlePublication(id, p)
}

func (l *lossyHandler) HandleResubscribed(id protocol.DocumentID) { l.h.HandleResubscribed(id) }

// peerOn is an automerge-go client of one node.
type peerOn struct {
	cl  *client
	doc *automerge.Doc
	ss  *automerge.SyncState
}

// converge exchanges messages with every peer until all have heads equal
// to want's, or fails after a deadline.
func converge(t *testing.T, id protocol.DocumentID, peers []*peerOn) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, p := range peers {
			p.cl.sync(id, p.ss, protocol.TypeSync)
		}
		for _, p := range peers {
			for {
				m := p.cl.recv(20 * time.Millisecond)
				if m == nil {
					break
				}
				if m.Type == protocol.TypeSync {
					if _, err := p.ss.ReceiveMessage(m.Data); err != nil {
						t.Fatal(err)
					}
					p.cl.sync(id, p.ss, protocol.TypeSync)
				}
			}
		}
		same := true
		for _, p := range peers[1:] {
			if !slices.Equal(sortedHeads(p.doc), sortedHeads(peers[0].doc)) {
				same = false
			}
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			for i, p := range peers {
				t.Logf("peer %d heads %v", i, sortedHeads(p.doc))
			}
			t.Fatal("peers on different nodes did not converge")
		}
	}
}

func sortedHeads(d *automerge.Doc) []string {
	var out []string
	for _, h := range d.Heads() {
		out = append(out, h.String())
	}
	slices.Sort(out)
	return out
}

// cluster starts n hubs sharing one store and one broker bus; wrap may
// replace a node's broker.
func cluster(t *testing.T, n int, hist int, wrap func(i int, b hub.Broker) hub.Broker) ([]*hub.Hub, []*hub.Metrics, hub.Store) {
	store := memstore.New()
	bus := membroker.NewBus(hist)
	var hubs []*hub.Hub
	var ms []*hub.Metrics
	for i := 0; i < n; i++ {
		var b hub.Broker = membroker.New(bus)
		if wrap != nil {
			b = wrap(i, b)
		}
		m := hub.NewMetrics(nil)
		hubs = append(hubs, newHub(t, store, func(o *hub.Options) {
			o.Broker, o.Metrics, o.PeerID = b, m, fmt.Sprintf("node-%d", i)
			o.IdleDocTimeout = 5 * time.Second
		}))
		ms = append(ms, m)
	}
	return hubs, ms, store
}

// lossyCluster is two hubs whose second loses the change deliveries drop
// says; its log keeps hist publications (0: the default).
func lossyCluster(t *testing.T, hist int, drop func(hub.Publication) bool) ([]*hub.Hub, []*hub.Metrics, hub.Store) {
	return cluster(t, 2, hist, func(i int, b hub.Broker) hub.Broker {
		if i != 1 {
			return b
		}
		return &lossyBroker{Broker: b, drop: drop}
	})
}

// editRounds has every peer edit concurrently, rounds times, converging
// after each round.
func editRounds(t *testing.T, id protocol.DocumentID, peers []*peerOn, rounds int) {
	for r := 0; r < rounds; r++ {
		for i, p := range peers {
			edit(t, p.doc, fmt.Sprintf("p%d", i), int64(r))
		}
		converge(t, id, peers)
	}
}

func joinAll(t *testing.T, hubs []*hub.Hub, perHub int, id protocol.DocumentID) []*peerOn {
	first := automerge.New()
	edit(t, first, "created", true)
	var peers []*peerOn
	for i, h := range hubs {
		for j := 0; j < perHub; j++ {
			d := first
			if len(peers) > 0 {
				d = automerge.New()
			}
			p := &peerOn{cl: connect(t, h, fmt.Sprintf("c%d-%d", i, j), ""), doc: d}
			p.ss = automerge.NewSyncState(d)
			peers = append(peers, p)
		}
	}
	converge(t, id, peers)
	return peers
}

func checkStored(t *testing.T, store hub.Store, id protocol.DocumentID, want *automerge.Doc) {
	t.Helper()
	sd, err := store.LoadDoc(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	doc := automerge.New()
	if len(sd.Snapshot) > 0 {
		if doc, err = automerge.Load(sd.Snapshot); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range sd.Batches {
		if err := doc.LoadIncremental(b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(sortedHeads(doc), sortedHeads(want)) {
		t.Fatalf("stored heads %v, peers have %v", sortedHeads(doc), sortedHeads(want))
	}
}

func TestClusterPeersOnDifferentNodesConverge(t *testing.T) {
	hubs, _, store := cluster(t, 3, 0, nil)
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 2, id)
	editRounds(t, id, peers, 5)
	checkStored(t, store, id, peers[0].doc)
	for i, h := range hubs {
		if h.OpenDocuments() != 1 {
			t.Fatalf("node %d has %d documents open", i, h.OpenDocuments())
		}
	}
}

func TestClusterLostDeliveriesRecoveredFromLog(t *testing.T) {
	var n atomic.Int64
	// Node 1 loses every other delivery.
	hubs, ms, store := lossyCluster(t, 0, func(hub.Publication) bool { return n.Add(1)%2 == 0 })
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 1, id)
	editRounds(t, id, peers, 8)
	checkStored(t, store, id, peers[0].doc)
	if got := testutil.ToFloat64(ms[1].BrokerRecoveries.WithLabelValues("gap", "log")); got == 0 {
		t.Fatal("no gap recovery from the log counted")
	}
}

func TestClusterTrimmedLogRecoveredFromStore(t *testing.T) {
	var dropping atomic.Bool
	hubs, ms, store := lossyCluster(t, 2, func(hub.Publication) bool { return dropping.Load() })
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 1, id)
	// Node 1 hears nothing while node 0's peer makes more edits than the
	// log keeps; node 1's peer edits too, so node 1 publishes (and hears its
	// own publication's gap).
	dropping.Store(true)
	for r := 0; r < 5; r++ {
		edit(t, peers[0].doc, "burst", int64(r))
		converge(t, id, peers[:1])
	}
	dropping.Store(false)
	editRounds(t, id, peers, 2)
	checkStored(t, store, id, peers[0].doc)
	if got := testutil.ToFloat64(ms[1].BrokerRecoveries.WithLabelValues("gap", "store")); got == 0 {
		t.Fatal("no recovery from the store counted")
	}
}

func TestClusterResubscribeCatchesUp(t *testing.T) {
	var dropping atomic.Bool
	hubs, ms, _ := lossyCluster(t, 0, func(hub.Publication) bool { return dropping.Load() })
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 1, id)
	// Node 1 silently misses the last publication: nothing later reveals
	// the gap; the re-made subscription does (as would, a second later,
	// the settle check).
	dropping.Store(true)
	edit(t, peers[0].doc, "missed", true)
	converge(t, id, peers[:1])
	dropping.Store(false)
	hubs[1].HandleResubscribed(id)
	converge(t, id, peers)
	if got := testutil.ToFloat64(ms[1].BrokerRecoveries.WithLabelValues("resubscribed", "log")); got == 0 {
		t.Fatal("no catch-up counted after a re-made subscription")
	}
}

func TestClusterEphemeralAcrossNodes(t *testing.T) {
	hubs, _, _ := cluster(t, 2, 0, nil)
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 1, id)
	peers[0].cl.send(&protocol.Message{Type: protocol.TypeEphemeral, SenderID: "c0-0", TargetID: peers[0].cl.hub, DocumentID: id,
		SessionID: "s1", Count: 1, Data: []byte("cursor")})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		m := peers[1].cl.recv(100 * time.Millisecond)
		if m != nil && m.Type == protocol.TypeEphemeral {
			if string(m.Data) != "cursor" || m.SenderID != "c0-0" || m.TargetID != "c1-0" {
				t.Fatalf("relayed ephemeral %+v", m)
			}
			return
		}
	}
	t.Fatal("the ephemeral message did not reach the peer on the other node")
}
