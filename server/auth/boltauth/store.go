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

// getRecord reads the JSON record at key in bucket; notFound if there is
// none. what names the record in errors.
func getRecord[T any](tx *bolt.Tx, bucket, key []byte, what string, notFound error) (T, error) {
	var rec T
	v := tx.Bucket(bucket).Get(key)
	if v == nil {
		return rec, notFound
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		var zero T
		return zero, fmt.Errorf("malformed %s record: %w", what, err)
	}
	return rec, nil
}

// putRecord stores rec as JSON at key in bucket.
func putRecord(tx *bolt.Tx, bucket, key []byte, rec any) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(key, v)
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
