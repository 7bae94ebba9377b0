package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Sealed value layout, before base64url (no padding):
//
//	version (1 byte) | key tag (4) | nonce (12) | AES-256-GCM(expiry (8, Unix seconds, big endian) | JSON)
//
// The key tag is the first 4 bytes of SHA-256 of the master key id, so the
// opener knows which key sealed the value without trying them all (and
// without putting an arbitrarily long id into a cookie). The additional
// data binds the purpose and the header, so a value sealed for one purpose
// (one cookie name) never opens as another.
const (
	sealVersion   = 1
	sealTagBytes  = 4
	sealNonceSize = 12
	sealHeader    = 1 + sealTagBytes + sealNonceSize
	sealOverhead  = sealHeader + 8 + 16 // header, expiry, GCM tag
	// maxSealedChars bounds what Open looks at: sealed values live in
	// cookies, which browsers cap at 4 KiB.
	maxSealedChars = 8192
	sealAADPrefix  = "plait seal v1\x00"
)

// Sealer seals small values into cookie-safe strings that only the nodes
// of the cluster can read or forge: AES-256-GCM under a key derived from
// the auth keys for PurposeCookie. The first key seals; every key opens,
// so the keys rotate as Keys describes.
//
// A Sealer is safe for concurrent use.
type Sealer struct {
	keys []sealKey // the sealing key first
}

type sealKey struct {
	tag  [sealTagBytes]byte
	aead cipher.AEAD
}

// NewSealer derives the cookie keys from keys. A Sealer made from zero
// Keys refuses to seal and opens nothing.
func NewSealer(keys Keys) *Sealer {
	s := &Sealer{}
	for _, k := range keys.Derive(PurposeCookie) {
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			panic(err) // Derive always returns 32 bytes
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			panic(err)
		}
		s.keys = append(s.keys, sealKey{tag: keyTag(k.ID), aead: aead})
	}
	return s
}

func keyTag(id string) [sealTagBytes]byte {
	sum := sha256.Sum256([]byte(id))
	return [sealTagBytes]byte(sum[:sealTagBytes])
}

func sealAAD(purpose string, header []byte) []byte {
	aad := make([]byte, 0, len(sealAADPrefix)+len(purpose)+1+len(header))
	aad = append(aad, sealAADPrefix...)
	aad = append(aad, purpose...)
	aad = append(aad, 0)
	return append(aad, header...)
}

// Seal encodes v as JSON and seals it for purpose (use the cookie's name)
// until expires (to the second).
func (s *Sealer) Seal(purpose string, v any, expires time.Time) (string, error) {
	if len(s.keys) == 0 {
		return "", errors.New("failed to seal: no keys")
	}
	body, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("failed to seal: %w", err)
	}
	k := s.keys[0]
	out := make([]byte, sealHeader, sealOverhead+len(body))
	out[0] = sealVersion
	copy(out[1:], k.tag[:])
	if _, err := rand.Read(out[1+sealTagBytes : sealHeader]); err != nil {
		return "", fmt.Errorf("failed to seal: %w", err)
	}
	plain := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint64(plain, uint64(expires.Unix()))
	plain = append(plain, body...)
	out = k.aead.Seal(out, out[1+sealTagBytes:sealHeader], plain, sealAAD(purpose, out[:sealHeader]))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// Open checks that sealed was sealed by one of the keys for purpose and
// has not expired at now, and decodes its JSON into v. Anything wrong
// (malformed, unknown key, tampered with, sealed for another purpose,
// expired, not JSON for v) is ErrInvalidToken.
func (s *Sealer) Open(purpose string, sealed string, v any, now time.Time) error {
	if len(sealed) > maxSealedChars {
		return fmt.Errorf("%w: sealed value too long", ErrInvalidToken)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(sealed)
	if err != nil || len(raw) < sealOverhead || raw[0] != sealVersion {
		return fmt.Errorf("%w: malformed sealed value", ErrInvalidToken)
	}
	header, nonce, ct := raw[:sealHeader], raw[1+sealTagBytes:sealHeader], raw[sealHeader:]
	tag := [sealTagBytes]byte(raw[1 : 1+sealTagBytes])
	aad := sealAAD(purpose, header)
	var plain []byte
	opened := false
	for _, k := range s.keys {
		if k.tag != tag {
			continue
		}
		if p, err := k.aead.Open(nil, nonce, ct, aad); err == nil {
			plain, opened = p, true
			break
		}
	}
	if !opened {
		return fmt.Errorf("%w: sealed value not authentic", ErrInvalidToken)
	}
	exp := int64(binary.BigEndian.Uint64(plain[:8]))
	if now.Unix() >= exp {
		return fmt.Errorf("%w: sealed value expired", ErrInvalidToken)
	}
	if err := json.Unmarshal(plain[8:], v); err != nil {
		return fmt.Errorf("%w: sealed value does not decode", ErrInvalidToken)
	}
	return nil
}
