// Package syncengine is the Automerge sync protocol in Go, over an index
// of a document's changes, so that the cost of a sync message does not
// grow with the document's history.
//
// A Doc holds one document as its changes: for each change its hash, raw
// chunk bytes, dependencies, actor and seq, in the order they were applied
// (a causal order), plus the heads. It never holds the document's content:
// automerge-go builds that where it is needed (loading, compaction, and on
// clients, the application's view).
//
// A State is the sync protocol's state for one peer of one document, as
// the Rust core's sync::State at rust/automerge@0.5.0 keeps it: shared
// heads, last sent heads, the peer's heads, need and have, the hashes
// already sent, in flight. Doc.GenerateMessage and Doc.ReceiveMessage
// follow the rules of that core's generate_sync_message and
// receive_sync_message, and read and write the same bytes (message type
// 0x42, LEB128 counts, sorted hashes, Bloom filters of 10 bits per entry
// and 7 probes, change chunks), so a peer cannot tell the engine from
// automerge-go or @automerge/automerge.
//
// # Where the engine differs from the core
//
// Messages are the core's, byte for byte (the differential tests compare
// them with automerge-go's), except in three places where the core 0.5
// does needless or harmful things, and when a message would exceed
// Options.MaxSendBytes (see Bounds). None of them changes what a peer can
// tell apart from an ordinary peer:
//
//   - "Changes since these heads" is exact. The core computes it from a
//     vector clock that keeps, per actor, the change with the highest op
//     counter (clock.rs, Clock::include), so a change without ops can count
//     as missing although the peer has it, and the core sends it again.
//   - A peer that asks for changes (need) gets them even while a message
//     is in flight. The core waits for an answer first; when both sides
//     hold a change waiting for a dependency the other must send (after
//     Bloom filter false positives), neither answers and sync stalls.
//   - Forget drops the queued changes of a peer that left; the core keeps
//     queued changes for good and asks every peer for their dependencies.
//
// # Cost
//
// Where the core walks the whole history (a clock over every change for
// "changes since these heads", a traversal of every ancestor to trim the
// sent hashes), the engine walks back from the heads in reverse order of
// application and stops as soon as what remains is known to be shared.
// In steady state (peers a few changes apart) a message costs
// O(changes since the peers last agreed); a peer that was away costs
// O(what it missed), once.
//
// # Validation
//
// Every change is checked before it is applied, because the changes a Doc
// accepts end up in automerge-go (at compaction, on clients), whose Rust
// core panics, and aborts the process, on some malformed changes (see
// docs/notes-rust-sync-panic.md): the chunk's checksum and hash; each
// actor's seqs consecutive, each change depending on its actor's previous
// one; its ops decodable, written as the core writes them (so that a
// snapshot holding the change loads back), and consistent with the
// document's objects (amsync.ObjIndex); bounded op counts. Then
// Options.Accept sees it, and may refuse it (a viewer's change). A message
// with one refused change applies none of its changes, so what to store
// and fan out is what ReceiveMessage returns, not what Accept saw.
//
// A change whose dependencies are missing is queued, as the core queues
// it, and applied once they arrive; the missing hashes go into the need of
// every message generated meanwhile. The queue is bounded.
//
// # Bounds
//
// Peers are not trusted to be reasonable either. ReceiveMessage refuses,
// whole (nothing applied, the State unchanged), a message that exceeds a
// bound of Options, with an error wrapping ErrLimitExceeded that names
// the bound and its value (the hub closes such a peer with code 4413):
//
//   - MaxHashes (default 4096) hashes in its heads, its need, or one
//     have's last sync heads; MaxHaves (2) entries in its have list;
//     MaxBloomBytes (2 MiB) in one Bloom filter. These are checked as the
//     message is parsed (amsync.ParseMessageLimits), before anything is
//     allocated for the list.
//   - MaxInflatedBytes (64 MiB): what its compressed change chunks
//     inflate to, in all. Each chunk is inflated with what is left of the
//     budget as its limit (amsync.ParseChangeLimit), so a message of
//     deflate bombs stops at the budget, not at the sum of what its chunks
//     would inflate to. A chunk is inflated once, into a buffer with room
//     for the uncompressed chunk's header: the change's fields alias it.
//   - MaxInflateRatio (256): how many times its own size one chunk may
//     inflate to, once past 1 MiB: the document keeps changes
//     uncompressed, so deflated zeros must not buy a thousand times their
//     size in the node's memory.
//   - MaxBytes (default none): the size of the document, Doc.Bytes (the
//     uncompressed chunks of its applied and queued changes). A message
//     whose new changes would take the document past it is refused.
//
// AddChanges takes changes the node already trusts (its store, other
// nodes, a client's own changes checked by the hub) and is bound only by
// the per-change inflate cap (amsync.MaxInflatedChangeBytes) and the
// queue's bounds: a document stored before MaxBytes existed, or grown past
// it through other nodes, still loads. It is then read-only for peers: it
// refuses their new changes and still serves its history.
//
// What a State keeps of the peer's messages (its heads, need, have and
// Bloom filters) is bounded by the above; State.RetainedBytes reports it,
// so that the hub can budget what one connection holds over all its
// documents.
//
// GenerateMessage puts at most MaxSendBytes (8 MiB) of change chunks into
// one message, but always at least one change, so that a long history
// does not become one huge frame. When more is due it sends a prefix, in
// the order of changesToSend (dependencies first), leaving out changes the
// peer's known heads show it has, and sends the next part as soon as the
// peer answers, even while the first is in flight; the rest of the
// protocol (sent hashes, in flight, need) is unchanged, so a long history
// converges in several round trips with automerge-go and
// @automerge/automerge as with another engine. A message that needs no
// cut is the core's, byte for byte.
//
// Changes keep the form they arrived in for storage: Change.Stored is the
// chunk as it arrived (compressed if it was, a copy of its own), Raw the
// uncompressed chunk the index keeps and sends to peers (the Rust core 0.5
// misreads compressed chunks in sync messages). Neither aliases the
// message or batch the change came in.
//
// # Concurrency
//
// A Doc and its States belong to one goroutine (the document's owner);
// nothing in this package locks. Encoded states, messages and the byte
// slices Doc returns may be shared once returned: the Doc never modifies
// them.
package syncengine
