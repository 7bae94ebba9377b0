package syncengine

import (
	"fmt"
	"slices"

	"github.com/plaithub/plait/pkg/amsync"
)

// stateType is the first byte of an encoded sync state (as the core writes it).
const stateType = 0x43

// have is one decoded entry of a peer's "have".
type have struct {
	lastSync []Hash
	bloom    *amsync.Bloom
}

// State is the sync state of one peer of one document: the core's
// sync::State. The zero value is not usable; call NewState or DecodeState.
type State struct {
	sharedHeads   []Hash
	lastSentHeads []Hash
	theirHeads    []Hash
	theirNeed     []Hash
	theirHave     []have
	hasHeads      bool // theirHeads is set (the core's Some)
	hasNeed       bool
	hasHave       bool
	sentHashes    map[Hash]struct{}
	inFlight      bool
	// more: our last message left changes that were due out
	// (Options.MaxSendBytes); heard: a message of the peer arrived since
	// our last one. Together they let the next part go while in flight.
	more, heard bool
	// carried: our last message carried changes (see Unanswered).
	carried bool
}

// Unanswered reports whether our last message carried changes and no
// message of the peer has arrived since. A peer answers changes (its
// heads moved, or it needs what they depend on), so a sender that waits
// for that answer before sending more sends one message per round trip,
// carrying everything that arrived meanwhile: when a peer falls behind,
// it gets fewer, larger messages instead of a growing queue of small ones.
func (s *State) Unanswered() bool { return s.carried && !s.heard }

// NewState returns the state for a peer we know nothing of.
func NewState() *State { return &State{sentHashes: make(map[Hash]struct{})} }

// Encode returns what outlives a connection (the shared heads), in the
// core's format: automerge-go's SyncState.Save writes the same bytes.
func (s *State) Encode() []byte {
	b := []byte{stateType}
	return amsync.AppendHashes(b, s.sharedHeads)
}

// DecodeState reads a state written by Encode (or by automerge-go).
func DecodeState(b []byte) (*State, error) {
	if len(b) == 0 || b[0] != stateType {
		return nil, fmt.Errorf("not an encoded sync state")
	}
	hs, _, err := amsync.ReadHashes(b[1:]) // the core ignores what follows
	if err != nil {
		return nil, fmt.Errorf("failed to decode sync state: %w", err)
	}
	s := NewState()
	s.sharedHeads = sortedUnique(hs)
	s.hasHave = true // the core decodes their_have as Some(empty)
	return s, nil
}

// SharedHeads returns the heads both sides are known to have.
func (s *State) SharedHeads() []Hash { return s.sharedHeads }

// TheirHeads returns the heads of the peer's last message, if any.
func (s *State) TheirHeads() ([]Hash, bool) { return s.theirHeads, s.hasHeads }

// RetainedBytes returns the bytes of peer-supplied data s keeps from the
// peer's last message: the bits of its Bloom filters and the hashes of
// its heads, need and last sync heads, plus the shared heads it named.
// Options.MaxHashes, MaxHaves and MaxBloomBytes bound it per document;
// a caller holding many States for one connection can budget their sum.
func (s *State) RetainedBytes() int {
	n := len(s.theirHeads) + len(s.theirNeed) + len(s.sharedHeads)
	bits := 0
	for _, h := range s.theirHave {
		n += len(h.lastSync)
		if h.bloom != nil {
			bits += len(h.bloom.Bits)
		}
	}
	return n*amsync.HashLen + bits
}

// InFlight reports whether a message is awaiting the peer's answer.
func (s *State) InFlight() bool { return s.inFlight }

func sortedUnique(hs []Hash) []Hash {
	hs = slices.Clone(hs)
	slices.SortFunc(hs, cmpHash)
	return slices.Compact(hs)
}
