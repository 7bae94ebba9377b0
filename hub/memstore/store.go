package memstore

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

// ErrClosed is returned by every call made after Close.
var ErrClosed = hub.ErrStoreClosed

// ErrInvalidDocumentID is returned for an empty document id or one that
// contains a NUL byte. boltstore rejects the same ids, so a test on memstore
// cannot pass with an id the durable store would refuse.
var ErrInvalidDocumentID = hub.ErrInvalidDocumentID

var _ hub.Store = (*Store)(nil)

// Store is an in-memory hub.Store. Create it with New; the zero value is
// not usable.
type Store struct {
	storageID string

	mu         sync.RWMutex
	closed     bool
	docs       map[protocol.DocumentID]*doc
	syncStates map[protocol.DocumentID]map[string][]byte
}

type doc struct {
	snapshot []byte
	batches  []hub.Batch // ascending Seq
	lastSeq  uint64      // never decreases while the doc exists

	// compacted is set by the first Compact; compactedThrough is the
	// throughSeq of the last successful one. Together they are the
	// compaction version Compact compares and sets: "never compacted" must
	// differ from "compacted through 0", which a second Compact through 0
	// conflicts with.
	compacted        bool
	compactedThrough uint64
}

// New returns an empty store with a fresh random StorageID.
func New() *Store {
	return &Store{
		storageID:  hub.NewStorageID(),
		docs:       make(map[protocol.DocumentID]*doc),
		syncStates: make(map[protocol.DocumentID]map[string][]byte),
	}
}

// check reports why a call may not start: a closed store, a done context,
// or an invalid id. The caller holds s.mu.
func (s *Store) check(ctx context.Context, id protocol.DocumentID) error {
	return hub.CheckStoreCall(ctx, s.closed, id)
}

// StorageID returns the id chosen by New.
func (s *Store) StorageID(ctx context.Context) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return "", fmt.Errorf("failed to read storage id: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("failed to read storage id: %w", err)
	}
	return s.storageID, nil
}

// LoadDoc returns copies of the document's snapshot and batches.
func (s *Store) LoadDoc(ctx context.Context, id protocol.DocumentID) (hub.StoredDoc, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx, id); err != nil {
		return hub.StoredDoc{}, fmt.Errorf("failed to load document %q: %w", id, err)
	}
	d, ok := s.docs[id]
	if !ok {
		return hub.StoredDoc{}, fmt.Errorf("failed to load document %q: %w", id, hub.ErrNotFound)
	}
	out := hub.StoredDoc{Snapshot: clone(d.snapshot)}
	if len(d.batches) > 0 {
		out.Batches = make([]hub.Batch, len(d.batches))
		for i, b := range d.batches {
			out.Batches[i] = hub.Batch{Seq: b.Seq, Data: clone(b.Data)}
		}
	}
	return out, nil
}

// AppendChanges stores a copy of batch under the document's next seq. An
// empty batch creates the document and returns its last seq (0 for a new
// document) without storing a batch.
func (s *Store) AppendChanges(ctx context.Context, id protocol.DocumentID, batch []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx, id); err != nil {
		return 0, fmt.Errorf("failed to append changes to %q: %w", id, err)
	}
	d, ok := s.docs[id]
	if !ok {
		d = &doc{}
		s.docs[id] = d
	}
	if len(batch) == 0 {
		return d.lastSeq, nil
	}
	d.lastSeq++
	d.batches = append(d.batches, hub.Batch{Seq: d.lastSeq, Data: clone(batch)})
	return d.lastSeq, nil
}

// Compact replaces the snapshot with a copy of snapshot and drops the
// batches with Seq <= throughSeq, unless the document was already compacted
// through throughSeq or later: then the caller's snapshot is older than the
// stored one and replacing it would lose the batches it lacks, so Compact
// returns hub.ErrCompactConflict and changes nothing. It does the same when
// throughSeq is beyond the last seq handed out, as the hub.Store contract
// asks (memstore never loses a seq, but a caller may pass any number).
func (s *Store) Compact(ctx context.Context, id protocol.DocumentID, snapshot []byte, throughSeq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to compact %q: %w", id, err)
	}
	d, ok := s.docs[id]
	if !ok {
		return fmt.Errorf("failed to compact %q: %w", id, hub.ErrNotFound)
	}
	if throughSeq > d.lastSeq {
		return fmt.Errorf("failed to compact %q through %d (last seq %d): %w",
			id, throughSeq, d.lastSeq, hub.ErrCompactConflict)
	}
	if d.compacted && d.compactedThrough >= throughSeq {
		return fmt.Errorf("failed to compact %q through %d (compacted through %d): %w",
			id, throughSeq, d.compactedThrough, hub.ErrCompactConflict)
	}
	d.compacted, d.compactedThrough = true, throughSeq
	d.snapshot = clone(snapshot)
	if d.snapshot == nil {
		d.snapshot = []byte{}
	}
	// Batches are in ascending Seq order: keep the tail after throughSeq,
	// in a new array so the dropped ones can be collected.
	i, _ := slices.BinarySearchFunc(d.batches, throughSeq, func(b hub.Batch, seq uint64) int {
		if b.Seq <= seq {
			return -1 // never 0: i is the first batch with Seq > throughSeq
		}
		return 1
	})
	d.batches = slices.Clone(d.batches[i:])
	return nil
}

// DeleteDoc forgets the document (its compaction version included) and its
// sync states.
func (s *Store) DeleteDoc(ctx context.Context, id protocol.DocumentID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to delete %q: %w", id, err)
	}
	delete(s.docs, id)
	delete(s.syncStates, id)
	return nil
}

// SaveSyncState stores a copy of state.
func (s *Store) SaveSyncState(ctx context.Context, id protocol.DocumentID, storageID string, state []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx, id); err != nil {
		return fmt.Errorf("failed to save sync state of %q for %q: %w", id, storageID, err)
	}
	m, ok := s.syncStates[id]
	if !ok {
		m = make(map[string][]byte)
		s.syncStates[id] = m
	}
	c := clone(state)
	if c == nil {
		c = []byte{}
	}
	m[storageID] = c
	return nil
}

// LoadSyncState returns a copy of the stored sync state.
func (s *Store) LoadSyncState(ctx context.Context, id protocol.DocumentID, storageID string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx, id); err != nil {
		return nil, fmt.Errorf("failed to load sync state of %q for %q: %w", id, storageID, err)
	}
	st, ok := s.syncStates[id][storageID]
	if !ok {
		return nil, fmt.Errorf("failed to load sync state of %q for %q: %w", id, storageID, hub.ErrNotFound)
	}
	return clone(st), nil
}

// Close drops all data. Every later call, Close included, returns ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	s.docs = nil
	s.syncStates = nil
	return nil
}

// clone copies b; nil stays nil and an empty slice stays non-nil.
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// DocumentIDs returns the id of every document in the store, sorted.
func (s *Store) DocumentIDs(ctx context.Context) ([]protocol.DocumentID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("failed to list documents: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("failed to list documents: %w", err)
	}
	ids := make([]protocol.DocumentID, 0, len(s.docs))
	for id := range s.docs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}
