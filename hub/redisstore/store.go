package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/rediskeys"
	"github.com/plaithub/plait/pkg/protocol"
)

// DefaultPrefix starts every key when Options.Prefix is empty. redisbroker
// uses the same default, so a document's store and broker keys share a
// cluster slot.
const DefaultPrefix = "plait"

// Options configures New. The zero value is the documented default for
// every field.
type Options struct {
	// Prefix starts every key, so several storages (or test runs) can
	// share one Redis. Nodes that share a storage must use the same
	// Prefix. It must not contain '{' or '}' (the hash tag of a document's
	// keys must be its id). Empty means DefaultPrefix.
	Prefix string
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	return o
}

var _ hub.Store = (*Store)(nil)

// Store is a hub.Store in Redis. Create it with New; the zero value is not
// usable.
type Store struct {
	c         redis.UniversalClient
	prefix    string
	storageID string // read or created by New; never changes
	closed    atomic.Bool
}

// New returns a Store on client, creating the storage's random StorageID
// in Redis if no node has yet (SET NX, so concurrent first News agree).
// The caller keeps owning client: Close does not close it.
func New(ctx context.Context, client redis.UniversalClient, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if client == nil {
		return nil, errors.New("failed to create redis store: nil client")
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("failed to create redis store: prefix %q contains a brace", opts.Prefix)
	}
	s := &Store{c: client, prefix: opts.Prefix}
	key := s.prefix + ":storage-id"
	if err := client.SetNX(ctx, key, hub.NewStorageID(), 0).Err(); err != nil {
		return nil, fmt.Errorf("failed to create storage id: %w", err)
	}
	id, err := client.Get(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("failed to read storage id: %w", err)
	}
	if id == "" {
		return nil, fmt.Errorf("failed to read storage id: %s is empty", key)
	}
	s.storageID = id
	return s, nil
}

// docKeys are the keys of one document; see the layout in the package doc.
type docKeys struct {
	meta, snap, batches, sync string
}

// keys names the keys of document id. The hash tag is the escaped id, so
// all of them map to one cluster slot.
func (s *Store) keys(id protocol.DocumentID) docKeys {
	base := s.prefix + ":{" + escapeID(id) + "}:"
	return docKeys{meta: base + "meta", snap: base + "snap", batches: base + "b", sync: base + "sync"}
}

// escapeID makes a document id safe inside its keys' hash tag.
func escapeID(id protocol.DocumentID) string { return rediskeys.Escape(string(id)) }

// check reports why a call may not start: a closed store, a done context,
// or an invalid id.
func (s *Store) check(ctx context.Context, id protocol.DocumentID) error {
	return hub.CheckStoreCall(ctx, s.closed.Load(), id)
}

// StorageID returns the id read or created by New.
func (s *Store) StorageID(ctx context.Context) (string, error) {
	if s.closed.Load() {
		return "", fmt.Errorf("failed to read storage id: %w", hub.ErrStoreClosed)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("failed to read storage id: %w", err)
	}
	return s.storageID, nil
}

// appendScript stores ARGV[1] as the next batch and returns its seq; an
// empty ARGV[1] only creates the document and returns the last seq.
// KEYS: meta, snap, batches.
//
// A snapshot or batches left without a meta hash (which no script leaves
// behind; an evicted or hand-deleted key could) would be taken for the
// new document's: they are dropped when the document is created.
var appendScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
end
if ARGV[1] == '' then
  return redis.call('HINCRBY', KEYS[1], 'last', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 'last', 1)
redis.call('RPUSH', KEYS[3], ARGV[1])
return seq
`)

// AppendChanges pushes batch and takes the document's next seq in one
// script. An empty batch creates the document and returns its last seq (0
// for a new document) without storing a batch.
func (s *Store) AppendChanges(ctx context.Context, id protocol.DocumentID, batch []byte) (uint64, error) {
	if err := s.check(ctx, id); err != nil {
		return 0, fmt.Errorf("failed to append changes to %q: %w", id, err)
	}
	k := s.keys(id)
	if batch == nil {
		batch = []byte{}
	}
	seq, err := appendScript.Run(ctx, s.c, []string{k.meta, k.snap, k.batches}, batch).Int64()
	if err != nil {
		return 0, fmt.Errorf("failed to append changes to %q: %w", id, err)
	}
	if seq < 0 {
		return 0, fmt.Errorf("failed to append changes to %q: negative seq %d", id, seq)
	}
	return uint64(seq), nil
}

// loadScript returns {last, snapshot or false, {batches...}}, or false if
// the document does not exist. KEYS: meta, snap, batches.
var loadScript = redis.NewScript(`
local last = redis.call('HGET', KEYS[1], 'last')
if not last then
  return false
