package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

// Defaults for the zero fields of Options.
const (
	// DefaultLockTimeout is how long Open waits for the file lock. A second
	// process on the same file is an operator error; failing after a few
	// seconds says so instead of hanging.
	DefaultLockTimeout = 5 * time.Second

	// DefaultMaxBatchDelay is no delay: the store's writer commits a group
	// as soon as it has one, and the writes that arrive during that commit
	// form the next group, so groups grow with the load without a timer.
	// It replaced bbolt's DB.Batch with a 1 ms delay. Medians of
	// `go test -run '^$' -bench BenchmarkAppendChanges -benchtime 2s
	// -count 3` on ext4, 2 shared cores (noisy: sessions varied up to 2x),
	// DB.Batch 1 ms -> this writer: a lone writer (Serial) 2.8 ms ->
	// 0.6 ms per append; 2 writers 1,170 -> 4,820 ops/s; 16 writers
	// 6,240 -> 7,130 ops/s; 128 writers 8,300 -> 12,060 ops/s. A 1 ms
	// MaxBatchDelay on top of the writer costs a lone writer 1 ms and
	// gains nothing at 16 or 128 writers.
	DefaultMaxBatchDelay time.Duration = 0

	// DefaultMaxBatchSize is the largest number of writes in one group
	// commit (bbolt's DB.Batch default), and the length of the queue of
	// writes waiting for the writer.
	DefaultMaxBatchSize = 1000

	// DefaultFileMode is the permission of a newly created store file.
	DefaultFileMode os.FileMode = 0o600
)

// formatVersion is written to meta/version; Open migrates version 1 (the
// snapshot in the document's bucket, see migrateSnapshots) and refuses
// any other.
const formatVersion = "2"

// ErrClosed is returned by every call made after Close.
var ErrClosed = hub.ErrStoreClosed

// ErrLocked is returned by Open when another Store, in this process or
// another, still holds the file after Options.LockTimeout.
var ErrLocked = errors.New("boltstore: file is locked by another store")

// ErrInvalidDocumentID is returned for an empty document id or one that
// contains a NUL byte, which the key layout cannot represent.
var ErrInvalidDocumentID = hub.ErrInvalidDocumentID

// Options configures Open. The zero value is the documented default for
// every field.
type Options struct {
	// LockTimeout bounds how long Open waits for the exclusive lock on the
	// file, held by another process (or another Store in this process) that
	// has it open. Zero means DefaultLockTimeout; negative waits forever.
	LockTimeout time.Duration

	// MaxBatchDelay is an extra wait: how long the writer, once it has the
	// first AppendChanges or SaveSyncState of a group, waits for more calls
	// to join before the transaction starts. Zero means
	// DefaultMaxBatchDelay, which is no wait; negative is no wait too.
	// Groups form without it (the calls made during one commit go in the
	// next), so it only adds latency unless commits are much cheaper than
	// the gaps between calls; it is kept for such disks and for
	// comparison.
	MaxBatchDelay time.Duration

	// MaxBatchSize is the most calls committed in one group; a full group
	// starts without waiting for MaxBatchDelay. Zero means
	// DefaultMaxBatchSize; negative disables grouping (one commit per
	// call).
	MaxBatchSize int

	// FileMode is the permission of the file if Open creates it. Zero means
	// DefaultFileMode.
	FileMode os.FileMode
}

func (o Options) withDefaults() Options {
	switch {
	case o.LockTimeout == 0:
		o.LockTimeout = DefaultLockTimeout
	case o.LockTimeout < 0:
		o.LockTimeout = 0 // bbolt: wait forever
	}
	switch {
	case o.MaxBatchDelay == 0:
		o.MaxBatchDelay = DefaultMaxBatchDelay
	case o.MaxBatchDelay < 0:
		o.MaxBatchDelay = 0
	}
	switch {
	case o.MaxBatchSize == 0:
		o.MaxBatchSize = DefaultMaxBatchSize
	case o.MaxBatchSize < 0:
		o.MaxBatchSize = 1 // one write per commit
	}
	if o.FileMode == 0 {
		o.FileMode = DefaultFileMode
	}
	return o
}

