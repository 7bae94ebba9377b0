// Package cryptstore encrypts at rest everything a hub.Store keeps: it wraps
// another Store and seals every snapshot, change batch and sync state with
// AES-256-GCM before it reaches the inner store.
//
// Each sealed value is
//
//	"PLE1" | len(key id) (1 byte) | key id | nonce (12 bytes) | ciphertext and tag
//
// and its additional authenticated data binds it to its document and its
// role (snapshot, batch, or the sync state of one peer storage), so a value
// copied to another place in the store does not decrypt. Keys have ids:
// the first key seals, every key opens, so keys rotate by putting a new key
// first and keeping the old ones until the store has been rewritten
// (compaction rewrites a document's snapshot and drops its old batches).
// A value sealed with a key that is not configured, or that fails to
// authenticate (a wrong key, corrupted bytes), is a clear error, never
// garbage.
//
// Concurrency: as safe as the inner store (the wrapper keeps no state
// besides its keys).
package cryptstore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

var _ hub.Store = (*Store)(nil)

// ErrUnknownKey is returned when a stored value was sealed with a key id
// that is not configured.
var ErrUnknownKey = errors.New("sealed with a key that is not configured")

// ErrDecrypt is returned when a stored value does not authenticate under
// its key: a wrong key with the same id, or corrupted bytes.
var ErrDecrypt = errors.New("failed to decrypt: wrong key or corrupted data")

// ErrNotEncrypted is returned for a stored value that is not sealed (a store
// written without encryption).
var ErrNotEncrypted = errors.New("stored value is not encrypted")

var magic = []byte("PLE1")

// keyIDPattern is what a key id may be: short, printable, no separator.
var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Key is one AES-256 key and its id.
type Key struct {
	ID     string
	Secret []byte // 32 bytes
}

// Store is a hub.Store that seals everything it writes to the inner store.
type Store struct {
	inner hub.Store
	seal  string // id of the key that seals
	aeads map[string]cipher.AEAD
}

// New wraps inner. keys[0] seals new values; every key opens.
func New(inner hub.Store, keys []Key) (*Store, error) {
	if inner == nil {
		return nil, errors.New("cryptstore: nil inner store")
	}
	if len(keys) == 0 {
		return nil, errors.New("cryptstore: no keys")
	}
	s := &Store{inner: inner, seal: keys[0].ID, aeads: make(map[string]cipher.AEAD, len(keys))}
	for _, k := range keys {
		if !keyIDPattern.MatchString(k.ID) {
			return nil, fmt.Errorf("cryptstore: key id %q must be 1-64 characters of A-Z a-z 0-9 _ . -", k.ID)
		}
		if len(k.Secret) != 32 {
			return nil, fmt.Errorf("cryptstore: key %q has %d bytes, want 32 (AES-256)", k.ID, len(k.Secret))
		}
		if _, dup := s.aeads[k.ID]; dup {
			return nil, fmt.Errorf("cryptstore: key id %q given twice", k.ID)
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("cryptstore: key %q: %w", k.ID, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("cryptstore: key %q: %w", k.ID, err)
		}
		s.aeads[k.ID] = aead
	}
	return s, nil
}

// aad binds a value to its document and role.
func aad(id protocol.DocumentID, role string) []byte {
	return append(append([]byte(role), 0), id...)
}

func (s *Store) sealValue(plain []byte, id protocol.DocumentID, role string) []byte {
	aead := s.aeads[s.seal]
	out := make([]byte, 0, len(magic)+1+len(s.seal)+aead.NonceSize()+len(plain)+aead.Overhead())
	out = append(out, magic...)
	out = append(out, byte(len(s.seal)))
	out = append(out, s.seal...)
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, aad(id, role))
}

