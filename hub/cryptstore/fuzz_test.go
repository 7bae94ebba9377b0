package cryptstore_test

import (
	"context"
	"testing"

	"github.com/plaithub/plait/hub/cryptstore"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// FuzzOpen: whatever bytes the inner store returns (a corrupted disk, a
// tampered Redis), opening them is an error or the exact sealed value,
// never a panic.
func FuzzOpen(f *testing.F) {
	k := cryptstore.Key{ID: "k1", Secret: make([]byte, 32)}
	f.Add([]byte("PLE1\x02k1"))
	f.Add([]byte("PLE1\xffk1"))
	f.Add([]byte("plain"))
	id := protocol.DocumentID("2ZbjFEhrMxXnBvGCUrvZ9LkzHxJ7")
	f.Fuzz(func(t *testing.T, b []byte) {
		inner := memstore.New()
		if _, err := inner.AppendChanges(context.Background(), id, b); err != nil {
			t.Fatal(err)
		}
		s, err := cryptstore.New(inner, []cryptstore.Key{k})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.LoadDoc(context.Background(), id)
	})
}
