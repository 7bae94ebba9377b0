package syncengine

import (
	"slices"

	"github.com/plaithub/plait/pkg/amsync"
)

// memo keeps, for the document's current changes, what a walk back to a
// set of heads found and the Bloom filter built from it. Both depend only
// on the document and those heads, and peers in the same state ask for
// the same ones: on a hot document every typist's acknowledgement leaves
// the other peers at the same shared heads, and each message to them
// carries the same have. With the memo one round of messages walks the
// history and builds the filter once per distinct state, not once per
// peer.
//
// Entries are valid while no change is added (changes are only appended
// to Doc.nodes, so its length is the version), and there are at most
// memoEntries of each kind, the most recent first.
type memo struct {
	version int
	since   []memoEntry[[]int32]
	bloom   []memoEntry[[]byte]
}

type memoEntry[T any] struct {
	heads []Hash
	val   T
}

// memoEntries bounds each list: a round of messages rarely meets more
// distinct states than this, and each entry can be as large as the
// history (a peer that has nothing).
const memoEntries = 8

// valid drops every entry if changes were added since they were made.
func (m *memo) valid(version int) {
	if m.version != version {
		clear(m.since)
		clear(m.bloom)
		m.since, m.bloom, m.version = m.since[:0], m.bloom[:0], version
	}
}

func memoGet[T any](list []memoEntry[T], heads []Hash) (T, bool) {
	for _, e := range list {
		if slices.Equal(e.heads, heads) {
			return e.val, true
		}
	}
	var zero T
	return zero, false
}

func memoPut[T any](list []memoEntry[T], heads []Hash, val T) []memoEntry[T] {
	if len(list) < memoEntries {
		list = append(list, memoEntry[T]{})
	}
	copy(list[1:], list)
	list[0] = memoEntry[T]{heads: slices.Clone(heads), val: val}
	return list
}

// changesSinceShared is changesSince, shared with every other caller
// asking for the same heads until a change is added: callers must not
// modify the result.
func (d *Doc) changesSinceShared(have []Hash) []int32 {
	d.memo.valid(len(d.nodes))
	if out, ok := memoGet(d.memo.since, have); ok {
		return out
	}
	out := d.changesSince(have)
	d.memo.since = memoPut(d.memo.since, have, out)
	return out
}

// bloomSince is the encoded Bloom filter of the changes since lastSync,
// shared as changesSinceShared is.
func (d *Doc) bloomSince(lastSync []Hash) []byte {
	d.memo.valid(len(d.nodes))
	if b, ok := memoGet(d.memo.bloom, lastSync); ok {
		return b
	}
	since := d.changesSinceShared(lastSync)
	hashes := make([]Hash, len(since))
	for k, i := range since {
		hashes[k] = d.nodes[i].hash
	}
	b := amsync.NewBloom(hashes).Encode()
	d.memo.bloom = memoPut(d.memo.bloom, lastSync, b)
	return b
}
