// Package boltauth keeps Plait's login sessions, revocations, one-time keys
// and document access (auth.TokenStore and access.ACL) in one bbolt file,
// for a node that runs alone. A cluster of nodes needs a shared store
// (redisauth): the file is locked by the one process that has it open.
//
// # Durability
//
// Every write is one bbolt transaction (DB.Update) that has committed and
// been fsynced when the method returns: a nil error means the write
// survives a crash of the process or the machine. Writes are serialized;
// reads (Family, Revoked, Access, DocsOf) run beside them and see one
// committed state.
//
// # Layout
//
// One file, bucket by bucket (times in keys are 8-byte big-endian Unix
// nanoseconds with the sign bit flipped, so that they sort in time order):
//
//	meta       "version" -> "1"
//	families   <family id> -> JSON {user, gen, created, expires, revoked}
//	famexp     <expires + FamilyRetention> <family id> -> "" (sweep index)
//	cutoffs    <user> -> the RevokeUser cut-off (time.Time binary form)
//	once       <key> -> its expiry (8-byte time)
//	onceexp    <expiry> <key> -> "" (sweep index)
//	docs       <document id> -> JSON {users: {<user>: role}, link, created}
//	userdocs   <user> -> bucket: <document id> -> role
//
// Roles are stored by name ("viewer", "editor", "owner"), not by number.
// A user's docs index (userdocs) is written in the same transaction as the
// document's access (docs), so DocsOf and Access always agree; DocsOf
// lists a user's documents in id order, as the index's keys sort.
//
// # Expiry
//
// A ConsumeOnce key is forgotten when its ttl has passed: ConsumeOnce
// treats an expired key as absent (lazily), and a sweeper goroutine
// deletes expired keys every SweepInterval (and once when the store
// opens), so the file does not grow with keys nobody presents again. The
// same sweeper deletes families FamilyRetention after they expire: by
// then no token of theirs is valid anyway (an expired family cannot be
// rotated, and access tokens live minutes), and an unknown family counts
// as revoked. Revocations of users are kept forever (one small entry per
// user who was ever revoked). Close stops the sweeper.
//
// # Concurrency and contexts
//
// All methods are safe for concurrent use. Contexts are honoured before
// the work starts: a method checks ctx.Err() before it begins, and a write
// checks it again inside its transaction, before touching anything. bbolt
// calls are not cancellable: a commit under way finishes. A call that
// returns an error because of its context has written nothing.
//
// Close waits for transactions in flight and the sweeper, then releases
// the file and its lock. Every call after Close, Close included, returns
// ErrClosed.
package boltauth
