package amsync

import (
	"encoding/binary"
	"encoding/hex"
)

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

// MessageLimits bound what ParseMessageLimits accepts from a peer, so
// that a message with oversized lists or Bloom filters is refused before
// anything is allocated for them. A zero (or negative) field means no bound.
type MessageLimits struct {
	// MaxHashes bounds the hashes of the heads, of the need, and of each
	// have's last sync heads (each list on its own).
	MaxHashes int
	// MaxHaves bounds the entries of the have list.
	MaxHaves int
	// MaxBloomBytes bounds the encoded size of each have's Bloom filter.
	MaxBloomBytes int
}

// minChangeEntry is the fewest bytes a change entry of a sync message
// takes if its chunk is to parse: a length byte, a chunk header (magic
// bytes, checksum, type, length) and a byte of body. Counting entries at
// that size keeps the slice of entries within about twice the input.
const minChangeEntry = 1 + 10 + 1

// ParseMessage decodes the envelope of a sync message. It checks the
// structure (type byte, counts that fit the input, hash lengths, Bloom
// filters) but not the change chunks: see ParseChange. It bounds no list
// beyond what the input holds; a receiver of untrusted messages calls
// ParseMessageLimits.
func ParseMessage(b []byte) (*Message, error) {
	return ParseMessageLimits(b, MessageLimits{})
}

// ParseMessageLimits is ParseMessage with bounds on the lists and Bloom
// filters of the message: one that exceeds them is refused, with an
// error wrapping ErrTooLarge and naming the bound, before its list is
// allocated. The hashes and haves are new slices; the changes, Bloom
// filters and trailer alias b.
func ParseMessageLimits(b []byte, lim MessageLimits) (*Message, error) {
	r := &reader{b: b}
	t, err := r.byte("message type")
	if err != nil {
		return nil, err
	}
	if t != MessageTypeSync && t != MessageTypeSyncV2 {
		return nil, malformed("unknown sync message type 0x%02x", t)
	}
	m := &Message{Type: t}
	if m.Heads, err = r.limitedHashes("heads", lim.MaxHashes); err != nil {
		return nil, err
	}
	if m.Need, err = r.limitedHashes("need", lim.MaxHashes); err != nil {
		return nil, err
	}
	nHave, err := r.count("have count", 2)
	if err != nil {
		return nil, err
	}
	if lim.MaxHaves > 0 && nHave > lim.MaxHaves {
		return nil, tooLarge("sync message have list has %d entries (at most %d)", nHave, lim.MaxHaves)
	}
	m.Have = make([]Have, nHave)
	for i := range m.Have {
		if m.Have[i].LastSync, err = r.limitedHashes("have last sync", lim.MaxHashes); err != nil {
			return nil, err
		}
		n, err := r.countOf("bloom filter", " length", 1)
		if err != nil {
			return nil, err
		}
		if lim.MaxBloomBytes > 0 && n > lim.MaxBloomBytes {
			return nil, tooLarge("sync message have %d Bloom filter is %d bytes (at most %d)", i, n, lim.MaxBloomBytes)
		}
		m.Have[i].Bloom, _ = r.bytes(n, "bloom filter")
		var f Bloom
		if err := parseBloom(m.Have[i].Bloom, &f); err != nil {
			return nil, err
		}
	}
	nChanges, err := r.count("change count", minChangeEntry)
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

// limitedHashes reads a list of hashes of at most limit entries (if limit > 0).
func (r *reader) limitedHashes(what string, limit int) ([]Hash, error) {
	if limit > 0 {
		save := r.off
		n, err := r.countOf(what, " count", HashLen)
		if err != nil {
			return nil, err
		}
		if n > limit {
			return nil, tooLarge("sync message %s list has %d hashes (at most %d)", what, n, limit)
		}
		r.off = save
	}
	return r.hashes(what)
}

func (r *reader) hashes(what string) ([]Hash, error) {
	n, err := r.countOf(what, " count", HashLen)
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
	// One allocation of the final size (a message of a document with many
	// heads is mostly hashes).
	n := 1 + 3*binary.MaxVarintLen64 + HashLen*(len(m.Heads)+len(m.Need)) + len(m.Trailer)
	for _, h := range m.Have {
		n += 2*binary.MaxVarintLen64 + HashLen*len(h.LastSync) + len(h.Bloom)
	}
	for _, c := range m.Changes {
		n += binary.MaxVarintLen64 + len(c)
	}
	b := make([]byte, 1, n)
	b[0] = m.Type
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
