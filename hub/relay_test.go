package hub_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// relaySeconds returns plait_relay_seconds' count and sum, as the
// registry exposes them.
func relaySeconds(t *testing.T, reg *prometheus.Registry) (uint64, float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "plait_relay_seconds" {
			hist := f.GetMetric()[0].GetHistogram()
			return hist.GetSampleCount(), hist.GetSampleSum()
		}
	}
	t.Fatal("no plait_relay_seconds in the registry")
	return 0, 0
}

// TestRelaySecondsCoversTheStoreWrite: plait_relay_seconds runs from the
// read of a peer's changes to the confirmation of the store write that
// releases them to the other peers, so a write held for 300 ms shows as
// at least 300 ms; messages without changes observe nothing.
func TestRelaySecondsCoversTheStoreWrite(t *testing.T) {
	store := &holdStore{Store: memstore.New()}
	reg := prometheus.NewRegistry()
	m := hub.NewMetrics(reg)
	p := newSyncedPair(t, newHub(t, store, func(o *hub.Options) { o.Metrics = m }))
	id, a, b, docA, docB, ssA, ssB := p.id, p.a, p.b, p.docA, p.docB, p.ssA, p.ssB
	n0, sum0 := relaySeconds(t, reg)
	if n0 == 0 {
		t.Fatal("a's first change was stored and relayed, but plait_relay_seconds has no observation")
	}

	// b's answers carried no changes: nothing more was observed.
	b.syncUntilQuiet(id, ssB)
	if n, _ := relaySeconds(t, reg); n != n0 {
		t.Fatalf("messages without changes observed %d relays", n-n0)
	}

	store.hold()
	edit(t, docA, "k", "held")
	a.sync(id, ssA, protocol.TypeSync)
	const held = 300 * time.Millisecond
	time.Sleep(held)
	store.release()
	b.syncUntilQuiet(id, ssB)
	if got, _ := docB.RootMap().Get("k"); got.Str() != "held" {
		t.Fatalf("b has k = %v", got)
	}
	n1, sum1 := relaySeconds(t, reg)
	if n1 != n0+1 {
		t.Fatalf("one write of a's change: %d observations, want 1", n1-n0)
	}
	if d := time.Duration((sum1 - sum0) * float64(time.Second)); d < held || d > 10*time.Second {
		t.Fatalf("relay of a change whose write was held %v measured %v", held, d)
	}
}
