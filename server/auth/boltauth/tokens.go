package boltauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plaithub/plait/server/auth"
)

// family is the stored form of an auth.Family (the id is the key).
type family struct {
	User    string    `json:"user"`
	Gen     uint64    `json:"gen"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Revoked bool      `json:"revoked,omitempty"`
}

func (f family) public(id string) auth.Family {
	return auth.Family{ID: id, User: f.User, Gen: f.Gen, Created: f.Created, Expires: f.Expires, Revoked: f.Revoked}
}

func getFamily(tx *bolt.Tx, id string) (family, error) {
	return getRecord[family](tx, bucketFamilies, []byte(id), "family", auth.ErrNotFound)
}

func putFamily(tx *bolt.Tx, id string, f family) error {
	return putRecord(tx, bucketFamilies, []byte(id), f)
}

// famExpKey is the sweep index key of family id expiring at exp.
func famExpKey(exp time.Time, id string) []byte {
	return append(timeKey(exp.Add(FamilyRetention)), id...)
}

// CreateFamily stores f. An id already taken is refused (overwriting it
// could un-revoke a family).
func (s *Store) CreateFamily(ctx context.Context, f auth.Family) error {
	if f.ID == "" || f.User == "" {
		return fmt.Errorf("failed to create family %q: empty id or user", f.ID)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketFamilies).Get([]byte(f.ID)) != nil {
			return errFamilyExists
		}
		rec := family{User: f.User, Gen: f.Gen, Created: f.Created, Expires: f.Expires, Revoked: f.Revoked}
		if err := putFamily(tx, f.ID, rec); err != nil {
			return err
		}
		return tx.Bucket(bucketFamExp).Put(famExpKey(f.Expires, f.ID), nil)
	})
	if err != nil {
		return fmt.Errorf("failed to create family %q: %w", f.ID, err)
	}
	return nil
}

// Rotate moves the family to gen+1 in one transaction, which serializes
// concurrent rotations: the first wins, and the others find an older
// generation, a reuse. A reuse commits the revocation before ErrTokenReused
// returns.
func (s *Store) Rotate(ctx context.Context, id string, gen uint64, exp time.Time) (auth.Family, error) {
	var out auth.Family
	var refused error // an outcome that still commits (the reuse's revocation)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		refused = nil
		f, err := getFamily(tx, id)
		if err != nil {
			return err
		}
		switch {
		case gen < f.Gen:
			refused = auth.ErrTokenReused
			if f.Revoked {
				return nil
			}
			f.Revoked = true
			return putFamily(tx, id, f)
		case f.Revoked:
			return auth.ErrRevoked
		case gen > f.Gen:
			return fmt.Errorf("generation %d is newer than the stored %d: %w", gen, f.Gen, auth.ErrRevoked)
		case !time.Now().Before(f.Expires):
			return auth.ErrExpired
		}
		fe := tx.Bucket(bucketFamExp)
		if err := fe.Delete(famExpKey(f.Expires, id)); err != nil {
			return err
		}
		f.Gen++
		f.Expires = exp
		if err := fe.Put(famExpKey(exp, id), nil); err != nil {
			return err
		}
		out = f.public(id)
		return putFamily(tx, id, f)
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return auth.Family{}, fmt.Errorf("failed to rotate family %q: %w", id, err)
	}
	return out, nil
}

// Family returns the stored family id.
func (s *Store) Family(ctx context.Context, id string) (auth.Family, error) {
	var out auth.Family
	err := s.view(ctx, func(tx *bolt.Tx) error {
		f, err := getFamily(tx, id)
		out = f.public(id)
		return err
	})
	if err != nil {
		return auth.Family{}, fmt.Errorf("failed to read family %q: %w", id, err)
	}
	return out, nil
}

// RevokeFamily marks family id revoked.
func (s *Store) RevokeFamily(ctx context.Context, id string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		f, err := getFamily(tx, id)
		if err != nil || f.Revoked {
			return err
		}
		f.Revoked = true
		return putFamily(tx, id, f)
	})
	if err != nil {
		return fmt.Errorf("failed to revoke family %q: %w", id, err)
	}
	return nil
}

func getCutoff(tx *bolt.Tx, user string) (time.Time, bool, error) {
	v := tx.Bucket(bucketCutoffs).Get([]byte(user))
	if v == nil {
		return time.Time{}, false, nil
	}
	var at time.Time
	if err := at.UnmarshalBinary(v); err != nil {
		return time.Time{}, false, fmt.Errorf("malformed cut-off: %w", err)
	}
	return at, true, nil
}

// RevokeUser moves user's cut-off to at, unless it is at or after at
// already.
func (s *Store) RevokeUser(ctx context.Context, user string, at time.Time) error {
	if user == "" {
		return errors.New("failed to revoke user: empty user")
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		cur, ok, err := getCutoff(tx, user)
		if err != nil || (ok && !cur.Before(at)) {
			return err
		}
		v, err := at.MarshalBinary()
		if err != nil {
			return err
		}
		return tx.Bucket(bucketCutoffs).Put([]byte(user), v)
	})
	if err != nil {
		return fmt.Errorf("failed to revoke user %q: %w", user, err)
	}
	return nil
}

// Revoked reads the family and the user's cut-off in one read
// transaction. A family issued to another user than the token names counts
// as revoked too (fail closed: that token was not issued by this store).
func (s *Store) Revoked(ctx context.Context, user, familyID string, issuedAt time.Time) (bool, error) {
	revoked := true
	err := s.view(ctx, func(tx *bolt.Tx) error {
		f, err := getFamily(tx, familyID)
		if errors.Is(err, auth.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if f.Revoked || f.User != user {
			return nil
		}
		cut, ok, err := getCutoff(tx, user)
		if err != nil {
			return err
		}
		revoked = ok && !issuedAt.After(cut)
		return nil
	})
	if err != nil {
		return true, fmt.Errorf("failed to check revocation of family %q: %w", familyID, err)
	}
	return revoked, nil
}

// ConsumeOnce records key until ttl has passed, in one transaction: of
// concurrent calls, the first reports true. A key whose ttl has passed is
// recorded anew even if the sweeper has not deleted it yet.
func (s *Store) ConsumeOnce(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if key == "" || ttl <= 0 {
		return false, fmt.Errorf("failed to consume key %q: empty key or ttl %v not positive", key, ttl)
	}
	var fresh bool
	err := s.update(ctx, func(tx *bolt.Tx) error {
		now := time.Now()
		once, idx := tx.Bucket(bucketOnce), tx.Bucket(bucketOnceExp)
		if v := once.Get([]byte(key)); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("malformed expiry %x", v)
			}
			if bytes.Compare(timeKey(now), v) < 0 {
				fresh = false
				return nil // a replay
			}
			if err := idx.Delete(append(bytes.Clone(v), key...)); err != nil {
				return err
			}
		}
		exp := timeKey(now.Add(ttl))
		if err := once.Put([]byte(key), exp); err != nil {
			return err
		}
		fresh = true
		return idx.Put(append(exp, key...), nil)
	})
	if err != nil {
		return false, fmt.Errorf("failed to consume key %q: %w", key, err)
	}
	return fresh, nil
}
