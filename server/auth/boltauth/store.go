package boltauth

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
)

const (
	// SweepInterval is how often the sweeper deletes expired ConsumeOnce
	// keys and families past their retention.
	SweepInterval = time.Minute

	// FamilyRetention is how long a family is kept after it expired. Its
	// refresh token is dead from the expiry on; the access tokens issued
	// from it live minutes. A day leaves Family answering for a while (an
	// expired login shows as expired, not unknown) and costs little.
	FamilyRetention = 24 * time.Hour

	// lockTimeout is how long Open waits for the file lock.
	lockTimeout = 5 * time.Second

	// sweepBatch is the most entries one sweeping transaction deletes, so
	// that a long backlog does not hold the writer lock for long.
	sweepBatch = 1000

	formatVersion = "1"
)

// ErrClosed is returned by every call made after Close. It is
// hub.ErrStoreClosed, as for the document stores.
var ErrClosed = hub.ErrStoreClosed

// ErrLocked is returned by Open when another process (or another Store in
// this one) has held the file for several seconds.
var ErrLocked = errors.New("boltauth: file is locked by another store")

// errFamilyExists refuses a CreateFamily whose id is taken: overwriting
// would un-revoke a revoked family.
var errFamilyExists = errors.New("family already exists")

// Bucket and key names; see the layout in the package doc.
var (
	bucketMeta     = []byte("meta")
	bucketFamilies = []byte("families")
	bucketFamExp   = []byte("famexp")
	bucketCutoffs  = []byte("cutoffs")
	bucketOnce     = []byte("once")
	bucketOnceExp  = []byte("onceexp")
	bucketDocs     = []byte("docs")
	bucketUserDocs = []byte("userdocs")
	keyVersion     = []byte("version")
)

var (
	_ auth.TokenStore = (*Store)(nil)
	_ access.ACL      = (*Store)(nil)
)

// Store is an auth.TokenStore and access.ACL in a bbolt file. Create it with
// Open.
type Store struct {
	db     *bolt.DB
	closed atomic.Bool
	stop   chan struct{} // closed by Close: the sweeper returns
	swept  sync.WaitGroup
}

// Open opens the store in the file at path, creating it (and its
// directory) if needed, and starts the sweeper. Only one Store may have a
// file open at a time: Open waits a few seconds for the file lock, then
// fails with ErrLocked.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("failed to create directory for %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("failed to open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketFamilies, bucketFamExp, bucketCutoffs, bucketOnce, bucketOnceExp, bucketDocs, bucketUserDocs} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		switch v := meta.Get(keyVersion); {
		case v == nil:
			return meta.Put(keyVersion, []byte(formatVersion))
		case string(v) != formatVersion:
			return fmt.Errorf("unsupported format version %q (want %q)", v, formatVersion)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to initialize %s: %w", path, err)
	}
	s := &Store{db: db, stop: make(chan struct{})}
	s.swept.Add(1)
	go s.sweeper()
	return s, nil
}

// Path returns the file the store is kept in.
func (s *Store) Path() string { return s.db.Path() }

// Close stops the sweeper, waits for transactions in flight and releases
// the file. Every later call, Close included, returns ErrClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(s.stop)
	s.swept.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("failed to close %s: %w", s.db.Path(), err)
	}
	return nil
}

// check reports why a call may not start: a closed store or a done
// context.
func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// update runs fn in a write transaction, after checking ctx again inside
// it: a call whose context ended while it waited for the writer lock
// writes nothing.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(tx)
	})
}

func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.db.View(fn)
}

// ---- TokenStore ----

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
	v := tx.Bucket(bucketFamilies).Get([]byte(id))
	if v == nil {
		return family{}, auth.ErrNotFound
	}
	var f family
	if err := json.Unmarshal(v, &f); err != nil {
		return family{}, fmt.Errorf("malformed family record: %w", err)
	}
	return f, nil
}

func putFamily(tx *bolt.Tx, id string, f family) error {
	v, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketFamilies).Put([]byte(id), v)
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

// ---- ACL ----

// docAccess is the stored form of an access.DocAccess: roles by name.
type docAccess struct {
	Users   map[string]string `json:"users"`
	Link    string            `json:"link"`
	Created time.Time         `json:"created"`
}

