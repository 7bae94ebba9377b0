package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
)

// ErrNotFound is returned by a Store when the requested document or sync
// state does not exist. Callers compare with errors.Is.
var ErrNotFound = errors.New("not found")

// Store persists documents and per-peer sync states.
//
// Contract (every implementation must pass storetest.RunStoreTests):
//   - All methods are safe for concurrent use by many goroutines.
//   - The hub calls the per-document methods of one document from that
//     document's owner goroutine only, so calls for one document never overlap
//     within a node. Calls for different documents do overlap; implementations
//     should group concurrent AppendChanges calls into one durable commit.
//   - "Durable" means: when the method returns nil, the data survives a crash
//     of the process or the machine (fsync or equivalent).
//   - Returned byte slices are owned by the caller; slices passed in may be
//     reused by the caller after the method returns.
//   - Document ids are valid protocol.DocumentIDs (non-empty, no NUL byte).
//   - A call whose ctx is already done returns an error that wraps ctx.Err()
//     and has no effect.
type Store interface {
	// StorageID returns the identity of this storage, created at random on
	// first use and stable afterwards. The hub announces it to clients as its
	// storageId: every node sharing one storage shares one StorageID.
	StorageID(ctx context.Context) (string, error)

	// LoadDoc returns the document's snapshot and every batch appended since
	// the last Compact, in ascending Seq order. It returns ErrNotFound if the
	// document was never created (or was deleted).
	LoadDoc(ctx context.Context, id protocol.DocumentID) (StoredDoc, error)

	// AppendChanges durably appends one batch of Automerge change chunks
	// (raw chunks, concatenated: what automerge-go's LoadIncremental reads) and returns the
	// batch's sequence number, which is greater than that of every batch
	// appended before it for this document. It creates the document if it
	// does not exist; an empty batch only creates it (and returns the last
	// seq handed out, 0 for a new document). After DeleteDoc a document
	// created again under the same id may start again at seq 1.
	AppendChanges(ctx context.Context, id protocol.DocumentID, batch []byte) (seq uint64, err error)

	// Compact atomically replaces the document's snapshot with snapshot and
	// deletes the batches whose Seq is <= throughSeq. Batches appended after
	// throughSeq are kept. Durable before return. ErrNotFound if the document
	// does not exist.
	//
	// snapshot must hold exactly what one LoadDoc returned whose last batch
	// was throughSeq (LoadDoc reads the snapshot and batches atomically):
	// nodes that share a store append batches the compacting node may not
	// have seen, and only the store knows them all. Compact is a
	// compare-and-set on the document's compaction version, throughSeq: if
	// the document was already compacted through a seq >= throughSeq (by
	// another node), it returns ErrCompactConflict and changes nothing, so
	// two concurrent compactions never lose a batch, whichever wins.
	//
	// It also returns ErrCompactConflict, changing nothing, when throughSeq
	// is greater than the last seq the store has handed out for the
	// document. Such a compaction was built from a LoadDoc whose last batch
	// was throughSeq, so a store whose last seq is now lower has lost data
	// since (a Redis restarted empty, or failed over to a replica that
	// lacked the last writes) and may hand those seqs out again to other
	// batches: the stale snapshot must not replace them. Compacting through
	// the last seq itself is allowed, 0 included for a document that only
	// an empty batch created.
	Compact(ctx context.Context, id protocol.DocumentID, snapshot []byte, throughSeq uint64) error

	// DeleteDoc removes the document, its batches and its sync states.
	// Deleting a missing document is not an error.
	DeleteDoc(ctx context.Context, id protocol.DocumentID) error

	// SaveSyncState durably stores the sync state of the peer storage
	// storageID for document id, replacing any earlier one. It does not
	// create the document; DeleteDoc removes it with the document.
	SaveSyncState(ctx context.Context, id protocol.DocumentID, storageID string, state []byte) error

	// LoadSyncState returns what SaveSyncState stored, or ErrNotFound.
	LoadSyncState(ctx context.Context, id protocol.DocumentID, storageID string) ([]byte, error)

	// Close releases the store. Calls after Close return an error.
	Close() error
}

// StoredDoc is a document as a Store holds it: a compacted snapshot (nil
// if the document was never compacted) and the batches appended since.
type StoredDoc struct {
	Snapshot []byte
	Batches  []Batch
}

// Changes returns the raw chunks of every change of the stored document:
// the snapshot's (see snapshot.go), then the batches', which are raw
// change chunks already. A store that lost a prefix of its batches (a
// Redis restarted empty) may hold changes before their dependencies,
// which the sync engine queues until they arrive.
func (sd StoredDoc) Changes() ([][]byte, error) {
	var raws [][]byte
	if len(sd.Snapshot) > 0 {
		var err error
		if raws, err = snapshotChanges(sd.Snapshot); err != nil {
			return nil, err
		}
	}
	for _, b := range sd.Batches {
		parts, err := amsync.SplitChunks(b.Data)
		if err != nil {
			return nil, fmt.Errorf("failed to read stored batch %d: %w", b.Seq, err)
		}
		raws = append(raws, parts...)
	}
	return raws, nil
}

// Batch is one AppendChanges call as stored.
type Batch struct {
	Seq  uint64
	Data []byte
}

// ErrCompactConflict is returned by Store.Compact when the document was
// already compacted through the same or a later batch, or when the
// compaction claims batches beyond the last one the store handed out (the
// store lost data since): the caller's snapshot is stale and is dropped.
// Callers compare with errors.Is.
var ErrCompactConflict = errors.New("compaction conflict: already compacted through a later batch, or beyond the last batch")

// ErrStoreClosed is returned by a Store's methods once it is closed.
var ErrStoreClosed = errors.New("store is closed")

// ErrInvalidDocumentID is returned by a Store for a document id it cannot
// hold: empty, or containing a NUL byte (stores use NUL as a separator).
var ErrInvalidDocumentID = errors.New("invalid document id")

// CheckStoreCall reports why a store call may not start: the store is
// closed, ctx is done, or id is invalid. Store implementations share it.
func CheckStoreCall(ctx context.Context, closed bool, id protocol.DocumentID) error {
	if closed {
		return ErrStoreClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if id == "" || strings.IndexByte(string(id), 0) >= 0 {
		return fmt.Errorf("%w: %q", ErrInvalidDocumentID, id)
	}
	return nil
}

// NewStorageID returns a random UUID (version 4), the form automerge-repo
// peers use for their storageId. Stores call it when they are created.
func NewStorageID() string { return protocol.NewStorageID() }
