package auth

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Key is a secret and its id: a master key (NewKeys), or the secret
// derived from one for one purpose, with the master key's id (Derive).
type Key struct {
	ID     string
	Secret []byte // 32 bytes
}

// Keys are the node's auth master keys (the --auth-key-file, read by the
// node: the same format as the encryption key file). The first key signs and seals; every
// key verifies and opens, so keys rotate by adding a new first line and
// removing the old one once what it signed has expired (the refresh token
// lifetime). Every node of a cluster must have the same keys.
type Keys struct {
	master []Key
}

// Key purposes: each gets its own derived secret, so a token of one kind
// can never pass as another.
const (
	PurposeAccess  = "plait access token v1"
	PurposeRefresh = "plait refresh token v1"
	PurposeCookie  = "plait login cookie v1"
)

// NewKeys checks the master keys (at least one, 32 bytes each).
func NewKeys(master []Key) (Keys, error) {
	if len(master) == 0 {
		return Keys{}, errors.New("no auth keys")
	}
	for _, k := range master {
		if len(k.Secret) != 32 || k.ID == "" {
			return Keys{}, fmt.Errorf("auth key %q: want an id and 32 bytes", k.ID)
		}
	}
	return Keys{master: master}, nil
}

// Derive returns the keys for purpose, the signing one first.
func (k Keys) Derive(purpose string) []Key {
	out := make([]Key, 0, len(k.master))
	for _, m := range k.master {
		s, err := hkdf.Key(sha256.New, m.Secret, nil, purpose, 32)
		if err != nil {
			panic(err) // only for lengths beyond 255*32 bytes
		}
		out = append(out, Key{ID: m.ID, Secret: s})
	}
	return out
}