func getDoc(tx *bolt.Tx, doc protocol.DocumentID) (docAccess, error) {
	v := tx.Bucket(bucketDocs).Get([]byte(doc))
	if v == nil {
		return docAccess{}, access.ErrNotFound
	}
	var d docAccess
	if err := json.Unmarshal(v, &d); err != nil {
		return docAccess{}, fmt.Errorf("malformed access record: %w", err)
	}
	if d.Users == nil {
		d.Users = make(map[string]string)
	}
	return d, nil
}

func putDoc(tx *bolt.Tx, doc protocol.DocumentID, d docAccess) error {
	v, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketDocs).Put([]byte(doc), v)
}

// index sets user's role on doc in the user's docs index; RoleNone
// removes the entry, and the user's bucket when it is empty.
func index(tx *bolt.Tx, user string, doc protocol.DocumentID, role hub.Role) error {
	ud := tx.Bucket(bucketUserDocs)
	if role == hub.RoleNone {
		b := ud.Bucket([]byte(user))
		if b == nil {
			return nil
		}
		if err := b.Delete([]byte(doc)); err != nil {
			return err
		}
		if k, _ := b.Cursor().First(); k == nil {
			return ud.DeleteBucket([]byte(user))
		}
		return nil
	}
	b, err := ud.CreateBucketIfNotExists([]byte(user))
	if err != nil {
		return err
	}
	return b.Put([]byte(doc), []byte(role.String()))
}

// checkDoc reports why an ACL call on doc may not start.
func (s *Store) checkDoc(ctx context.Context, doc protocol.DocumentID) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return hub.CheckStoreCall(ctx, false, doc)
}

// Claim stores the document's access with user its only owner, and the
// user's index entry, in one transaction.
func (s *Store) Claim(ctx context.Context, doc protocol.DocumentID, user string, at time.Time) error {
	if err := s.checkDoc(ctx, doc); err != nil {
		return fmt.Errorf("failed to claim %s: %w", doc, err)
	}
	if user == "" {
		return fmt.Errorf("failed to claim %s: empty user", doc)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketDocs).Get([]byte(doc)) != nil {
			return access.ErrClaimed
		}
		d := docAccess{Users: map[string]string{user: hub.RoleOwner.String()}, Link: hub.RoleNone.String(), Created: at}
		if err := putDoc(tx, doc, d); err != nil {
			return err
		}
		return index(tx, user, doc, hub.RoleOwner)
	})
	if err != nil {
		return fmt.Errorf("failed to claim %s: %w", doc, err)
	}
	return nil
}

// Share changes the document's access and the user's index entry in one
// transaction.
func (s *Store) Share(ctx context.Context, doc protocol.DocumentID, user string, role hub.Role) error {
	if err := s.checkDoc(ctx, doc); err != nil {
		return fmt.Errorf("failed to share %s: %w", doc, err)
	}
	if user == "" {
		return fmt.Errorf("failed to share %s: empty user", doc)
	}
	if role < hub.RoleNone || role > hub.RoleOwner {
		return fmt.Errorf("failed to share %s: role %d: %w", doc, int(role), access.ErrInvalidRole)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		d, err := getDoc(tx, doc)
		if err != nil {
			return err
		}
		owner := hub.RoleOwner.String()
		if d.Users[user] == owner && role != hub.RoleOwner {
			owners := 0
			for _, r := range d.Users {
				if r == owner {
					owners++
				}
			}
			if owners == 1 {
				return access.ErrLastOwner
			}
		}
		if role == hub.RoleNone {
			delete(d.Users, user)
		} else {
			d.Users[user] = role.String()
		}
		if err := putDoc(tx, doc, d); err != nil {
			return err
		}
		return index(tx, user, doc, role)
	})
	if err != nil {
		return fmt.Errorf("failed to share %s with %q: %w", doc, user, err)
	}
	return nil
}

// SetLink sets the document's link role.
func (s *Store) SetLink(ctx context.Context, doc protocol.DocumentID, role hub.Role) error {
	if err := s.checkDoc(ctx, doc); err != nil {
		return fmt.Errorf("failed to set the link role of %s: %w", doc, err)
	}
	if role != hub.RoleNone && role != hub.RoleViewer && role != hub.RoleEditor {
		return fmt.Errorf("failed to set the link role of %s: role %d: %w", doc, int(role), access.ErrInvalidRole)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		d, err := getDoc(tx, doc)
		if err != nil {
			return err
		}
		d.Link = role.String()
		return putDoc(tx, doc, d)
	})
	if err != nil {
		return fmt.Errorf("failed to set the link role of %s: %w", doc, err)
	}
	return nil
}

