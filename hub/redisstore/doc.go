// Package redisstore is a hub.Store on Redis (github.com/redis/go-redis/v9),
// for a cluster of Plait nodes that share one storage: one Redis server
// (with replicas or Sentinel if wanted) or a Redis Cluster. Every node
// opens a Store on the same Redis with the same Options.Prefix; they then
// share documents, sequence numbers and the StorageID.
//
// # Durability
//
// "Durable" in the hub.Store contract means here exactly what the Redis
// server's persistence settings give, and nothing more: a method returns
// once Redis has applied the write and answered. For a write to survive a
// crash of Redis or of its machine, the server must run with
//
//	appendonly yes
//	appendfsync always
//
// (Redis then writes and fsyncs its append-only file before it answers;
// concurrent writes from many nodes and documents share one fsync per event
// loop iteration, the group commit the contract asks for). With
// "appendfsync everysec" (the Redis default when AOF is on) a crash loses up
// to about a second of acknowledged writes; with RDB snapshots only, or no
// persistence, everything since the last snapshot. A Redis restarted empty
// (no persistence, lost disk) has lost every document, batch and sync
// state, and a new StorageID is created by the next New (stores already
// open keep announcing the old one until they are re-created).
//
// Replication is asynchronous: after a failover to a replica, writes the
// old master acknowledged but had not yet sent are lost. The store does not
// call WAIT. Keys never expire; the server must not evict them either
// (maxmemory-policy noeviction, the default), or documents lose parts.
//
// After such a loss a document's last seq may go back, and the seqs it had
// handed out are handed out again to other batches. A node may then still
// hold a snapshot built from a load whose last batch had one of those seqs:
// Compact refuses (hub.ErrCompactConflict, nothing changed) any throughSeq
// beyond the document's current last seq, so that stale snapshot cannot
// replace the new batches. The check cannot tell a reused seq once new
// appends have taken the last seq back up to throughSeq or past it; that
// would need a per-document generation carried from LoadDoc to Compact,
// which the hub.Store interface has no room for.
//
// go-redis retries a command whose connection failed (Options.MaxRetries of
// the client). If the connection broke after Redis ran an AppendChanges but
// before its answer arrived, the retry stores the batch a second time under
// the next seq. Automerge changes are idempotent (applying one twice is
// applying it once), so this costs space, not correctness; a client with
// MaxRetries -1 never retries and reports the error instead.
//
// # Layout
//
// All keys start with Options.Prefix (default "plait"). The keys of one
// document share the hash tag {<id>}, so a Redis Cluster keeps them in one
// slot and a Lua script may touch them all (redisbroker uses the same tag,
// so a document's broker keys live in that slot too):
//
//	<prefix>:storage-id     string: the StorageID, created with SET NX
//	<prefix>:{<id>}:meta    hash: "last" -> last seq handed out,
//	                              "compacted" -> throughSeq of the last Compact
//	<prefix>:{<id>}:snap    string: the snapshot (absent until Compact)
//	<prefix>:{<id>}:b       list: the batches since the last Compact, oldest first
//	<prefix>:{<id>}:sync    hash: peer storageID -> sync state
//
// A document exists while its meta hash does. Batches are a list, not a
// hash from seq to bytes: AppendChanges pushes at the tail and hands out
// seqs one by one (every non-empty batch takes the next seq, atomically
// with its push), and Compact only ever removes a prefix, so the list always
// holds the batches with seqs last-len+1 .. last, in order. LoadDoc reads
// them in seq order with one LRANGE and Compact drops its prefix with one
// LTRIM, with no seq to parse or sort.
//
// The characters '{', '}' and '%' of a document id are escaped ("%7B",
// "%7D", "%25") in key names, so the hash tag always covers the whole id;
// automerge-repo ids (bs58check) have none of them and appear verbatim.
// Options.Prefix may contain neither brace.
//
// # Atomicity
//
// Every operation on several keys is one Lua script (EVALSHA, falling back
// to EVAL when the server does not have it yet), which Redis runs
// atomically: AppendChanges, LoadDoc (the snapshot and all batches read in
// one step, never a Compact half done) and Compact (the checks against
// "last" and the compare-and-set on "compacted", the new snapshot and the
// trimmed batches). DeleteDoc is one
// DEL of the document's four keys and SaveSyncState one HSET: single
// commands, atomic as they are. Nodes may call methods for the same
// document at the same time; seqs stay unique and ordered.
//
// # Contexts and errors
//
// A call whose context is already done returns an error wrapping ctx.Err()
// and sends nothing. A context that ends while the command is in flight
// makes the call return its error at once, but Redis may have run the
// command anyway: as with any network failure, the effect is then unknown.
// A Redis that is down or unreachable makes calls fail with an error that
// says which operation failed (after the client's dial timeout and retries,
// or when the context ends, whichever comes first); bound the context to
// bound the wait.
//
// # Lifetime
//
// The caller owns the redis.UniversalClient given to New: Close marks the
// Store closed (every later call, Close included, returns
// hub.ErrStoreClosed) but does not close the client, which may be shared,
// for example with redisbroker. Close the client after the Store.
package redisstore
