package protocol

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/mr-tron/base58"
)

// DocumentID is an automerge-repo document id: the bs58check encoding of a
// 16-byte random id, as it appears after "automerge:" in a document URL.
type DocumentID string

// URLPrefix is the scheme of an automerge-repo document URL.
const URLPrefix = "automerge:"

// ErrInvalidDocumentID is wrapped by every error about a document id that is
// not the bs58check encoding of 16 bytes.
var ErrInvalidDocumentID = errors.New("invalid document id")

// ErrInvalidHead is wrapped by every error about a head that is not the
// bs58check encoding of a 32-byte change hash.
var ErrInvalidHead = errors.New("invalid head")

const (
	docIDLen   = 16
	headLen    = 32
	maxIDChars = 64 // longer than any bs58check of 32+4 bytes; bounds base58's quadratic decoder
)

// ParseDocumentID parses a bare document id or an "automerge:<id>" URL; a
// "#heads" suffix of a URL is ignored. It checks the checksum and that the id
// is 16 bytes long.
func ParseDocumentID(s string) (DocumentID, error) {
	id := strings.TrimPrefix(s, URLPrefix)
	if id != s {
		id, _, _ = strings.Cut(id, "#")
	}
	b, err := bs58checkDecode(id)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrInvalidDocumentID, truncate(s), err)
	}
	if len(b) != docIDLen {
		return "", fmt.Errorf("%w %q: %d bytes, want %d", ErrInvalidDocumentID, truncate(s), len(b), docIDLen)
	}
	return DocumentID(id), nil
}

// NewDocumentID returns a fresh random document id.
func NewDocumentID() DocumentID {
	return DocumentID(bs58checkEncode(string(randomBytes(docIDLen))))
}

// URL returns the document's "automerge:<id>" URL.
func (d DocumentID) URL() string { return URLPrefix + string(d) }

// Bytes returns the 16 bytes the id encodes, or nil if d is not a valid id.
func (d DocumentID) Bytes() []byte {
	b, err := bs58checkDecode(string(d))
	if err != nil || len(b) != docIDLen {
		return nil
	}
	return b
}

// String returns the bare id.
func (d DocumentID) String() string { return string(d) }

// EncodeHead returns the wire form of a change hash in remote-heads-changed:
// automerge-repo 2.x sends heads bs58check-encoded, not as hex.
func EncodeHead(hash [headLen]byte) string { return bs58checkEncode(string(hash[:])) }

// DecodeHead parses a head as sent in remote-heads-changed into a change hash.
func DecodeHead(s string) ([headLen]byte, error) {
	var h [headLen]byte
	b, err := bs58checkDecode(s)
	if err != nil {
		return h, fmt.Errorf("%w %q: %v", ErrInvalidHead, truncate(s), err)
	}
	if len(b) != headLen {
		return h, fmt.Errorf("%w %q: %d bytes, want %d", ErrInvalidHead, truncate(s), len(b), headLen)
	}
	copy(h[:], b)
	return h, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails, see crypto/rand.Read
	return b
}

func checksum(payload []byte) []byte {
	h := sha256.Sum256(payload)
	h = sha256.Sum256(h[:])
	return h[:4]
}

func bs58checkEncode(payload string) string {
	b := append([]byte(payload), checksum([]byte(payload))...)
	return base58.Encode(b)
}

func bs58checkDecode(s string) ([]byte, error) {
	if s == "" || len(s) > maxIDChars {
		return nil, fmt.Errorf("length %d out of range", len(s))
	}
	b, err := base58.Decode(s)
	if err != nil {
		return nil, errors.New("not base58")
	}
	if len(b) < 4 {
		return nil, errors.New("too short")
	}
	payload, sum := b[:len(b)-4], b[len(b)-4:]
	if string(sum) != string(checksum(payload)) {
		return nil, errors.New("bad checksum")
	}
	if base58.Encode(b) != s {
		return nil, errors.New("not canonical base58")
	}
	return payload, nil
}

func truncate(s string) string {
	if len(s) > maxIDChars {
		return s[:maxIDChars] + "..."
	}
	return s
}

// NewStorageID returns a random UUID (version 4), the form automerge-repo
// peers use for their storageId.
func NewStorageID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}
