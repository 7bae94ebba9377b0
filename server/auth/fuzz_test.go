package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plaithub/plait/server/auth"
)

// Fuzz targets for the decoders of what clients send: the sealed login
// cookie and Plait's own access and refresh tokens. None may panic, and
// every refusal must be one of the documented errors.

func FuzzOpenSealed(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	s := auth.NewSealer(testKeys(f, "new", "old"))
	old := auth.NewSealer(testKeys(f, "old"))
	for _, v := range []any{
		map[string]string{"p": "oidc", "s": "state", "r": "/"},
		"a string", 42, nil,
	} {
		for _, sl := range []*auth.Sealer{s, old} {
			sealed, err := sl.Seal("plait_login", v, now.Add(time.Hour))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(sealed)
		}
	}
	expired, _ := s.Seal("plait_login", "x", now.Add(-time.Second))
	other, _ := s.Seal("another purpose", "x", now.Add(time.Hour))
	f.Add(expired)
	f.Add(other)
	f.Add("")
	f.Add("AQ")
	f.Add(strings.Repeat("A", 40))
	f.Fuzz(func(t *testing.T, in string) {
		var v any
		err := s.Open("plait_login", in, &v, now)
		if err != nil && !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("Open(%q) = %v: not ErrInvalidToken", in, err)
		}
		var m map[string]string
		if err := s.Open("plait_login", in, &m, now); err != nil && !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("Open(%q) into a map = %v: not ErrInvalidToken", in, err)
		}
	})
}

// fuzzTokens makes Tokens and valid seeds: pairs issued by its first
// key, by its second key, by a key it does not have, and a pair whose
// access token has expired.
func fuzzTokens(f *testing.F) (*auth.Tokens, []auth.Pair) {
	f.Helper()
	now := time.Unix(1_800_000_000, 0)
	clock := now.Add(-auth.DefaultAccessTTL - time.Minute)
	mk := func(keys auth.Keys) *auth.Tokens {
		tok, err := auth.NewTokens(auth.TokenOptions{Keys: keys, Store: newStore(f), Now: func() time.Time { return clock }})
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	tok := mk(testKeys(f, "k1", "k0"))
	login := func(t *auth.Tokens) auth.Pair {
		p, err := t.Login(context.Background(), "oidc:fuzz-user")
		if err != nil {
			f.Fatal(err)
		}
		return p
	}
	pairs := []auth.Pair{login(tok)} // expired by the time the target runs
	clock = now
	pairs = append(pairs, login(tok), login(mk(testKeys(f, "k0"))), login(mk(testKeys(f, "k9"))))
	return tok, pairs
}

func FuzzParseAccess(f *testing.F) {
	tok, pairs := fuzzTokens(f)
	for _, p := range pairs {
		f.Add(p.Access)
		f.Add(p.Refresh)
	}
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, in string) {
		a, err := tok.ParseAccess(in)
		switch {
		case err == nil, errors.Is(err, auth.ErrAccessExpired):
			if a.User == "" || a.Family == "" || a.IssuedAt.IsZero() || a.Expires.IsZero() {
				t.Fatalf("ParseAccess(%q) accepted a token without claims: %+v, %v", in, a, err)
			}
		case !errors.Is(err, auth.ErrInvalidToken):
			t.Fatalf("ParseAccess(%q) = %v: not ErrInvalidToken", in, err)
		}
	})
}

func FuzzParseRefresh(f *testing.F) {
	tok, pairs := fuzzTokens(f)
	for _, p := range pairs {
		f.Add(p.Refresh)
		f.Add(p.Access)
	}
	f.Add("")
	f.Add("pr1...")
	f.Add("pr1.AAAAAAAAAAAAAAAAAAAAAA.0.AAAA")
	f.Fuzz(func(t *testing.T, in string) {
		fam, gen, err := tok.ParseRefresh(in)
		if err != nil {
			if !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("ParseRefresh(%q) = %v: not ErrInvalidToken", in, err)
			}
			return
		}
		if fam == "" || !strings.Contains(in, fam) {
			t.Fatalf("ParseRefresh(%q) = %q, %d", in, fam, gen)
		}
	})
}

// The seeds are what the fuzz targets mean to exercise: check that the
// valid ones are valid, so a change that refuses every token shows here.
func TestFuzzSeedsAreValid(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := now
	keys := testKeys(t, "k1", "k0")
	tok, err := auth.NewTokens(auth.TokenOptions{Keys: keys, Store: newStore(t), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	p, err := tok.Login(context.Background(), "oidc:fuzz-user")
	if err != nil {
		t.Fatal(err)
	}
	if a, err := tok.ParseAccess(p.Access); err != nil || a.User != "oidc:fuzz-user" {
		t.Errorf("fresh access token: %+v, %v", a, err)
	}
	if fam, _, err := tok.ParseRefresh(p.Refresh); err != nil || fam != p.Family {
		t.Errorf("fresh refresh token: %q, %v", fam, err)
	}
	clock = now.Add(auth.DefaultAccessTTL + time.Minute)
	if _, err := tok.ParseAccess(p.Access); !errors.Is(err, auth.ErrAccessExpired) {
		t.Errorf("expired access token: %v", err)
	}
	other, err := auth.NewTokens(auth.TokenOptions{Keys: testKeys(t, "k9"), Store: newStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.ParseRefresh(p.Refresh); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("refresh token of other keys: %v", err)
	}
}
