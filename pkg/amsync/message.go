package amsync

import "encoding/hex"

// HashLen is the length of an Automerge change hash.
const HashLen = 32

// Hash is an Automerge change hash: SHA-256 of the uncompressed change chunk.
type Hash [HashLen]byte

// String returns the hash in hex, as automerge-go and Automerge JS print it.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MessageTypeSync is the type byte of a version 1 sync message, the only
// one the Rust core 0.5 (automerge-go) reads and writes.
const MessageTypeSync = 0x42

// MessageTypeSyncV2 is the type byte of a sync message that carries
// capability flags, sent by newer Automerge only to peers that advertise them.
const MessageTypeSyncV2 = 0x43

// Have is one entry of a sync message's "have" list: the sender's last
// known shared heads and a Bloom filter of the changes it has since.
type Have struct {
	LastSync []Hash
	Bloom    []byte
}

// Message is a decoded sync message. Changes are the raw change chunks; the
// byte slices alias the input of ParseMessage.
type Message struct {
	Type    byte
	Heads   []Hash
	Need    []Hash
	Have    []Have
	Changes [][]byte
	// Trailer holds bytes after the changes: Automerge 2.2+ appends
	// capability flags there; the Rust core 0.5 ignores them.
	Trailer []byte
}

// ParseMessage decodes the envelope of a sync message. It checks the
// structure (type byte, counts that fit the input, hash lengths, Bloom
// filters) but not the change chunks: see ParseChange.
func ParseMessage(b []byte) (*Message, error) {
	r := &reader{b: b}
	t, err := r.byte("message type")
	if err != nil {
		return nil, err
	}
	if t != MessageTypeSync && t != MessageTypeSyncV2 {
		return nil, malformed("unknown sync message type 0x%02x", t)
	}
	m := &Message{Type: t}
	if m.Heads, err = r.hashes("heads"); err != nil {
		return nil, err
	}
	if m.Need, err = r.hashes("need"); err != nil {
		return nil, err
	}
	nHave, err := r.count("have count", 2)
	if err != nil {
		return nil, err
	}
	m.Have = make([]Have, nHave)
	for i := range m.Have {
		if m.Have[i].LastSync, err = r.hashes("have last sync"); err != nil {
			return nil, err
		}
		if m.Have[i].Bloom, err = r.prefixed("bloom filter"); err != nil {
			return nil, err
		}
		if _, err := ParseBloom(m.Have[i].Bloom); err != nil {
			return nil, err
		}
	}
	nChanges, err := r.count("change count", 1)
	if err != nil {
		return nil, err
	}
	m.Changes = make([][]byte, nChanges)
	for i := range m.Changes {
		if m.Changes[i], err = r.prefixed("change"); err != nil {
			return nil, err
		}
	}
	m.Trailer = r.rest()
	return m, nil
}

func (r *reader) hashes(what string) ([]Hash, error) {
	n, err := r.count(what+" count", HashLen)
	if err != nil {
		return nil, err
	}
	hs := make([]Hash, n)
	for i := range hs {
		b, err := r.bytes(HashLen, what)
		if err != nil {
			return nil, err
		}
		copy(hs[i][:], b)
	}
	return hs, nil
}

// Encode writes m in the sync message format (Trailer included as is).
func (m *Message) Encode() []byte {
	b := []byte{m.Type}
	b = appendHashes(b, m.Heads)
	b = appendHashes(b, m.Need)
	b = appendULEB(b, uint64(len(m.Have)))
	for _, h := range m.Have {
		b = appendHashes(b, h.LastSync)
		b = appendULEB(b, uint64(len(h.Bloom)))
		b = append(b, h.Bloom...)
	}
	b = appendULEB(b, uint64(len(m.Changes)))
	for _, c := range m.Changes {
		b = appendULEB(b, uint64(len(c)))
		b = append(b, c...)
	}
	return append(b, m.Trailer...)
}

func appendHashes(b []byte, hs []Hash) []byte {
	b = appendULEB(b, uint64(len(hs)))
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

// AppendHashes appends a LEB128 count and the hashes, as sync messages and
// sync states write lists of hashes.
func AppendHashes(b []byte, hs []Hash) []byte { return appendHashes(b, hs) }

// ReadHashes reads a list of hashes written by AppendHashes and returns
// the bytes after it.
func ReadHashes(b []byte) ([]Hash, []byte, error) {
	r := &reader{b: b}
	hs, err := r.hashes("hashes")
	if err != nil {
		return nil, nil, err
	}
	return hs, r.rest(), nil
}
