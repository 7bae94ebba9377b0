package syncengine

import (
	"errors"
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
	// What this message would carry: all of it, or a prefix of it when it
	// exceeds Options.MaxSendBytes.
	send, more := d.cutToSend(toSend, theirHeads)

	if headsUnchanged {
		if headsEqual && len(toSend) == 0 {
			return nil
		}
		// The core stays silent while a message is in flight. The engine
		// still answers a need: a peer whose change waits for a dependency
		// it asked for may never acknowledge our last message (its heads
		// lack the waiting change), and with both sides waiting the core
		// stalls for good.
		// Likewise the rest of a message cut to MaxSendBytes goes as
		// soon as the peer answers the part before (a peer that could not
		// apply that part, for want of a dependency we left out because
		// it seemed to have it, may never acknowledge it).
		if s.inFlight && (d.coreStrict || !d.answersNeed(send, s.theirNeed) && !(s.more && s.heard)) {
			return nil
		}
	}
	s.lastSentHeads = ourHeads
	m := amsync.Message{Type: amsync.MessageTypeSync, Heads: ourHeads, Need: ourNeed}
	if withHave {
		m.Have = []amsync.Have{d.makeHave(s.sharedHeads)}
	}
	s.more, s.heard, s.carried = more, false, len(send) > 0
	if len(send) > 0 {
		m.Changes = make([][]byte, len(send))
		for k, i := range send {
			s.sentHashes[d.nodes[i].hash] = struct{}{}
			m.Changes[k] = d.nodes[i].raw
		}
	}
	s.inFlight = true
	return m.Encode()
}

// cutToSend bounds what one message carries to Options.MaxSendBytes of
// change chunks (but at least one change). When more is due, it leaves
// out the changes the peer has for sure (ancestors of its heads that we
// know: the core sends them anyway when the peer's Bloom filter misses
// them, harmless in one message but, in a cut one, a change the peer has
// makes no progress, and a peer that applies nothing may not answer), and
// keeps the longest prefix within the bound. The order of changesToSend
// keeps dependencies first, so the peer can apply the prefix; the rest is
// still due and goes once the peer answers. more reports whether changes
// the peer may lack were left out.
func (d *Doc) cutToSend(toSend []int32, theirHeads []Hash) (send []int32, more bool) {
	total := 0
	for _, i := range toSend {
		total += len(d.nodes[i].raw)
	}
	if total <= d.opts.MaxSendBytes {
		return toSend, false // as the core sends it
	}
	if has := d.ancestorsOf(theirHeads, toSend); len(has) > 0 {
		toSend = slices.DeleteFunc(toSend, func(i int32) bool { return has[i] })
	}
	total = 0
	for k, i := range toSend {
		total += len(d.nodes[i].raw)
		if total > d.opts.MaxSendBytes && k > 0 {
			return toSend[:k], true
		}
	}
	return toSend, false
}

// answersNeed reports whether changes to send include one the peer asked for.
func (d *Doc) answersNeed(toSend []int32, need []Hash) bool {
	if len(need) == 0 {
		return false
	}
	asked := make(map[Hash]struct{}, len(need))
	for _, h := range need {
		asked[h] = struct{}{}
	}
	for _, i := range toSend {
		if _, ok := asked[d.nodes[i].hash]; ok {
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
	return amsync.Have{LastSync: lastSync, Bloom: d.bloomSince(lastSync)}
}

// changesToSend is the core's get_changes_to_send: what the peer lacks
// according to its have and need, as indexes, needed ones first.
func (d *Doc) changesToSend(haves []have, need []Hash) []int32 {
	var out []int32
	// A peer's need may name a change many times: it is sent once (a
	// need of one large change repeated must not become a message of
	// copies), and the list is walked once.
	needed := make(map[int32]bool, len(need))
	if len(haves) == 0 {
		for _, h := range need {
			if i, ok := d.index[h]; ok && !needed[i] {
				needed[i] = true
				out = append(out, i)
			}
		}
		return out
	}
	var lastSync []Hash
	for _, h := range haves {
		lastSync = append(lastSync, h.lastSync...)
	}
	since := d.changesSinceShared(lastSync)
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
		if i, ok := d.index[h]; ok && !send[i] && !needed[i] {
			needed[i] = true
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
// changes it applied, in order, each with Stored set to the chunk to
// persist. On error nothing is applied and s is unchanged; the peer
// should be disconnected. A message that exceeds one of the bounds of
// Options (MaxHashes, MaxHaves, MaxBloomBytes, MaxInflatedBytes,
// MaxBytes) is refused with an error wrapping ErrLimitExceeded.
func (d *Doc) ReceiveMessage(s *State, msg []byte, origin any) ([]*amsync.Change, error) {
	m, err := amsync.ParseMessageLimits(msg, amsync.MessageLimits{
		MaxHashes:     d.opts.MaxHashes,
		MaxHaves:      d.opts.MaxHaves,
		MaxBloomBytes: d.opts.MaxBloomBytes,
	})
	if err != nil {
		if errors.Is(err, amsync.ErrTooLarge) {
			return nil, fmt.Errorf("%w: %w", ErrLimitExceeded, err)
		}
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
		pb := &peerBounds{inflateLeft: d.opts.MaxInflatedBytes, maxBytes: d.opts.MaxBytes}
		if applied, err = d.apply(m.Changes, origin, pb, false); err != nil {
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
	s.heard = true
	return applied, nil
}

// advanceHeads is the core's advance_heads: our new heads that are not
// old ones, plus the old shared heads that are still heads. Heads are
// sorted, so membership is a binary search: a document with many
// concurrent heads (one per typist who does not merge the others'
// changes) pays O(n log n) per message, not O(n²).
func advanceHeads(oldHeads, newHeads, oldShared []Hash) []Hash {
	out := make([]Hash, 0, len(newHeads))
	for _, h := range newHeads {
		if !sortedHas(oldHeads, h) {
			out = append(out, h)
		}
	}
	for _, h := range oldShared {
		if sortedHas(newHeads, h) {
			out = append(out, h)
		}
	}
	return sortedUnique(out)
}

// sortedHas reports whether the sorted list hs holds h.
func sortedHas(hs []Hash, h Hash) bool {
	_, found := slices.BinarySearchFunc(hs, h, cmpHash)
	return found
}
