package syncengine

import (
	"fmt"
	"slices"

	"github.com/plaithub/plait/pkg/amsync"
)

// GenerateMessage returns the next sync message for the peer of s, or nil
// when none is due (the peer is up to date, or a message is in flight and
// nothing changed). It follows the core's generate_sync_message.
func (d *Doc) GenerateMessage(s *State) []byte {
	ourHeads := d.heads
	var theirHeads []Hash
	if s.hasHeads {
		theirHeads = s.theirHeads
	}
	ourNeed := d.MissingDeps(theirHeads)

	// Our have (a Bloom filter of the changes since the shared heads) is
	// built below, only if a message goes out: the core builds it first.
	withHave := allIn(ourNeed, theirHeads)

	// If the peer's last sync point names changes we do not have, it has
	// data we lost (or never had): ask for everything.
	if s.hasHave && len(s.theirHave) > 0 {
		for _, h := range s.theirHave[0].lastSync {
			if !d.Has(h) {
				m := amsync.Message{Type: amsync.MessageTypeSync, Heads: ourHeads, Have: []amsync.Have{{}}}
				return m.Encode()
			}
		}
	}

	var toSend []int32
	if s.hasHave && s.hasNeed {
		toSend = d.changesToSend(s.theirHave, s.theirNeed)
	}
	headsUnchanged := slices.Equal(s.lastSentHeads, ourHeads)
	headsEqual := s.hasHeads && slices.Equal(s.theirHeads, ourHeads)

	// Leave out what this session already sent.
	n := 0
	for _, i := range toSend {
		if _, sent := s.sentHashes[d.nodes[i].hash]; !sent {
			toSend[n] = i
			n++
		}
	}
	toSend = toSend[:n]

	if headsUnchanged {
		if headsEqual && len(toSend) == 0 {
			return nil
		}
		// The core stays silent while a message is in flight. The engine
		// still answers a need: a peer whose change waits for a dependency
		// it asked for may never acknowledge our last message (its heads
		// lack the waiting change), and with both sides waiting the core
		// stalls for good.
		if s.inFlight && (d.coreStrict || !d.answersNeed(toSend, s.theirNeed)) {
			return nil
		}
	}
	s.lastSentHeads = ourHeads
	m := amsync.Message{Type: amsync.MessageTypeSync, Heads: ourHeads, Need: ourNeed}
	if withHave {
		m.Have = []amsync.Have{d.makeHave(s.sharedHeads)}
	}
	if len(toSend) > 0 {
		m.Changes = make([][]byte, len(toSend))
		for k, i := range toSend {
			s.sentHashes[d.nodes[i].hash] = struct{}{}
			m.Changes[k] = d.nodes[i].raw
		}
	}
	s.inFlight = true
	return m.Encode()
}

// answersNeed reports whether changes to send include one the peer asked for.
func (d *Doc) answersNeed(toSend []int32, need []Hash) bool {
	for _, i := range toSend {
		if slices.Contains(need, d.nodes[i].hash) {
			return true
		}
	}
	return false
}

func allIn(hs, set []Hash) bool {
	if len(hs) == 0 {
		return true
	}
	in := make(map[Hash]bool, len(set))
	for _, h := range set {
		in[h] = true
	}
	for _, h := range hs {
		if !in[h] {
			return false
		}
	}
	return true
}

// makeHave summarizes the changes since lastSync in a Bloom filter.
func (d *Doc) makeHave(lastSync []Hash) amsync.Have {
	since := d.changesSince(lastSync)
	hashes := make([]Hash, len(since))
	for k, i := range since {
		hashes[k] = d.nodes[i].hash
	}
	return amsync.Have{LastSync: lastSync, Bloom: amsync.NewBloom(hashes).Encode()}
}

