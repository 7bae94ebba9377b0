package membroker_test

import (
	"context"
	"errors"
	"testing"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/brokertest"
	"github.com/plaithub/plait/hub/membroker"
)

func TestConformance(t *testing.T) {
	brokertest.RunBrokerTests(t, func(t *testing.T, hist int) func() hub.Broker {
		bus := membroker.NewBus(hist)
		return func() hub.Broker { return membroker.New(bus) }
	})
}

// TestStreamDroppedWithLastSubscriber: the bus holds the logs of open
// documents only.
func TestStreamDroppedWithLastSubscriber(t *testing.T) {
	bus := membroker.NewBus(0)
	a, b := membroker.New(bus), membroker.New(bus)
	for _, br := range []*membroker.Broker{a, b} {
		if err := br.Start(brokertest.NewRecorder()); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	id := brokertest.NewDocID()
	p0, _ := a.Subscribe(ctx, id)
	_, _ = b.Subscribe(ctx, id)
	if _, err := a.Publish(ctx, id, hub.Publication{Kind: hub.PubChanges, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	_ = a.Unsubscribe(ctx, id)
	if h, err := b.History(ctx, id, p0); err != nil || len(h) != 1 {
		t.Fatalf("log dropped while b still subscribes: %d, %v", len(h), err)
	}
	_ = b.Unsubscribe(ctx, id)
	if _, err := b.History(ctx, id, p0); !errors.Is(err, hub.ErrHistoryLost) {
		t.Fatalf("History after the last unsubscribe: %v, want ErrHistoryLost", err)
	}
	p1, _ := a.Subscribe(ctx, id)
	if p1.Epoch == p0.Epoch || p1.Offset != 0 {
		t.Fatalf("a stream made again: %+v, want offset 0 in a new epoch (old %+v)", p1, p0)
	}
}