// Bucket and key names; see the layout in the package doc.
var (
	bucketMeta       = []byte("meta")
	bucketDocs       = []byte("docs")
	bucketSyncStates = []byte("syncstates")
	// bucketSnapshots holds each document's snapshot, apart from its
	// bucket: bbolt rewrites a dirty leaf whole, values included, so a
	// snapshot in the document's bucket was written again by every
	// append to that document (an O(history) write per edit).
	bucketSnapshots = []byte("snapshots")
	keyStorageID    = []byte("storageID")
	keyVersion      = []byte("version")
	keySnapshot     = []byte("snapshot")
	keyBatches      = []byte("batches")

	// keyCompacted, in a document's bucket, holds the throughSeq of its last
	// successful Compact (8-byte big-endian): the compaction version Compact
	// compares and sets. It lives in the document bucket, so DeleteDoc
	// drops it with the document and it survives a reopen. Absent means
	// never compacted (or compacted by a version that did not record it,
	// whose compactions then cannot conflict with the next one).
	keyCompacted = []byte("compactedThrough")
)

var _ hub.Store = (*Store)(nil)

// Store is a hub.Store in a bbolt file. Create it with Open.
type Store struct {
	db        *bolt.DB
	storageID string // read or created by Open; never changes
	closed    atomic.Bool

	// The group commit (group.go): AppendChanges and SaveSyncState queue
	// their writes on writes for the writer goroutine, which Close stops
	// by closing quit; it closes stopped when it has.
	writes   chan *write
	quit     chan struct{}
	stopped  chan struct{}
	maxBatch int           // >= 1
	maxDelay time.Duration // >= 0
}

// Open opens the store in the file at path, creating the file (and its
// directory) if needed, and the storage's random StorageID on first use.
// Only one Store may have a file open at a time; Open waits up to
// Options.LockTimeout for the file lock, then fails with ErrLocked.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("failed to create directory for %s: %w", path, err)
	}
	db, err := bolt.Open(path, opts.FileMode, &bolt.Options{
		Timeout:      opts.LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("failed to open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", path, err)
	}
	s := &Store{
		db:       db,
		writes:   make(chan *write, opts.MaxBatchSize),
		quit:     make(chan struct{}),
		stopped:  make(chan struct{}),
		maxBatch: opts.MaxBatchSize,
		maxDelay: opts.MaxBatchDelay,
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketDocs, bucketSyncStates, bucketSnapshots} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		switch v := meta.Get(keyVersion); {
		case v == nil:
			if err := meta.Put(keyVersion, []byte(formatVersion)); err != nil {
				return err
			}
		case string(v) == "1":
			// Migrated below, in transactions of their own.
		case string(v) != formatVersion:
			return fmt.Errorf("unsupported format version %q (want %q)", v, formatVersion)
		}
		if id := meta.Get(keyStorageID); id != nil {
			s.storageID = string(id) // string() copies out of the mmap
			return nil
		}
		s.storageID = hub.NewStorageID()
		return meta.Put(keyStorageID, []byte(s.storageID))
	})
	if err == nil {
		err = migrateSnapshots(db)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to initialize %s: %w", path, err)
	}
	go s.writer()
	return s, nil
}

// Path returns the file the store is kept in.
func (s *Store) Path() string { return s.db.Path() }

// check reports why a call may not start: a closed store, a done context,
// or an id the layout cannot hold.
func (s *Store) check(ctx context.Context, id protocol.DocumentID) error {
	return hub.CheckStoreCall(ctx, s.closed.Load(), id)
}

// StorageID returns the id created when the file was first opened.
func (s *Store) StorageID(ctx context.Context) (string, error) {
	if s.closed.Load() {
		return "", fmt.Errorf("failed to read storage id: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("failed to read storage id: %w", err)
	}
	return s.storageID, nil
}

// LoadDoc reads the document in one read transaction, which sees one
// committed state: never a Compact half done.
func (s *Store) LoadDoc(ctx context.Context, id protocol.DocumentID) (hub.StoredDoc, error) {
	if err := s.check(ctx, id); err != nil {
		return hub.StoredDoc{}, fmt.Errorf("failed to load document %q: %w", id, err)
	}
	var doc hub.StoredDoc
	err := s.db.View(func(tx *bolt.Tx) error {
		d := tx.Bucket(bucketDocs).Bucket([]byte(id))
		if d == nil {
			return hub.ErrNotFound
		}
		if v := tx.Bucket(bucketSnapshots).Get([]byte(id)); v != nil {
			doc.Snapshot = append(make([]byte, 0, len(v)), v...)
		}
		b := d.Bucket(keyBatches)
		if b == nil {
			return errors.New("document bucket has no batches bucket")
		}
		// Two passes: size everything, then copy all batches into one
		// allocation. Each Data is capped at its own length, so a caller
		// appending to one batch cannot write into the next.
		var n, size int
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("malformed batch key %x", k)
			}
			n++
			size += len(v)
		}
		if n == 0 {
			return nil
		}
		buf := make([]byte, 0, size)
		doc.Batches = make([]hub.Batch, 0, n)
		for k, v := c.First(); k != nil; k, v = c.Next() {
			start := len(buf)
			buf = append(buf, v...)
			doc.Batches = append(doc.Batches, hub.Batch{
				Seq:  binary.BigEndian.Uint64(k),
				Data: buf[start:len(buf):len(buf)],
			})
		}
		return nil
	})
	if err != nil {
		return hub.StoredDoc{}, fmt.Errorf("failed to load document %q: %w", id, err)
	}
	return doc, nil
}

