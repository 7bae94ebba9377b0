package hub_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/redisbroker"
	"github.com/plaithub/plait/hub/redisstore"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// redisHubs starts n hubs on one real redis-server (its store and broker).
func redisHubs(t *testing.T, srv *redistest.Server, n int) ([]*hub.Hub, []*hub.Metrics, hub.Store) {
	var hubs []*hub.Hub
	var ms []*hub.Metrics
	var store hub.Store
	for i := 0; i < n; i++ {
		c := srv.Client(t)
		st, err := redisstore.New(context.Background(), c, redisstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := redisbroker.New(context.Background(), c, redisbroker.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		m := hub.NewMetrics(nil)
		hubs = append(hubs, newHub(t, st, func(o *hub.Options) {
			o.Broker, o.Metrics, o.PeerID = b, m, fmt.Sprintf("node-%d", i)
			o.IdleDocTimeout = 30 * time.Second
			if os.Getenv("PLAIT_TEST_LOG") != "" {
				o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", i)
			}
		}))
		ms = append(ms, m)
		store = st
	}
	return hubs, ms, store
}

// TestRedisRollbackDetected: Redis loses its last writes but keeps the
// epoch (a failover to a replica that lacked them, an AOF everysec
// restart) and hands the lost offset out again. The node that had applied
// the lost publication sees a publication that does not follow its tag,
// catches up from the store and stores again the change Redis lost.
func TestRedisRollbackDetected(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rc := srv.Client(t)
	ctx := context.Background()
	hubs, ms, store := redisHubs(t, srv, 2)
	id := protocol.NewDocumentID()
	peers := joinAll(t, hubs, 1, id)
	editRounds(t, id, peers, 1)
	keys := []string{"pos", "log", "meta", "b", "snap"}
	dumps := map[string]string{}
	for _, k := range keys {
		key := "plait:{" + string(id) + "}:" + k
		if d, err := rc.Dump(ctx, key).Result(); err == nil {
			dumps[key] = d
		}
	}
	// A write the old master acknowledged and delivered, that the promoted
	// replica lacks.
	edit(t, peers[0].doc, "lost", int64(1))
	converge(t, id, peers)
	for key, d := range dumps {
		if err := rc.RestoreReplace(ctx, key, 0, d).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Node 0's peer edits again: published at the reused offset.
	edit(t, peers[0].doc, "after", int64(2))
	converge(t, id, peers)
	checkStored(t, store, id, peers[0].doc)
	if got := testutil.ToFloat64(ms[1].BrokerRecoveries.WithLabelValues("rollback", "store")); got == 0 {
		t.Fatal("no rollback recovery counted on node 1")
	}
}
