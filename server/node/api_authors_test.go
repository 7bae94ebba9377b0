package node

import (
	"testing"
	"time"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/jsonpatch"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/content"
)

// TestAuthorSeal: the author sealed into an API change reads back only
// for that document, that change's actor and seq, and the node's keys: a
// client that copies the seal into its own change, or into another
// document, names nobody.
func TestAuthorSeal(t *testing.T) {
	keys, err := auth.NewKeys([]auth.Key{{ID: "k1", Secret: make([]byte, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	d := &docAPI{authors: auth.NewSealer(keys)}
	ops, err := jsonpatch.Parse([]byte(`[{"op":"add","path":"/a","value":1}]`), jsonpatch.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	edit := func() ([]byte, [32]byte) {
		chunk, hash, err := content.Edit(nil, ops, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return chunk, hash
	}
	parse := func(b []byte) *amsync.Change {
		c, err := amsync.ParseChange(b)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	chunk, hash := edit()
	sealed, newHash, err := d.attribute("doc1", "oidc:alice", chunk, hash)
	if err != nil {
		t.Fatal(err)
	}
	c := parse(sealed)
	if newHash == hash || [32]byte(c.Hash) != [32]byte(newHash) {
		t.Fatalf("hash %x, chunk's %x, before %x", newHash, c.Hash, hash)
	}
	if got := d.authorOf("doc1", c); got != "oidc:alice" {
		t.Fatalf("author %q", got)
	}
	if got := d.authorOf("doc2", c); got != "" {
		t.Fatalf("in another document: %q", got)
	}
	other, _ := edit() // another fresh actor
	copied, _, err := content.WithExtra(other, c.Extra)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.authorOf("doc1", parse(copied)); got != "" {
		t.Fatalf("a copied seal names %q", got)
	}
	tampered := append([]byte(nil), c.Extra...)
	tampered[len(tampered)-3] ^= 1
	forged, _, _ := content.WithExtra(chunk, tampered)
	if got := d.authorOf("doc1", parse(forged)); got != "" {
		t.Fatalf("a tampered seal names %q", got)
	}
	otherKeys, _ := auth.NewKeys([]auth.Key{{ID: "k1", Secret: append(make([]byte, 31), 1)}})
	if got := (&docAPI{authors: auth.NewSealer(otherKeys)}).authorOf("doc1", c); got != "" {
		t.Fatalf("other keys read %q", got)
	}
	if got := (&docAPI{}).authorOf("doc1", c); got != "" {
		t.Fatalf("an anonymous node reads %q", got)
	}
	if same, h, _ := (&docAPI{}).attribute("doc1", "oidc:alice", chunk, hash); string(same) != string(chunk) || h != hash {
		t.Fatalf("an anonymous node rewrote the change")
	}
}
