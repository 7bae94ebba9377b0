package cryptstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/boltstore"
	"github.com/plaithub/plait/hub/cryptstore"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/hub/storetest"
	"github.com/plaithub/plait/pkg/protocol"
)

func key(id string) cryptstore.Key {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return cryptstore.Key{ID: id, Secret: b}
}

func wrap(t *testing.T, inner hub.Store, keys ...cryptstore.Key) *cryptstore.Store {
	t.Helper()
	s, err := cryptstore.New(inner, keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformanceOverMemstore(t *testing.T) {
	k := key("k1")
	storetest.RunStoreTests(t, func(t *testing.T) hub.Store { return wrap(t, memstore.New(), k) })
}

func TestConformanceOverBoltstore(t *testing.T) {
	k := key("k1")
	storetest.RunStoreTests(t, func(t *testing.T) hub.Store {
		b, err := boltstore.Open(filepath.Join(t.TempDir(), "p.db"), boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return wrap(t, b, k)
	})
	storetest.RunPersistenceTests(t, func(t *testing.T, dir string) hub.Store {
		b, err := boltstore.Open(filepath.Join(dir, "p.db"), boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return wrap(t, b, k)
	})
}

var marker = []byte("PLAINTEXT-MARKER-4f1c")

// everything writes a marker into every kind of value.
func everything(t *testing.T, s hub.Store, id protocol.DocumentID) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.AppendChanges(ctx, id, append([]byte("batch "), marker...)); err != nil {
		t.Fatal(err)
	}
	seq, err := s.AppendChanges(ctx, id, append([]byte("batch 2 "), marker...))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx, id, append([]byte("snapshot "), marker...), seq-1); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSyncState(ctx, id, "peer-storage", append([]byte("state "), marker...)); err != nil {
		t.Fatal(err)
	}
}

func TestNoPlaintextAtRest(t *testing.T) {
	inner := memstore.New()
	s := wrap(t, inner, key("k1"))
	id := protocol.NewDocumentID()
	everything(t, s, id)
	raw, err := inner.LoadDoc(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := inner.LoadSyncState(context.Background(), id, "peer-storage")
	for _, b := range append([][]byte{raw.Snapshot, st}, raw.Batches[0].Data) {
		if bytes.Contains(b, marker) || !bytes.HasPrefix(b, []byte("PLE1")) {
			t.Fatalf("stored value %q holds plaintext or is not sealed", b)
		}
	}
	got, err := s.LoadDoc(context.Background(), id)
	if err != nil || !bytes.HasSuffix(got.Snapshot, marker) || !bytes.HasSuffix(got.Batches[0].Data, marker) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

func TestWrongKeyIsAClearError(t *testing.T) {
	inner := memstore.New()
	id := protocol.NewDocumentID()
	everything(t, wrap(t, inner, key("k1")), id)
	ctx := context.Background()

	_, err := wrap(t, inner, key("k1")).LoadDoc(ctx, id) // same id, other secret
	if !errors.Is(err, cryptstore.ErrDecrypt) {
		t.Fatalf("LoadDoc with a wrong key: %v, want ErrDecrypt", err)
	}
	_, err = wrap(t, inner, key("k2")).LoadDoc(ctx, id)
	if !errors.Is(err, cryptstore.ErrUnknownKey) || !strings.Contains(err.Error(), `"k1"`) {
		t.Fatalf("LoadDoc without the key: %v, want ErrUnknownKey naming k1", err)
	}
	if _, err := wrap(t, inner, key("k1")).LoadSyncState(ctx, id, "peer-storage"); !errors.Is(err, cryptstore.ErrDecrypt) {
		t.Fatalf("LoadSyncState with a wrong key: %v", err)
	}
	plain := memstore.New()
	pid := protocol.NewDocumentID()
	if _, err := plain.AppendChanges(ctx, pid, []byte("not sealed")); err != nil {
		t.Fatal(err)
	}
	if _, err := wrap(t, plain, key("k1")).LoadDoc(ctx, pid); !errors.Is(err, cryptstore.ErrNotEncrypted) {
		t.Fatalf("LoadDoc of an unencrypted store: %v, want ErrNotEncrypted", err)
	}
}

func TestKeyRotation(t *testing.T) {
	inner := memstore.New()
	k1, k2 := key("k1"), key("k2")
	ctx := context.Background()
	id := protocol.NewDocumentID()
	everything(t, wrap(t, inner, k1), id)
	rotated := wrap(t, inner, k2, k1)
	if _, err := rotated.LoadDoc(ctx, id); err != nil {
		t.Fatalf("old data under the rotated keys: %v", err)
	}
	seq, err := rotated.AppendChanges(ctx, id, []byte("new batch"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := inner.LoadDoc(ctx, id)
	if last := raw.Batches[len(raw.Batches)-1].Data; !bytes.HasPrefix(last, []byte("PLE1\x02k2")) {
		t.Fatalf("new data sealed with %q, want key k2 first", last[:8])
	}
	// Compaction rewrites the document under the new key; then k1 can go.
	sd, err := rotated.LoadDoc(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := rotated.Compact(ctx, id, bytes.Join([][]byte{sd.Snapshot, sd.Batches[0].Data}, nil), seq); err != nil {
		t.Fatal(err)
	}
	if err := rotated.SaveSyncState(ctx, id, "peer-storage", []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	if _, err := wrap(t, inner, k2).LoadDoc(ctx, id); err != nil {
		t.Fatalf("after compaction the old key is not needed: %v", err)
	}
}

func TestValuesAreBoundToTheirPlace(t *testing.T) {
	inner := memstore.New()
	s := wrap(t, inner, key("k1"))
	ctx := context.Background()
	a, b := protocol.NewDocumentID(), protocol.NewDocumentID()
	if _, err := s.AppendChanges(ctx, a, []byte("a's change")); err != nil {
		t.Fatal(err)
	}
	raw, _ := inner.LoadDoc(ctx, a)
	// Someone with write access to the store copies a's batch into b.
	if _, err := inner.AppendChanges(ctx, b, raw.Batches[0].Data); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadDoc(ctx, b); !errors.Is(err, cryptstore.ErrDecrypt) {
		t.Fatalf("a batch copied to another document: %v, want ErrDecrypt", err)
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	for name, keys := range map[string][]cryptstore.Key{
		"none":      nil,
		"short":     {{ID: "k", Secret: make([]byte, 16)}},
		"bad id":    {{ID: "k:1", Secret: make([]byte, 32)}},
		"duplicate": {{ID: "k", Secret: make([]byte, 32)}, {ID: "k", Secret: make([]byte, 32)}},
	} {
		if _, err := cryptstore.New(memstore.New(), keys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseKeyFile(t *testing.T) {
	s1, s2 := make([]byte, 32), make([]byte, 32)
	s2[0] = 1
	f := "# keys\nnew:" + base64.StdEncoding.EncodeToString(s2) + "\n\nold: " + base64.StdEncoding.EncodeToString(s1) + "\n"
	keys, err := cryptstore.ParseKeyFile([]byte(f))
	if err != nil || len(keys) != 2 || keys[0].ID != "new" || keys[1].ID != "old" || keys[0].Secret[0] != 1 {
		t.Fatalf("ParseKeyFile: %+v, %v", keys, err)
	}
	for _, bad := range []string{"", "# only a comment\n", "k1\n", "k1:!!!\n", "k1:" + base64.StdEncoding.EncodeToString(make([]byte, 16))} {
		if _, err := cryptstore.ParseKeyFile([]byte(bad)); err == nil {
			t.Errorf("ParseKeyFile(%q) accepted", bad)
		}
	}
}

func TestDocumentIDs(t *testing.T) {
	k := key("k1")
	storetest.RunListTests(t, func(t *testing.T) storetest.ListStore { return wrap(t, memstore.New(), k) })
	storetest.RunListTests(t, func(t *testing.T) storetest.ListStore {
		b, err := boltstore.Open(filepath.Join(t.TempDir(), "p.db"), boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return wrap(t, b, k)
	})
}
