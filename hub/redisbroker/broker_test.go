package redisbroker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/brokertest"
	"github.com/plaithub/plait/hub/redisbroker"
	"github.com/plaithub/plait/hub/redistest"
)

func newBroker(t *testing.T, c redis.UniversalClient, opts redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redisbroker.New(ctx, c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := 0
	brokertest.RunBrokerTests(t, func(t *testing.T, hist int) func() hub.Broker {
		n++
		prefix := fmt.Sprintf("t%d", n) // subtests share the server, not keys
		return func() hub.Broker {
			return newBroker(t, srv.Client(t), redisbroker.Options{Prefix: prefix, HistorySize: hist, ProbeInterval: 500 * time.Millisecond})
		}
	})
}

func TestConformanceCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	n := 0
	brokertest.RunBrokerTests(t, func(t *testing.T, hist int) func() hub.Broker {
		n++
		prefix := fmt.Sprintf("t%d", n)
		return func() hub.Broker {
			b := newBroker(t, cl.Client(t), redisbroker.Options{Prefix: prefix, HistorySize: hist, ProbeInterval: 500 * time.Millisecond})
			if !b.Sharded() {
				t.Fatal("a Redis 7 cluster without sharded pub/sub")
			}
			return b
		}
	})
}
