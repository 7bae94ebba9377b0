package boltauth

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/plaithub/plait/server/auth"
)

func benchTokens(b *testing.B) *auth.Tokens {
	s, err := Open(filepath.Join(b.TempDir(), "auth.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	keys, err := auth.NewKeys([]auth.Key{{ID: "k1", Secret: make([]byte, 32)}})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := auth.NewTokens(auth.TokenOptions{Keys: keys, Store: s})
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// BenchmarkVerifyAccess is what every WebSocket upgrade and API call pays
// on a single node: the JWT check plus the revocation lookups in bbolt.
func BenchmarkVerifyAccess(b *testing.B) {
	tok := benchTokens(b)
	p, err := tok.Login(context.Background(), "oidc:bench")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tok.VerifyAccess(context.Background(), p.Access); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRefresh is one rotation: MAC check, a bbolt write (fsync), two
// signatures.
func BenchmarkRefresh(b *testing.B) {
	tok := benchTokens(b)
	p, err := tok.Login(context.Background(), "oidc:bench")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if p, err = tok.Refresh(context.Background(), p.Refresh); err != nil {
			b.Fatal(err)
		}
	}
}
