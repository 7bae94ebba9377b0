package redisbroker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/brokertest"
	"github.com/plaithub/plait/hub/redisbroker"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// faultSetup is one server, a subscribed broker (the node under test) and
// a publishing broker (another node).
func faultSetup(t *testing.T, persist bool) (*redistest.Server, *redisbroker.Broker, *brokertest.Recorder, *redisbroker.Broker, hub.StreamPosition, string) {
	srv := redistest.Start(t, redistest.Options{Persist: persist})
	sub := newBroker(t, srv.Client(t), redisbroker.Options{ProbeInterval: 300 * time.Millisecond})
	rec := brokertest.NewRecorder()
	if err := sub.Start(rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	pub := newBroker(t, srv.Client(t), redisbroker.Options{})
	if err := pub.Start(brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	id := string(brokertest.NewDocID())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pos, err := sub.Subscribe(ctx, protocol.DocumentID(id))
	if err != nil {
		t.Fatal(err)
	}
	return srv, sub, rec, pub, pos, id
}

func publish(t *testing.T, b *redisbroker.Broker, id string, data string) (hub.StreamPosition, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return b.Publish(ctx, protocol.DocumentID(id), hub.Publication{Kind: hub.PubChanges, Origin: "other", Data: []byte(data)})
}

// publishUntil retries a publication until Redis takes it (it may be down
// or paused for a moment).
func publishUntil(t *testing.T, b *redisbroker.Broker, id, data string) hub.StreamPosition {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		pos, err := publish(t, b, id, data)
		if err == nil {
			return pos
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish %s: %v", data, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitResubscribed waits for HandleResubscribed and checks that later
// publications are delivered again.
func waitResubscribed(t *testing.T, sub *redisbroker.Broker, rec *brokertest.Recorder, pub *redisbroker.Broker, id string) {
	t.Helper()
	did := protocol.DocumentID(id)
	if !rec.WaitFor(15*time.Second, func() bool { return rec.Resubscribed(did) > 0 }) {
		t.Fatal("no HandleResubscribed after the fault")
	}
	n := len(rec.Pubs(did))
	p := publishUntil(t, pub, id, "after")
	if !rec.WaitFor(10*time.Second, func() bool { return len(rec.Pubs(did)) > n }) {
		t.Fatal("no delivery after the subscription was re-made")
	}
	if got := rec.Pubs(did); got[len(got)-1].Pos != p {
		t.Fatalf("last delivery %+v, want %+v", got[len(got)-1].Pos, p)
	}
}

func TestClientKillPubsub(t *testing.T) {
	srv, sub, rec, pub, _, id := faultSetup(t, false)
	publishUntil(t, pub, id, "before")
	c := srv.Client(t)
	n, err := c.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
	if err != nil || n == 0 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v", n, err)
	}
	waitResubscribed(t, sub, rec, pub, id)
	if got := testutil.ToFloat64(sub.Metrics().Reconnects); got < 1 {
		t.Fatalf("plait_broker_reconnects_total = %v", got)
	}
}

func TestDebugSleepIsProbed(t *testing.T) {
	srv, sub, rec, pub, _, id := faultSetup(t, false)
	c := srv.Client(t)
	go func() { _ = c.Do(context.Background(), "DEBUG", "SLEEP", "2").Err() }()
	waitResubscribed(t, sub, rec, pub, id) // waits for the pause to be noticed, however soon it starts
	if got := testutil.ToFloat64(sub.Metrics().ProbeFailures); got < 1 {
		t.Fatalf("plait_broker_probe_failures_total = %v after a 2 s pause (probe 300 ms)", got)
	}
}

func TestRestartKeepsHistory(t *testing.T) {
	srv, sub, rec, pub, pos, id := faultSetup(t, true)
	for i := 0; i < 3; i++ {
		publishUntil(t, pub, id, fmt.Sprint(i))
	}
	srv.Restart(false)
	waitResubscribed(t, sub, rec, pub, id)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := sub.History(ctx, protocol.DocumentID(id), pos)
	if err != nil || len(h) != 4 {
		t.Fatalf("History after a restart with persistence: %d, %v", len(h), err)
	}
}

func TestRestartEmptyIsNewEpoch(t *testing.T) {
	srv, sub, rec, pub, pos, id := faultSetup(t, false)
	p1 := publishUntil(t, pub, id, "0")
	srv.Restart(true)
	waitResubscribed(t, sub, rec, pub, id)
	got := rec.Pubs(protocol.DocumentID(id))
	last := got[len(got)-1].Pos
	if last.Epoch == p1.Epoch || last.Offset != 1 {
		t.Fatalf("after an empty restart: %+v, want offset 1 in a new epoch (old %+v)", last, p1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sub.History(ctx, protocol.DocumentID(id), pos); !errors.Is(err, hub.ErrHistoryLost) {
		t.Fatalf("History in the lost epoch: %v, want ErrHistoryLost", err)
	}
}
