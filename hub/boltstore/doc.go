// Package boltstore is the default hub.Store: an embedded, durable store in
// one bbolt file, for a hub that runs as a single node.
//
// # Durability
//
// Every write method returns only after its bbolt transaction has committed
// and been fsynced, so a nil error means the data survives a crash of the
// process or the machine. AppendChanges and SaveSyncState go through
// bbolt's DB.Batch: calls made at about the same time by different
// goroutines (the owner goroutines of different documents) are committed
// together in one transaction with one fsync, which is what makes many busy
// documents cheap. Each caller still waits for that shared commit. Compact
// and DeleteDoc run in their own transaction (DB.Update).
//
// # Layout
//
// One file, three top-level buckets:
//
//	meta        "storageID" -> random UUID, "version" -> "1"
//	docs        <documentID> -> bucket (its Sequence is the last seq handed out)
//	              "snapshot"         -> compacted document (absent until Compact)
//	              "compactedThrough" -> 8-byte big-endian throughSeq of the last
//	                                    Compact (absent until Compact)
//	              "batches"          -> bucket: 8-byte big-endian seq -> change chunks
//	syncstates  <documentID> 0x00 <storageID> -> sync state
//
// Seqs come from the document bucket's NextSequence, so they are never
// reused while the document exists, even after Compact deleted every batch
// and across restarts. "compactedThrough" is Compact's compare-and-set
// version: a Compact through that seq or an earlier one, or through a seq
// beyond the bucket's Sequence, is refused with hub.ErrCompactConflict. DeleteDoc drops the bucket: a document created again
// under the same id starts over at seq 1. Document ids must be non-empty and
// free of NUL bytes (the sync-state key separator); automerge-repo ids
// (bs58check) always are.
//
// # Concurrency
//
// All methods are safe for concurrent use. bbolt allows one writing
// transaction at a time and any number of readers beside it: LoadDoc and
// LoadSyncState never wait for a commit, and writes are serialized (grouped
// by DB.Batch where possible). Calls for the same document may overlap;
// seqs stay unique and ordered by commit.
//
// Contexts are honoured only before the work starts: a method checks
// ctx.Err() before it begins, and a write checks it again inside its
// transaction, before touching anything (a grouped write whose context
// ended while it waited for the group is dropped from it). bbolt calls
// themselves are not cancellable: once the commit (and its fsync) is under
// way, the call returns when it is done. A call that returns an error
// because of its context has written nothing.
//
// Byte slices are copied out of bbolt's memory map before a transaction
// ends, and callers' slices are not retained after a method returns.
//
// Close waits for transactions in flight, then releases the file and its
// lock. Every call after Close, Close included, returns ErrClosed.
package boltstore