// open decrypts a sealed value.
func (s *Store) open(sealed []byte, id protocol.DocumentID, role string) ([]byte, error) {
	if !bytes.HasPrefix(sealed, magic) {
		return nil, fmt.Errorf("%s of %s: %w", role, id, ErrNotEncrypted)
	}
	rest := sealed[len(magic):]
	if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
		return nil, fmt.Errorf("%s of %s: %w (truncated header)", role, id, ErrDecrypt)
	}
	kid := string(rest[1 : 1+int(rest[0])])
	rest = rest[1+int(rest[0]):]
	aead, ok := s.aeads[kid]
	if !ok {
		return nil, fmt.Errorf("%s of %s: key %q: %w", role, id, kid, ErrUnknownKey)
	}
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%s of %s: %w (truncated)", role, id, ErrDecrypt)
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], aad(id, role))
	if err != nil {
		return nil, fmt.Errorf("%s of %s under key %q: %w", role, id, kid, ErrDecrypt)
	}
	return plain, nil
}

// StorageID is the inner store's.
func (s *Store) StorageID(ctx context.Context) (string, error) { return s.inner.StorageID(ctx) }

// LoadDoc loads and decrypts a document.
func (s *Store) LoadDoc(ctx context.Context, id protocol.DocumentID) (hub.StoredDoc, error) {
	sd, err := s.inner.LoadDoc(ctx, id)
	if err != nil {
		return sd, err
	}
	if len(sd.Snapshot) > 0 {
		if sd.Snapshot, err = s.open(sd.Snapshot, id, "snapshot"); err != nil {
			return hub.StoredDoc{}, fmt.Errorf("failed to load %s: %w", id, err)
		}
	}
	for i := range sd.Batches {
		if len(sd.Batches[i].Data) == 0 {
			continue // an empty batch only created the document
		}
		if sd.Batches[i].Data, err = s.open(sd.Batches[i].Data, id, "batch"); err != nil {
			return hub.StoredDoc{}, fmt.Errorf("failed to load %s: %w", id, err)
		}
	}
	return sd, nil
}

// AppendChanges seals batch and appends it. An empty batch stays empty: it
// only creates the document, and holds nothing to hide.
func (s *Store) AppendChanges(ctx context.Context, id protocol.DocumentID, batch []byte) (uint64, error) {
	if len(batch) > 0 {
		batch = s.sealValue(batch, id, "batch")
	}
	return s.inner.AppendChanges(ctx, id, batch)
}

// Compact seals the snapshot and compacts.
func (s *Store) Compact(ctx context.Context, id protocol.DocumentID, snapshot []byte, throughSeq uint64) error {
	if len(snapshot) > 0 {
		snapshot = s.sealValue(snapshot, id, "snapshot")
	}
	return s.inner.Compact(ctx, id, snapshot, throughSeq)
}

// DeleteDoc deletes the document.
func (s *Store) DeleteDoc(ctx context.Context, id protocol.DocumentID) error {
	return s.inner.DeleteDoc(ctx, id)
}

// SaveSyncState seals and saves a sync state.
func (s *Store) SaveSyncState(ctx context.Context, id protocol.DocumentID, storageID string, state []byte) error {
	return s.inner.SaveSyncState(ctx, id, storageID, s.sealValue(state, id, "sync state "+storageID))
}

// LoadSyncState loads and decrypts a sync state.
func (s *Store) LoadSyncState(ctx context.Context, id protocol.DocumentID, storageID string) ([]byte, error) {
	b, err := s.inner.LoadSyncState(ctx, id, storageID)
	if err != nil {
		return nil, err
	}
	return s.open(b, id, "sync state "+storageID)
}

// Close closes the inner store.
func (s *Store) Close() error { return s.inner.Close() }

// DocumentIDs lists the inner store's documents (ids are not encrypted:
// they are the keys the inner store files values under). It fails if the
// inner store cannot list its documents.
func (s *Store) DocumentIDs(ctx context.Context) ([]protocol.DocumentID, error) {
	l, ok := s.inner.(interface {
		DocumentIDs(context.Context) ([]protocol.DocumentID, error)
	})
	if !ok {
		return nil, fmt.Errorf("failed to list documents: the inner store %T cannot list its documents", s.inner)
	}
	return l.DocumentIDs(ctx)
}
