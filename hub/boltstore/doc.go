// Package boltstore is the default hub.Store: an embedded, durable store in
// one bbolt file, for a hub that runs as a single node.
//
// # Durability
//
// Every write method returns only after its bbolt transaction has committed
// and been fsynced, so a nil error means the data survives a crash of the
// process or the machine. AppendChanges and SaveSyncState are group
// commits: they queue their write for the Store's one writer goroutine,
// which takes the first queued write and every write queued behind it (up
// to Options.MaxBatchSize), runs them in one bbolt transaction (one commit,
// one set of fsyncs) and answers each. While that commit is in flight, the
// calls made meanwhile by other goroutines (the owner goroutines of other
// documents) queue up and form the next group. A lone writer pays one
// commit and no delay; many busy documents share commits, which is what
// makes them cheap. Each caller still waits for its group's commit. If one
// write of a group fails, the transaction is rolled back, that caller gets
// its error and the group runs again without it; an error of the commit
// itself goes to every caller of the group. Compact and DeleteDoc run in
// their own transaction (DB.Update), outside the queue.
//
// # Layout
//
// One file, four top-level buckets:
//
//	meta        "storageID" -> random UUID, "version" -> "2"
//	docs        <documentID> -> bucket (its Sequence is the last seq handed out)
//	              "compactedThrough" -> 8-byte big-endian throughSeq of the last
//	                                    Compact (absent until Compact)
//	              "batches"          -> bucket: 8-byte big-endian seq -> change chunks
//	snapshots   <documentID> -> compacted document (absent until Compact)
//	syncstates  <documentID> 0x00 <storageID> -> sync state
//
// Snapshots live apart from their document's bucket because bbolt writes a
// modified leaf page whole, values included: in version 1 the snapshot was
// a value of the document's bucket, so every append to a document wrote its
// snapshot again. Open migrates a version 1 file (see migrateSnapshots).
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
// LoadSyncState never wait for a commit, and writes are serialized (the
// queued ones grouped by the writer). Calls for the same document may
// overlap; seqs stay unique and ordered by commit.
//
// Contexts: a method checks ctx.Err() before it begins, and a write checks
// it again inside its transaction, before touching anything (a grouped
// write whose context ended while it was queued is dropped from its
// group). AppendChanges and SaveSyncState also stop waiting when ctx ends,
// whether queued or waiting for their group's commit, and return ctx's
// error; in the second case the write may still commit. The hub treats any
// error as a failure and writes the same changes again later, and a
// duplicate batch of changes or a sync state saved twice is harmless, so a
// caller never needs to know. Compact and DeleteDoc honour ctx only before
// their transaction starts: once their commit is under way they return
// when it is done, and if they return ctx's error they have written
// nothing. Slices passed to a write are copied when its ctx can end
// (bbolt holds them until the commit), so callers may reuse them as soon
// as the method returns.
//
// Byte slices are copied out of bbolt's memory map before a transaction
// ends, and callers' slices are not retained after a method returns.
//
// Close lets the group commit in flight finish (its callers get its
// result), answers the writes still queued with ErrClosed, stops the
// writer goroutine, waits for the other transactions in flight, then
// releases the file and its lock. Every call after Close, Close included,
// returns ErrClosed.
package boltstore