end
return {last, redis.call('GET', KEYS[2]), redis.call('LRANGE', KEYS[3], 0, -1)}
`)

// LoadDoc reads the snapshot and every batch in one script, which sees one
// state of the document: never a Compact or an append half done. The
// batches' seqs follow from the last seq and the list's length (see the
// layout in the package doc).
func (s *Store) LoadDoc(ctx context.Context, id protocol.DocumentID) (hub.StoredDoc, error) {
	if err := s.check(ctx, id); err != nil {
		return hub.StoredDoc{}, fmt.Errorf("failed to load document %q: %w", id, err)
	}
	k := s.keys(id)
	res, err := loadScript.Run(ctx, s.c, []string{k.meta, k.snap, k.batches}).Slice()
	if errors.Is(err, redis.Nil) {
		return hub.StoredDoc{}, fmt.Errorf("failed to load document %q: %w", id, hub.ErrNotFound)
	}
	if err != nil {
		return hub.StoredDoc{}, fmt.Errorf("failed to load document %q: %w", id, err)
	}
	doc, err := decodeDoc(res)
	if err != nil {
		return hub.StoredDoc{}, fmt.Errorf("failed to load document %q: %w", id, err)
	}
	return doc, nil
}

// decodeDoc reads loadScript's answer. go-redis hands bulk strings over as
// Go strings; converting them to []byte copies them, so every returned
// slice is the caller's and none aliases another.
func decodeDoc(res []any) (hub.StoredDoc, error) {
	if len(res) != 3 {
		return hub.StoredDoc{}, fmt.Errorf("unexpected reply of %d elements", len(res))
	}
	lastStr, ok := res[0].(string)
	if !ok {
		return hub.StoredDoc{}, fmt.Errorf("unexpected last seq %T", res[0])
	}
	last, err := strconv.ParseUint(lastStr, 10, 64)
	if err != nil {
		return hub.StoredDoc{}, fmt.Errorf("malformed last seq: %w", err)
	}
	var doc hub.StoredDoc
	switch snap := res[1].(type) {
	case nil:
	case string:
		doc.Snapshot = []byte(snap)
	default:
		return hub.StoredDoc{}, fmt.Errorf("unexpected snapshot %T", res[1])
	}
	list, ok := res[2].([]any)
	if !ok {
		return hub.StoredDoc{}, fmt.Errorf("unexpected batch list %T", res[2])
	}
	if uint64(len(list)) > last {
		return hub.StoredDoc{}, fmt.Errorf("%d batches but last seq %d", len(list), last)
	}
	if len(list) == 0 {
		return doc, nil
	}
	first := last - uint64(len(list)) + 1
	doc.Batches = make([]hub.Batch, len(list))
	for i, v := range list {
		data, ok := v.(string)
		if !ok {
			return hub.StoredDoc{}, fmt.Errorf("unexpected batch %T", v)
		}
		doc.Batches[i] = hub.Batch{Seq: first + uint64(i), Data: []byte(data)}
	}
	return doc, nil
}

// LuaDecimalLE defines le(a, b), a <= b for unsigned decimal integers
// without leading zeros, compared as strings (shorter is smaller, then
// digit by digit): exact at any size, where Lua's numbers (doubles) are
// exact only up to 2^53. Scripts that compare sequence numbers, times or
// generations start with it.
const LuaDecimalLE = `
local function le(a, b)
  if #a ~= #b then
    return #a < #b
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return true
end
`

// compactScript is Compact: a compare-and-set on the meta field
// "compacted". ARGV: snapshot, throughSeq (decimal). KEYS: meta, snap,
// batches. It returns "notfound", "conflict" or "ok".
//
// A throughSeq beyond "last" is a conflict too: the snapshot was built from
// a load whose last batch was throughSeq, so Redis has lost writes since
// (restarted empty, or failed over to a replica that lacked them) and will
// hand those seqs out again to other batches, which the stale snapshot must
// not replace. Past that check throughSeq <= last.
//
// Seqs are compared as decimal strings (LuaDecimalLE): Lua numbers are
// doubles, exact only up to 2^53, and throughSeq may be anything up to
// 2^64-1. Arithmetic on doubles is used only for the number of batches to
// drop, when throughSeq is below the last seq handed out (a count of
// appends, far below 2^53).
var compactScript = redis.NewScript(LuaDecimalLE + `
local last = redis.call('HGET', KEYS[1], 'last')
if not last then
  return 'notfound'
end
local through = ARGV[2]
if not le(through, last) then
  return 'conflict'
end
local done = redis.call('HGET', KEYS[1], 'compacted')
if done and le(through, done) then
  return 'conflict'