// AppendChanges adds batch under the document's next seq in a group commit
// shared with concurrent AppendChanges and SaveSyncState calls. An empty
// batch creates the document and returns its last seq (0 for a new
// document) without storing a batch.
func (s *Store) AppendChanges(ctx context.Context, id protocol.DocumentID, batch []byte) (uint64, error) {
	if err := s.check(ctx, id); err != nil {
		return 0, fmt.Errorf("failed to append changes to %q: %w", id, err)
	}
	if ctx.Done() != nil {
		// A caller that gives up returns while its write may still be in
		// the transaction, which holds batch until the commit.
		batch = bytes.Clone(batch)
	}
	var seq uint64
	// The writer may run this function more than once (if another call
	// in the group fails, the group is retried without it): it must only
	// touch the transaction and seq.
	err := s.write(ctx, func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, err := tx.Bucket(bucketDocs).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		b, err := d.CreateBucketIfNotExists(keyBatches)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			seq = d.Sequence()
			return nil
		}
		if seq, err = d.NextSequence(); err != nil {
			return err
		}
		// bbolt keeps a reference to batch until the commit: a copy
		// unless the caller cannot give up before the commit.
		return b.Put(seqKey(seq), batch)
	})
	if err != nil {
		return 0, fmt.Errorf("failed to append changes to %q: %w", id, err)
	}
	return seq, nil
}

// Compact replaces the snapshot and deletes the batches with Seq <=
// throughSeq in one transaction of its own, unless the document was already
// compacted through throughSeq or later: then the caller's snapshot is
// older than the stored one and replacing it would lose the batches it
// lacks, so Compact returns hub.ErrCompactConflict and changes nothing. It
// does the same when throughSeq is beyond the last seq handed out (the
// document bucket's Sequence), as the hub.Store contract asks.
func (s *Store) Compact(ctx context.Context, id protocol.DocumentID, snapshot []byte, throughSeq uint64) error {
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to compact %q: %w", id, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := tx.Bucket(bucketDocs).Bucket([]byte(id))
		if d == nil {
			return hub.ErrNotFound
		}
		if last := d.Sequence(); throughSeq > last {
			return fmt.Errorf("through %d (last seq %d): %w", throughSeq, last, hub.ErrCompactConflict)
		}
		if v := d.Get(keyCompacted); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("malformed compaction version %x", v)
			}
			if done := binary.BigEndian.Uint64(v); done >= throughSeq {
				return fmt.Errorf("through %d (compacted through %d): %w", throughSeq, done, hub.ErrCompactConflict)
			}
		}
		if err := d.Put(keyCompacted, seqKey(throughSeq)); err != nil {
			return err
		}
		if snapshot == nil {
			snapshot = []byte{}
		}
		if err := tx.Bucket(bucketSnapshots).Put([]byte(id), snapshot); err != nil {
			return err
		}
		b := d.Bucket(keyBatches)
		if b == nil {
			return errors.New("document bucket has no batches bucket")
		}
		// Collect first, delete after: deleting under a live cursor can
		// make it skip keys.
		var doomed [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= throughSeq; k, _ = c.Next() {
			doomed = append(doomed, bytes.Clone(k))
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to compact %q: %w", id, err)
	}
	return nil
}

// DeleteDoc drops the document's bucket (its compaction version included)
// and its sync states in one transaction.
func (s *Store) DeleteDoc(ctx context.Context, id protocol.DocumentID) error {
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to delete %q: %w", id, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		docs := tx.Bucket(bucketDocs)
		if docs.Bucket([]byte(id)) != nil {
			if err := docs.DeleteBucket([]byte(id)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketSnapshots).Delete([]byte(id)); err != nil {
			return err
		}
		ss := tx.Bucket(bucketSyncStates)
		prefix := syncKey(id, "")
		var doomed [][]byte
		c := ss.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			doomed = append(doomed, bytes.Clone(k))
		}
		for _, k := range doomed {
			if err := ss.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to delete %q: %w", id, err)
	}
	return nil
}

