package membroker_test

import (
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