end
redis.call('HSET', KEYS[1], 'compacted', through)
redis.call('SET', KEYS[2], ARGV[1])
local n = redis.call('LLEN', KEYS[3])
if n > 0 then
  if through == last then
    redis.call('DEL', KEYS[3])
  else
    local drop = tonumber(through) - (tonumber(last) - n + 1) + 1
    if drop > 0 then
      redis.call('LTRIM', KEYS[3], drop, -1)
    end
  end
end
return 'ok'
`)

// Compact replaces the snapshot and drops the batches with Seq <=
// throughSeq in one script, unless the document was already compacted
// through throughSeq or later: then the caller's snapshot is older than
// the stored one and replacing it would lose the batches it lacks, so
// Compact returns hub.ErrCompactConflict and changes nothing. It does the
// same when throughSeq is beyond the last seq handed out (see
// compactScript), which after a loss of data in Redis keeps a stale
// snapshot from replacing batches that reuse its seqs.
func (s *Store) Compact(ctx context.Context, id protocol.DocumentID, snapshot []byte, throughSeq uint64) error {
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to compact %q: %w", id, err)
	}
	k := s.keys(id)
	if snapshot == nil {
		snapshot = []byte{}
	}
	res, err := compactScript.Run(ctx, s.c, []string{k.meta, k.snap, k.batches},
		snapshot, strconv.FormatUint(throughSeq, 10)).Text()
	if err != nil {
		return fmt.Errorf("failed to compact %q: %w", id, err)
	}
	switch res {
	case "ok":
		return nil
	case "notfound":
		return fmt.Errorf("failed to compact %q: %w", id, hub.ErrNotFound)
	case "conflict":
		return fmt.Errorf("failed to compact %q through %d (already compacted through it or later, or beyond the last seq): %w",
			id, throughSeq, hub.ErrCompactConflict)
	default:
		return fmt.Errorf("failed to compact %q: unexpected reply %q", id, res)
	}
}

// DeleteDoc removes the document's keys (its compaction version and sync
// states included) with one DEL, which is atomic: the keys share a slot.
func (s *Store) DeleteDoc(ctx context.Context, id protocol.DocumentID) error {
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to delete %q: %w", id, err)
	}
	k := s.keys(id)
	if err := s.c.Del(ctx, k.meta, k.snap, k.batches, k.sync).Err(); err != nil {
		return fmt.Errorf("failed to delete %q: %w", id, err)
	}
	return nil
}

// SaveSyncState sets the peer's field in the document's sync hash. It
// touches no other key, so it does not create the document (as in
// memstore, a sync state may be saved for a document that does not exist;
// DeleteDoc removes it).
func (s *Store) SaveSyncState(ctx context.Context, id protocol.DocumentID, storageID string, state []byte) error {
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to save sync state of %q for %q: %w", id, storageID, err)
	}
	if state == nil {
		state = []byte{}
	}
	if err := s.c.HSet(ctx, s.keys(id).sync, storageID, state).Err(); err != nil {
		return fmt.Errorf("failed to save sync state of %q for %q: %w", id, storageID, err)
	}
	return nil
}

// LoadSyncState returns a copy of the stored sync state.
func (s *Store) LoadSyncState(ctx context.Context, id protocol.DocumentID, storageID string) ([]byte, error) {
	if err := s.check(ctx, id); err != nil {
		return nil, fmt.Errorf("failed to load sync state of %q for %q: %w", id, storageID, err)
	}
	state, err := s.c.HGet(ctx, s.keys(id).sync, storageID).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("failed to load sync state of %q for %q: %w", id, storageID, hub.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to load sync state of %q for %q: %w", id, storageID, err)
	}
	return state, nil
}

// Close marks the store closed. It does not close the client given to New,
// which the caller owns. Every later call, Close included, returns
// hub.ErrStoreClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return hub.ErrStoreClosed
	}
	return nil
}

// DocumentIDs returns the id of every document in the store (every meta
// hash under the prefix), sorted. It walks the keyspace with SCAN (on
// every master of a Redis Cluster), which does not block Redis; documents
// created or deleted while it runs may or may not be listed. Backups
// (server/backup) use it; the hub never lists documents.
func (s *Store) DocumentIDs(ctx context.Context) ([]protocol.DocumentID, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("failed to list documents: %w", hub.ErrStoreClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("failed to list documents: %w", err)
	}
	ids, err := rediskeys.ScanIDs(ctx, s.c, s.prefix+":{", "}:meta")
	if err != nil {
		return nil, fmt.Errorf("failed to list documents: %w", err)
	}
	return ids, nil
}