// SaveSyncState stores state in a group commit shared with concurrent
// AppendChanges and SaveSyncState calls.
func (s *Store) SaveSyncState(ctx context.Context, id protocol.DocumentID, storageID string, state []byte) error {
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to save sync state of %q for %q: %w", id, storageID, err)
	}
	key := syncKey(id, storageID)
	switch {
	case state == nil:
		state = []byte{}
	case ctx.Done() != nil:
		state = bytes.Clone(state) // as in AppendChanges
	}
	err := s.write(ctx, func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return tx.Bucket(bucketSyncStates).Put(key, state)
	})
	if err != nil {
		return fmt.Errorf("failed to save sync state of %q for %q: %w", id, storageID, err)
	}
	return nil
}

// LoadSyncState returns a copy of the stored sync state.
func (s *Store) LoadSyncState(ctx context.Context, id protocol.DocumentID, storageID string) ([]byte, error) {
	if err := s.check(ctx, id); err != nil {
		return nil, fmt.Errorf("failed to load sync state of %q for %q: %w", id, storageID, err)
	}
	var state []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSyncStates).Get(syncKey(id, storageID))
		if v == nil {
			return hub.ErrNotFound
		}
		state = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to load sync state of %q for %q: %w", id, storageID, err)
	}
	return state, nil
}

// Close lets the group commit in flight finish, answers the writes still
// queued with ErrClosed, stops the writer, waits for the other
// transactions in flight and releases the file. Every later call, Close
// included, returns ErrClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(s.quit)
	<-s.stopped
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("failed to close %s: %w", s.db.Path(), err)
	}
	return nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// syncKey is id 0x00 storageID. Ids never contain NUL (check rejects
// them), so the key of one document is never a prefix of another's.
func syncKey(id protocol.DocumentID, storageID string) []byte {
	k := make([]byte, 0, len(id)+1+len(storageID))
	k = append(k, id...)
	k = append(k, 0)
	return append(k, storageID...)
}

// DocumentIDs returns the id of every document in the store, in id order,
// read in one transaction. Backups (server/backup) use it to find what to
// export; the hub never lists documents.
func (s *Store) DocumentIDs(ctx context.Context) ([]protocol.DocumentID, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("failed to list documents: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("failed to list documents: %w", err)
	}
	var ids []protocol.DocumentID
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDocs).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v != nil {
				continue // not a document bucket
			}
			if len(ids)%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			ids = append(ids, protocol.DocumentID(k)) // copies out of the mmap
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list documents: %w", err)
	}
	return ids, nil
}

// migrateBytes bounds the snapshots one migration step moves (a variable
// for tests).
var migrateBytes = 64 << 20

// migrateSnapshots moves the snapshots of a version 1 file, kept in each
// document's bucket under "snapshot", to bucketSnapshots, then records
// version 2. It moves at most migrateBytes of snapshots per transaction
// (a transaction holds what it writes in memory), so a large file is
// migrated in steps; a step interrupted by a crash is repeated at the
// next Open, since the version changes only after the last one. A
// version 1 binary refuses the file afterwards instead of missing its
// snapshots.
func migrateSnapshots(db *bolt.DB) error {
	for {
		done := false
		err := db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if string(meta.Get(keyVersion)) == formatVersion {
				done = true
				return nil
			}
			docs, snaps := tx.Bucket(bucketDocs), tx.Bucket(bucketSnapshots)
			var moved [][]byte
			size := 0
			c := docs.Cursor()
			for k, v := c.First(); k != nil && size < migrateBytes; k, v = c.Next() {
				if v != nil {
					continue // not a document bucket
				}
				snap := docs.Bucket(k).Get(keySnapshot)
				if snap == nil {
					continue
				}
				if err := snaps.Put(bytes.Clone(k), bytes.Clone(snap)); err != nil {
					return err
				}
				moved = append(moved, bytes.Clone(k))
				size += len(snap)
			}
			for _, k := range moved {
				if err := docs.Bucket(k).Delete(keySnapshot); err != nil {
					return err
				}
			}
			if size < migrateBytes {
				// Every document's snapshot has moved.
				done = true
				return meta.Put(keyVersion, []byte(formatVersion))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("failed to migrate snapshots to format %s: %w", formatVersion, err)
		}
		if done {
			return nil
		}
	}
}