// changesToSend is the core's get_changes_to_send: what the peer lacks
// according to its have and need, as indexes, needed ones first.
func (d *Doc) changesToSend(haves []have, need []Hash) []int32 {
	var out []int32
	if len(haves) == 0 {
		for _, h := range need {
			if i, ok := d.index[h]; ok {
				out = append(out, i)
			}
		}
		return out
	}
	var lastSync []Hash
	for _, h := range haves {
		lastSync = append(lastSync, h.lastSync...)
	}
	since := d.changesSince(lastSync)
	// A change goes if no filter has it, or if it depends on one that goes.
	send := make(map[int32]bool)
	for _, i := range since {
		n := &d.nodes[i]
		in := false
		for _, h := range haves {
			if h.bloom.Contains(&n.hash) {
				in = true
				break
			}
		}
		if !in {
			send[i] = true
			continue
		}
		for _, dep := range n.deps {
			if send[dep] {
				send[i] = true
				break
			}
		}
	}
	for _, h := range need {
		if i, ok := d.index[h]; ok && !send[i] && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	for _, i := range since {
		if send[i] {
			out = append(out, i)
		}
	}
	return out
}

// ReceiveMessage applies a sync message from the peer of s: its changes
// (checked, then applied or queued; see AddChanges) and what it says of
// the peer. It follows the core's receive_sync_message and returns the
// changes it applied, in order. On error nothing is applied and s is
// unchanged; the peer should be disconnected.
func (d *Doc) ReceiveMessage(s *State, msg []byte, origin any) ([]*amsync.Change, error) {
	m, err := amsync.ParseMessage(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	if m.Type != amsync.MessageTypeSync {
		return nil, fmt.Errorf("%w: message type 0x%02x is not supported (this peer speaks 0x%02x)", ErrInvalidMessage, m.Type, amsync.MessageTypeSync)
	}
	haves := make([]have, len(m.Have))
	for k, h := range m.Have {
		b, err := amsync.ParseBloom(h.Bloom)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
		}
		b.Bits = slices.Clone(b.Bits) // do not keep the message alive
		haves[k] = have{lastSync: h.LastSync, bloom: b}
	}
	beforeHeads := d.heads
	var applied []*amsync.Change
	if len(m.Changes) > 0 {
		if applied, err = d.apply(m.Changes, origin); err != nil {
			return nil, err
		}
		s.sharedHeads = advanceHeads(beforeHeads, d.heads, s.sharedHeads)
	}
	// Forget sent hashes the peer now has.
	d.removeAncestors(m.Heads, s.sentHashes)
	if len(m.Changes) == 0 && slices.Equal(m.Heads, beforeHeads) {
		s.lastSentHeads = m.Heads
	}
	if len(s.sentHashes) == 0 {
		s.inFlight = false
	}
	known := 0
	for _, h := range m.Heads {
		if d.Has(h) {
			known++
		}
	}
	if known == len(m.Heads) {
		s.sharedHeads = m.Heads
		s.inFlight = false
		if len(m.Heads) == 0 { // the peer lost everything: start over
			s.lastSentHeads = nil
			clear(s.sentHashes)
		}
	} else {
		shared := slices.Clone(s.sharedHeads)
		for _, h := range m.Heads {
			if d.Has(h) {
				shared = append(shared, h)
			}
		}
		s.sharedHeads = sortedUnique(shared)
	}
	s.theirHave, s.hasHave = haves, true
	s.theirHeads, s.hasHeads = m.Heads, true
	s.theirNeed, s.hasNeed = m.Need, true
	return applied, nil
}

// advanceHeads is the core's advance_heads: our new heads that are not
// old ones, plus the old shared heads that are still heads.
func advanceHeads(oldHeads, newHeads, oldShared []Hash) []Hash {
	var out []Hash
	for _, h := range newHeads {
		if !slices.Contains(oldHeads, h) {
			out = append(out, h)
		}
	}
	for _, h := range oldShared {
		if slices.Contains(newHeads, h) {
			out = append(out, h)
		}
	}
	return sortedUnique(out)
}