// Access returns a copy of the document's access.
func (s *Store) Access(ctx context.Context, doc protocol.DocumentID) (access.DocAccess, error) {
	if err := s.checkDoc(ctx, doc); err != nil {
		return access.DocAccess{}, fmt.Errorf("failed to read access to %s: %w", doc, err)
	}
	var out access.DocAccess
	err := s.view(ctx, func(tx *bolt.Tx) error {
		d, err := getDoc(tx, doc)
		if err != nil {
			return err
		}
		out = access.DocAccess{Users: make(map[string]hub.Role, len(d.Users)), Created: d.Created}
		for u, name := range d.Users {
			r, err := access.ParseRole(name)
			if err != nil || r == hub.RoleNone {
				return fmt.Errorf("malformed role of %q: %q", u, name)
			}
			out.Users[u] = r
		}
		out.Link, err = access.ParseRole(d.Link)
		return err
	})
	if err != nil {
		return access.DocAccess{}, fmt.Errorf("failed to read access to %s: %w", doc, err)
	}
	return out, nil
}

// DocsOf reads the user's index, which is in document id order.
func (s *Store) DocsOf(ctx context.Context, user string) ([]access.UserDoc, error) {
	var out []access.UserDoc
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUserDocs).Bucket([]byte(user))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			r, err := access.ParseRole(string(v))
			if err != nil {
				return err
			}
			out = append(out, access.UserDoc{ID: protocol.DocumentID(k), Role: r})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list the documents of %q: %w", user, err)
	}
	return out, nil
}

// ---- expiry ----

// sweeper deletes expired entries now and every SweepInterval until Close.
func (s *Store) sweeper() {
	defer s.swept.Done()
	tick := time.NewTicker(SweepInterval)
	defer tick.Stop()
	for {
		// An error (a full disk, say) is left for the next round: the
		// entries stay where they are, and ConsumeOnce ignores expired keys.
		_ = s.sweep(time.Now())
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
	}
}

// sweep deletes every ConsumeOnce key that expired at or before now, and
// every family whose retention ended then, sweepBatch entries per
// transaction.
func (s *Store) sweep(now time.Time) error {
	for _, b := range [][2][]byte{{bucketOnceExp, bucketOnce}, {bucketFamExp, bucketFamilies}} {
		for {
			if s.closed.Load() {
				return ErrClosed
			}
			var n int
			err := s.db.Update(func(tx *bolt.Tx) error {
				var err error
				n, err = sweepIndex(tx.Bucket(b[0]), tx.Bucket(b[1]), timeKey(now))
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to sweep %s: %w", b[1], err)
			}
			if n < sweepBatch {
				break
			}
		}
	}
	return nil
}

// sweepIndex deletes up to sweepBatch index entries due at or before
// until, with the data they index. Index keys are an 8-byte time followed
// by the data key.
func sweepIndex(idx, data *bolt.Bucket, until []byte) (int, error) {
	var doomed [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && len(doomed) < sweepBatch; k, _ = c.Next() {
		if len(k) < 8 || bytes.Compare(k[:8], until) > 0 {
			break
		}
		doomed = append(doomed, bytes.Clone(k))
	}
	for _, k := range doomed {
		if err := idx.Delete(k); err != nil {
			return 0, err
		}
		if err := data.Delete(k[8:]); err != nil {
			return 0, err
		}
	}
	return len(doomed), nil
}

// timeKey encodes t as 8 bytes that sort in time order: Unix nanoseconds,
// big-endian, with the sign bit flipped. Times beyond what int64
// nanoseconds hold (before 1678, after 2262) are clamped.
func timeKey(t time.Time) []byte {
	var n int64
	switch {
	case t.Before(minTime):
		n = math.MinInt64
	case t.After(maxTime):
		n = math.MaxInt64
	default:
		n = t.UnixNano()
	}
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(n)^(1<<63))
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)
