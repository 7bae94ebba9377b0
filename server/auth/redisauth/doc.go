// Package redisauth keeps Plait's login sessions, revocations, one-time
// keys and document access (auth.TokenStore and access.ACL: Store) and
// carries auth events between nodes (auth.Events: Events) in Redis
// (github.com/redis/go-redis/v9), for a cluster of nodes that share one
// Redis server or one Redis Cluster. Every node uses the same prefix.
//
// # Layout
//
// Every key starts with the prefix (default "plait") and ":auth:". The
// part in braces is the hash tag, so a Redis Cluster puts each of these
// groups in one slot, where one Lua script may use it atomically:
//
//	{fam:<id>}          hash: user, gen, created, exp, revoked ("0"/"1"), op
//	{user:<id>}:cutoff  string: the RevokeUser cut-off
//	{user:<id>}:docs    hash: document id -> version (the user's index)
//	{once:<key>}        string with a TTL: a ConsumeOnce key
//	{doc:<id>}          hash: created, link, ver, op, "u:<user>" -> role
//	events              stream: auth events (Events)
//
// Times are decimal Unix nanoseconds (times before 1678 or after 2262 are
// refused), roles are names ("viewer", "editor", "owner", "none" for the
// link). The characters '{', '}' and '%' of ids and keys are escaped
// ("%7B", "%7D", "%25") so the tag always covers the whole id. A family's
// key expires FamilyRetention after the family does (its TTL follows each
// rotation); the cut-offs and access hashes never expire, and the server
// must not evict them (maxmemory-policy noeviction, the default): a lost
// cut-off un-revokes a user.
//
// # Atomicity
//
// CreateFamily, Rotate, RevokeFamily, RevokeUser (compare and move the
// cut-off forward) and ConsumeOnce are each one Lua script on one key,
// which Redis runs atomically, on any number of nodes at once: of
// concurrent rotations of one generation one wins and the others are a
// reuse that revokes the family; of concurrent ConsumeOnce calls of a key
// one reports true. Expiry of a family is checked against the calling
// node's clock: the nodes' clocks must agree (NTP). Revoked reads the
// family and the cut-off, two keys of two slots, in one pipeline.
//
// go-redis retries a command whose connection failed; if Redis had run the
// script but its answer was lost, the retry would find its own work done
// and report a reuse (revoking a good session), a replay or a claim. Each
// changing script therefore records a random operation id ("op", or the
// ConsumeOnce key's value) and a retry that finds its own id reports the
// success it missed.
//
// # Documents of a user
//
// In a cluster, a document's access hash and a user's index are in
// different slots: no script can change both. The access hash is the
// truth; the index only says where to look, and DocsOf confirms each entry
// against the document's hash (skipping entries whose document gives the
// user no role, and reporting the document's role). Each change:
//
//  1. If it may give the user a role (Claim, Share with a role), first
//     writes a pending entry (version 0) in the index, with HSETNX, so
//     that it never replaces a later version. If this fails, the change
//     is not made.
//  2. Changes the document's hash in one script, which also counts its
//     owners (ErrLastOwner is atomic per document) and bumps its version.
//  3. Writes the document's new version to the index, as the entry if the
//     user has a role, as a removal if not, unless the index already holds
//     that version or a later one (one script on the index key). Versions
//     make concurrent changes of one user's role, whose index writes may
//     arrive in any order, end as the last change to the document did.
//
// So a document on which the user has a role is always in the index (step
// 1 came first), and a stale entry (a failure or crash between steps 2 and
// 3, a Share on an unclaimed document) is only ever an entry too many,
// which DocsOf skips; the next change of that user's role on that
// document replaces it. When step 3 fails the method returns its error,
// though the access has changed: as with any network failure, the outcome
// is unknown, and calling again is safe.
//
// # Events
//
// Events appends each event to a Redis stream (XADD, trimmed to about
// StreamMaxLen entries) and each Watch reads the stream from the last
// entry that existed when it started, remembering the id of every event it
// delivers; after a Redis error it retries with backoff and reads on from
// that id, so an outage shorter than the stream's capacity loses nothing.
// With persistence (appendonly yes) the stream survives a Redis restart;
// without, events published but not yet read before it are lost, and the
// new stream's ids (time-based) follow on from the old ones, so watchers
// read on. Publish retried by go-redis after a lost answer may store an
// event twice: delivery is at least once, as the contract allows. A stream
// is one key: in a Redis Cluster all events go through one master, which
// is plenty for revocations and access changes.
//
// # Concurrency and contexts
//
// All methods are safe for concurrent use by any number of nodes. A call
// whose context is already done returns an error wrapping ctx.Err() and
// sends nothing; a context that ends while a command is in flight leaves
// its effect unknown. The caller owns the redis.UniversalClient: nothing
// here closes it.
package redisauth
