package hub

import (
	"time"

	"github.com/plaithub/plait/pkg/protocol"
)

// relayEphemeral sends an ephemeral message to every peer but from and,
// if it came from a peer of this node, to the other nodes. The message is
// encoded once; each peer's frame differs only in its targetId. Relays
// spend the document's budget (bytes times receivers per second): past
// it they are dropped and counted, as ephemeral messages may be.
func (d *document) relayEphemeral(from *session, msg *protocol.Message) {
	receivers := len(d.peers)
	if from != nil {
		receivers-- // not back to the sender
		if d.h.opts.Broker != nil {
			receivers++ // one publication for the other nodes
		}
	}
	if receivers <= 0 {
		d.h.m.Dropped.WithLabelValues("ephemeral_no_peers").Inc()
		return
	}
	if cost := len(msg.Data) * receivers; cost > 0 && !d.ephBudget.AllowN(time.Now(), cost) {
		d.h.m.LimitHits.WithLabelValues(LimitEphemeralRelay).Inc()
		d.h.m.Dropped.WithLabelValues("ephemeral_budget").Inc()
		return
	}
	relay := *msg
	relay.TargetID = "-" // replaced per peer
	frames, err := protocol.EncodeTargeted(&relay)
	if err != nil {
		d.h.m.Dropped.WithLabelValues("ephemeral_invalid").Inc()
		return
	}
	for s := range d.peers {
		if s != from {
			s.sendFrame(msg.Type, frames.For(s.peerID))
		}
	}
	if from != nil {
		d.publishEphemeral(msg)
	}
}

// publishEphemeral sends a peer's ephemeral message to the other nodes: at
// most once, like pub/sub itself.
func (d *document) publishEphemeral(msg *protocol.Message) {
	b := d.h.opts.Broker
	if b == nil {
		return
	}
	data, err := protocol.Encode(msg) // each receiving node sets targetId per peer
	if err != nil {
		return
	}
	ctx, cancel := d.brokerCtx()
	defer cancel()
	if _, err := b.Publish(ctx, d.id, Publication{Kind: PubEphemeral, Origin: d.h.opts.PeerID, Data: data}); err != nil {
		d.h.m.BrokerErrors.WithLabelValues("publish_ephemeral").Inc()
	}
}
