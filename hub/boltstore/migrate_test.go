package boltstore_test

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/plaithub/plait/hub/boltstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// TestMigrateVersion1 opens a file written in the version 1 layout (each
// snapshot in its document's bucket): every document keeps its snapshot,
// batches and compaction version, the file says version 2, and a second
// Open finds nothing left to move.
func TestMigrateVersion1(t *testing.T) {
	t.Run("one step", func(t *testing.T) { testMigrateVersion1(t) })
	t.Run("steps of one snapshot", func(t *testing.T) {
		// Each step moves at least one snapshot, then stops: four steps,
		// and a fifth that finds nothing left and sets the version.
		defer boltstore.SetMigrateBytes(1)()
		testMigrateVersion1(t)
	})
}

func testMigrateVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plait.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	seq := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	snap := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 3000+i) }
	const n = 5
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket([]byte("meta"))
		if err := meta.Put([]byte("version"), []byte("1")); err != nil {
			return err
		}
		if err := meta.Put([]byte("storageID"), []byte("storage-v1")); err != nil {
			return err
		}
		if _, err := tx.CreateBucket([]byte("syncstates")); err != nil {
			return err
		}
		docs, _ := tx.CreateBucket([]byte("docs"))
		for i := range n {
			d, err := docs.CreateBucket([]byte{'d', byte('0' + i)})
			if err != nil {
				return err
			}
			b, _ := d.CreateBucket([]byte("batches"))
			if err := d.SetSequence(2); err != nil {
				return err
			}
			if err := b.Put(seq(2), []byte("batch-2")); err != nil {
				return err
			}
			if i == n-1 {
				continue // never compacted: no snapshot
			}
			if err := d.Put([]byte("compactedThrough"), seq(1)); err != nil {
				return err
			}
			if err := d.Put([]byte("snapshot"), snap(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	for round := range 2 {
		s, err := boltstore.Open(path, boltstore.Options{})
		if err != nil {
			t.Fatalf("open %d: %v", round, err)
		}
		if id, _ := s.StorageID(t.Context()); id != "storage-v1" {
			t.Fatalf("storage id %q", id)
		}
		for i := range n {
			id := protocol.DocumentID([]byte{'d', byte('0' + i)})
			sd, err := s.LoadDoc(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			want := snap(i)
			if i == n-1 {
				want = nil
			}
			if !bytes.Equal(sd.Snapshot, want) || len(sd.Batches) != 1 || string(sd.Batches[0].Data) != "batch-2" {
				t.Fatalf("round %d, %s: snapshot of %d bytes (want %d), batches %v", round, id, len(sd.Snapshot), len(want), sd.Batches)
			}
			// The compaction version survived: compacting through 1 again
			// conflicts, through 2 works and the snapshot is replaced.
			if round == 0 && i == 0 {
				if err := s.Compact(t.Context(), id, []byte("new"), 1); err == nil {
					t.Fatal("a compaction through an already compacted seq was accepted")
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket([]byte("meta")).Get([]byte("version"))); v != "2" {
			t.Errorf("version %q after migration", v)
		}
		c := tx.Bucket([]byte("docs")).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if tx.Bucket([]byte("docs")).Bucket(k).Get([]byte("snapshot")) != nil {
				t.Errorf("%s still has a snapshot in its bucket", k)
			}
		}
		return nil
	})
}
