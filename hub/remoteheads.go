package hub

import (
	"slices"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// knownHeads are the heads of one storage for this document, as last heard:
// as hashes (from a peer's sync message, where they arrive on every
// message) or as automerge-repo writes them (bs58check, from gossip). The
// wire form is made only when a subscriber is sent them: encoding every
// head of every incoming sync message cost more than the rest of its
// handling on a document with many concurrent heads.
type knownHeads struct {
	raw       []syncengine.Hash
	wire      []string
	timestamp uint64
}

// encoded returns kh with its wire form made.
func (kh knownHeads) encoded() knownHeads {
	if kh.wire == nil && kh.raw != nil {
		kh.wire = wireHeads(kh.raw)
	}
	return kh
}

// sameHeads reports whether a and b name the same heads.
func sameHeads(a, b knownHeads) bool {
	if a.wire == nil && b.wire == nil {
		return slices.Equal(a.raw, b.raw)
	}
	return slices.Equal(a.encoded().wire, b.encoded().wire)
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
	if ok && (old.timestamp > kh.timestamp || sameHeads(old, kh)) {
		return
	}
	d.remote[sid] = kh
	encoded := false
	for s := range d.peers {
		if s != from && s.watches(sid) {
			if !encoded {
				kh, encoded = kh.encoded(), true
				d.remote[sid] = kh
			}
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
		NewHeads:   map[string]protocol.HeadsAt{sid: {Heads: kh.encoded().wire, Timestamp: kh.timestamp}},
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
