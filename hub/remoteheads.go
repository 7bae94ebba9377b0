package hub

import (
	"slices"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// knownHeads are the heads of one storage for this document, as last heard.
type knownHeads struct {
	heads     []string
	timestamp uint64
}

// Bounds of the remote-heads gossip one document keeps: storages, heads
// of one storage (concurrent branches: honest documents have a few), and
// the length of a storage id (automerge-repo's are UUIDs).
const (
	maxGossipStorages  = 64
	maxGossipHeads     = 64
	maxGossipStorageID = 128
)

// learnHeads records heads of storage sid (heard from peer from) and tells
// the other peers subscribed to sid.
func (d *document) learnHeads(from *session, sid string, kh knownHeads) {
	old, ok := d.remote[sid]
	if ok && (old.timestamp > kh.timestamp || slices.Equal(old.heads, kh.heads)) {
		return
	}
	d.remote[sid] = kh
	for s := range d.peers {
		if s != from && s.watches(sid) {
			d.sendHeads(s, sid, kh)
		}
	}
}

func (d *document) sendHeads(s *session, sid string, kh knownHeads) {
	s.send(&protocol.Message{
		Type:       protocol.TypeRemoteHeadsChanged,
		SenderID:   d.h.opts.PeerID,
		TargetID:   s.peerID,
		DocumentID: d.id,
		NewHeads:   map[string]protocol.HeadsAt{sid: {Heads: kh.heads, Timestamp: kh.timestamp}},
	})
}

// wireHeads encodes heads as automerge-repo sends them in
// remote-heads-changed (bs58check, in the document's order).
func wireHeads(hs []syncengine.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = protocol.EncodeHead(h)
	}
	return out
}
