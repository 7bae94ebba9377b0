package auth_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plaithub/plait/server/auth"
)

// testKeys makes auth keys with the given ids; a key's secret depends only
// on its id, so testKeys("new", "old") holds the same "old" key as
// testKeys("old").
func testKeys(t testing.TB, ids ...string) auth.Keys {
	t.Helper()
	var master []auth.Key
	for _, id := range ids {
		secret := bytes.Repeat([]byte(id+"."), 32)[:32]
		master = append(master, auth.Key{ID: id, Secret: secret})
	}
	k, err := auth.NewKeys(master)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type sealed struct {
	A string `json:"a"`
	B int    `json:"b"`
}

func TestSealRoundTrip(t *testing.T) {
	s := auth.NewSealer(testKeys(t, "k1"))
	now := time.Unix(1_800_000_000, 0)
	in := sealed{A: "hello", B: 42}
	v1, err := s.Seal("cookie-a", in, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.Seal("cookie-a", in, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if v1 == v2 {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
	if strings.ContainsAny(v1, ";, \"=\\+/") {
		t.Errorf("sealed value %q is not cookie-safe", v1)
	}
	for _, v := range []string{v1, v2} {
		var out sealed
		if err := s.Open("cookie-a", v, &out, now); err != nil {
			t.Fatal(err)
		}
		if out != in {
			t.Errorf("opened %+v, sealed %+v", out, in)
		}
	}
}

func TestSealTamper(t *testing.T) {
	s := auth.NewSealer(testKeys(t, "k1"))
	now := time.Unix(1_800_000_000, 0)
	v, err := s.Seal("p", sealed{A: "x"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one bit of every byte in turn: version, key tag, nonce,
	// ciphertext (expiry and JSON) and GCM tag.
	for i := range raw {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x01
		var out sealed
		err := s.Open("p", base64.RawURLEncoding.EncodeToString(bad), &out, now)
		if !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("byte %d flipped: Open = %v, want ErrInvalidToken", i, err)
		}
	}
	for name, bad := range map[string]string{
		"empty":     "",
		"not b64":   "!!!!" + v[4:],
		"padded":    v + "==",
		"truncated": v[:len(v)-4],
		"too short": base64.RawURLEncoding.EncodeToString(raw[:20]),
		"extended":  base64.RawURLEncoding.EncodeToString(append(bytes.Clone(raw), 0)),
		"too long":  strings.Repeat("A", 10000),
	} {
		var out sealed
		if err := s.Open("p", bad, &out, now); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s: Open = %v, want ErrInvalidToken", name, err)
		}
	}
}

func TestSealWrongPurpose(t *testing.T) {
	s := auth.NewSealer(testKeys(t, "k1"))
	now := time.Unix(1_800_000_000, 0)
	v, err := s.Seal("plait_login", sealed{A: "x"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var out sealed
	for _, p := range []string{"plait_other", "plait_login ", "", "plait_logi"} {
		if err := s.Open(p, v, &out, now); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("opened as %q: %v, want ErrInvalidToken", p, err)
		}
	}
	if err := s.Open("plait_login", v, &out, now); err != nil {
		t.Errorf("own purpose: %v", err)
	}
}

func TestSealExpired(t *testing.T) {
	s := auth.NewSealer(testKeys(t, "k1"))
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(10 * time.Minute)
	v, err := s.Seal("p", sealed{A: "x"}, exp)
	if err != nil {
		t.Fatal(err)
	}
	var out sealed
	if err := s.Open("p", v, &out, exp.Add(-time.Second)); err != nil {
		t.Errorf("a second before expiry: %v", err)
	}
	for _, at := range []time.Time{exp, exp.Add(time.Second), exp.Add(24 * time.Hour)} {
		if err := s.Open("p", v, &out, at); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("opened at %v, expiry %v: %v, want ErrInvalidToken", at, exp, err)
		}
	}
}

func TestSealKeyRotation(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	old := auth.NewSealer(testKeys(t, "old"))
	rotated := auth.NewSealer(testKeys(t, "new", "old"))
	newOnly := auth.NewSealer(testKeys(t, "new"))

	v, err := old.Seal("p", sealed{A: "before rotation"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var out sealed
	if err := rotated.Open("p", v, &out, now); err != nil || out.A != "before rotation" {
		t.Fatalf("sealed with the old first key, opened with it second: %+v, %v", out, err)
	}
	if err := newOnly.Open("p", v, &out, now); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("old key removed: %v, want ErrInvalidToken", err)
	}

	// The rotated sealer seals with its first key: the old nodes cannot
	// read it, the new ones can.
	v2, err := rotated.Seal("p", sealed{A: "after"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := newOnly.Open("p", v2, &out, now); err != nil || out.A != "after" {
		t.Errorf("new key: %+v, %v", out, err)
	}
	if err := old.Open("p", v2, &out, now); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("sealed with the new key, opened by the old one: %v, want ErrInvalidToken", err)
	}

	// Same key id, another secret: not authentic.
	impostor, err := auth.NewKeys([]auth.Key{{ID: "old", Secret: bytes.Repeat([]byte{7}, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.NewSealer(impostor).Open("p", v, &out, now); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("same id, other secret: %v, want ErrInvalidToken", err)
	}
}

func TestSealDecodeAndNoKeys(t *testing.T) {
	s := auth.NewSealer(testKeys(t, "k1"))
	now := time.Unix(1_800_000_000, 0)
	v, err := s.Seal("p", "a string", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.Open("p", v, &n, now); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a string opened into an int: %v, want ErrInvalidToken", err)
	}
	if _, err := s.Seal("p", func() {}, now.Add(time.Hour)); err == nil {
		t.Error("sealed a value JSON cannot encode")
	}
	var zero auth.Keys
	if _, err := auth.NewSealer(zero).Seal("p", 1, now.Add(time.Hour)); err == nil {
		t.Error("a sealer without keys sealed")
	}
	if err := auth.NewSealer(zero).Open("p", v, &n, now); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a sealer without keys opened: %v", err)
	}
}
