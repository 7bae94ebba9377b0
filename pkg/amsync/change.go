package amsync

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"io"
	"unicode/utf8"
)

// chunk types of the Automerge storage format.
const (
	chunkDocument         = 0
	chunkChange           = 1
	chunkCompressedChange = 2
)

var magic = []byte{0x85, 0x6f, 0x4a, 0x83}

// MaxInflatedChangeBytes bounds the size of a compressed change once
// inflated, so a small hostile chunk cannot expand into gigabytes.
const MaxInflatedChangeBytes = 64 << 20

// Column is one column of a change's operations: its specification (id,
// type and deflate bit) and its raw bytes.
type Column struct {
	Spec uint32
	Data []byte
}

// Change is a parsed change chunk.
type Change struct {
	Hash        Hash
	Deps        []Hash
	Actor       []byte
	Seq         uint64
	StartOp     uint64
	Time        int64
	Message     string
	OtherActors [][]byte
	Columns     []Column
	Extra       []byte
	// Raw is the chunk as received (compressed if it was).
	Raw []byte
	// Stored is the chunk to persist: the compressed chunk as it arrived
	// (its own copy, never an alias of a larger buffer) if it came
	// compressed, else Raw. ParseChange leaves it nil; syncengine sets it
	// on every change it returns, so that what arrived compressed is
	// stored compressed.
	Stored []byte

	// inflated is the uncompressed chunk of a compressed one, built while
	// inflating; the fields above alias it.
	inflated []byte
}

// ParseChange parses one change chunk: header, checksum, hash, and the
// change's fields. A compressed change (chunk type 2) is inflated first,
// up to MaxInflatedChangeBytes; its hash is that of the uncompressed
// chunk, as Automerge defines it. The fields alias chunk, or for a
// compressed chunk the uncompressed one (see Uncompressed).
func ParseChange(chunk []byte) (*Change, error) {
	return ParseChangeLimit(chunk, MaxInflatedChangeBytes)
}

// ParseChangeLimit is ParseChange with a tighter bound on inflating: a
// compressed chunk whose body inflates to more than maxInflated bytes
// (at most MaxInflatedChangeBytes; a negative limit counts as 0) is
// refused with an error wrapping ErrTooLarge, as soon as inflating gets
// past the limit. Uncompressed chunks are not subject to it. A caller
// that bounds what several chunks may inflate to in total passes what is
// left of its budget, less InflatedLen of each change parsed.
func ParseChangeLimit(chunk []byte, maxInflated int) (*Change, error) {
	maxInflated = min(max(maxInflated, 0), MaxInflatedChangeBytes)
	r := &reader{b: chunk}
	m, err := r.bytes(4, "magic bytes")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(m, magic) {
		return nil, malformed("not an automerge chunk (bad magic bytes)")
	}
	checksum, err := r.bytes(4, "checksum")
	if err != nil {
		return nil, err
	}
	typ, err := r.byte("chunk type")
	if err != nil {
		return nil, err
	}
	n, err := r.uleb("chunk length")
	if err != nil {
		return nil, err
	}
	if n != uint64(len(r.rest())) {
		return nil, malformed("chunk length %d does not match the %d bytes that follow", n, len(r.rest()))
	}
	c := &Change{Raw: chunk}
	body := r.rest()
	var hashed []byte // type, length, body: what the hash covers
	switch typ {
	case chunkChange:
		hashed = chunk[8:]
	case chunkCompressedChange:
		if c.inflated, err = inflateChunk(body, maxInflated); err != nil {
			return nil, err
		}
		hashed = c.inflated[8:]
		body = c.inflated[len(c.inflated)-c.InflatedLen():]
	case chunkDocument:
		return nil, malformed("a document chunk where a change was expected")
	default:
		return nil, malformed("unknown chunk type %d", typ)
	}
	h := sha256.Sum256(hashed)
	c.Hash = h
	if !bytes.Equal(c.Hash[:4], checksum) {
		return nil, malformed("change checksum mismatch")
	}
	if c.inflated != nil {
		copy(c.inflated[4:8], checksum)
	}
	if err := c.parseBody(body); err != nil {
		return nil, err
	}
	return c, nil
}

// Uncompressed returns the change as an uncompressed chunk (type 1): Raw
// if it is one, else the chunk ParseChange built while inflating Raw
// (the same bytes the hash covers, with the header and checksum of an
// uncompressed chunk), which the change's fields alias.
func (c *Change) Uncompressed() []byte {
	if c.inflated != nil {
		return c.inflated
	}
	return c.Raw
}

// InflatedLen returns how many bytes the body of a compressed chunk
// inflated to (what ParseChangeLimit bounds), or 0 if the chunk was not
// compressed.
func (c *Change) InflatedLen() int {
	if c.inflated == nil {
		return 0
	}
	return len(c.inflated) - headerLen(c.inflated)
}

// headerLen returns the length of a chunk's header (magic bytes,
// checksum, type, length), or 0 if it has none.
func headerLen(chunk []byte) int {
	r := &reader{b: chunk, off: 9}
	if _, err := r.uleb("chunk length"); err != nil {
		return 0
	}
	return r.off
}

// maxHeaderLen is the longest header an uncompressed chunk can have: magic
// bytes, checksum, type and a 10-byte LEB128 length.
const maxHeaderLen = 4 + 4 + 1 + 10

// inflateChunk inflates the body of a compressed change into a buffer
// that starts with room for the header of the uncompressed chunk, so that
// the uncompressed chunk needs no second copy, and returns that chunk:
// magic bytes, a zero checksum for the caller to fill in, type 1, the
// length, the inflated body. It stops, with an error wrapping
// ErrTooLarge, as soon as the body gets past limit bytes, and its buffer
// never grows past the limit (io.ReadAll's doubling would).
func inflateChunk(b []byte, limit int) ([]byte, error) {
	zr := flate.NewReader(bytes.NewReader(b))
	defer zr.Close()
	// Room for limit+1 bytes at most: reading one byte past the limit is
	// how the limit is detected. The first guess is a typical ratio.
	most := limit + 1
	buf := make([]byte, maxHeaderLen, maxHeaderLen+min(most, max(4*len(b), 512)))
	for {
		if len(buf) == cap(buf) {
			if len(buf)-maxHeaderLen >= most {
				return nil, tooLarge("compressed change inflates to more than %d bytes", limit)
			}
			// Double, but go straight to the most once that is near:
			// never allocate twice the most for one more byte.
			n := 2 * (cap(buf) - maxHeaderLen)
			if n > most/2 {
				n = most
			}
			grown := make([]byte, len(buf), maxHeaderLen+n)
			copy(grown, buf)
			buf = grown
		}
		n, err := zr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, malformed("bad deflate data in compressed change: %v", err)
		}
	}
	body := len(buf) - maxHeaderLen
	if body > limit {
		return nil, tooLarge("compressed change inflates to more than %d bytes", limit)
	}
	// The header goes just before the body.
	var lenBuf [10]byte
	l := appendULEB(lenBuf[:0], uint64(body))
	start := maxHeaderLen - (9 + len(l))
	hdr := buf[start:maxHeaderLen]
	copy(hdr, magic)
	clear(hdr[4:8])
	hdr[8] = chunkChange
	copy(hdr[9:], l)
	out := buf[start:]
	// Do not keep much more than the chunk alive: the last doubling may
	// have left up to half the buffer unused.
	if slack := cap(buf) - len(buf) + start; slack > len(out)/8+64 {
		out = bytes.Clone(out)
	}
	return out, nil
}

func (c *Change) parseBody(body []byte) error {
	r := &reader{b: body}
	var err error
	if c.Deps, err = r.hashes("dependencies"); err != nil {
		return err
	}
	if c.Actor, err = r.prefixed("actor id"); err != nil {
		return err
	}
	if len(c.Actor) == 0 {
		return malformed("empty actor id")
	}
	if c.Seq, err = r.uleb("seq"); err != nil {
		return err
	}
	if c.Seq == 0 {
		return malformed("seq 0 (sequence numbers start at 1)")
	}
	if c.StartOp, err = r.uleb("start op"); err != nil {
		return err
	}
	if c.StartOp == 0 {
		return malformed("start op 0 (op counters start at 1)")
	}
	if c.Time, err = r.sleb("time"); err != nil {
		return err
	}
	msg, err := r.prefixed("message")
	if err != nil {
		return err
	}
	if !utf8.Valid(msg) {
		return malformed("change message is not UTF-8")
	}
	c.Message = string(msg)
	nActors, err := r.count("other actors count", 1)
	if err != nil {
		return err
	}
	c.OtherActors = make([][]byte, nActors)
	for i := range c.OtherActors {
		if c.OtherActors[i], err = r.prefixed("actor id"); err != nil {
			return err
		}
	}
	nCols, err := r.count("column count", 2)
	if err != nil {
		return err
	}
	c.Columns = make([]Column, nCols)
	lengths := make([]uint64, nCols)
	var total uint64
	for i := range c.Columns {
		spec, err := r.uleb("column spec")
		if err != nil {
			return err
		}
		if spec > 0xffffffff {
			return malformed("column spec %d out of range", spec)
		}
		if i > 0 && uint32(spec) <= c.Columns[i-1].Spec {
			return malformed("column specs not strictly ascending")
		}
		c.Columns[i].Spec = uint32(spec)
		if lengths[i], err = r.uleb("column length"); err != nil {
			return err
		}
		total += lengths[i]
		if total > uint64(len(r.rest())) {
			return malformed("column lengths exceed the change")
		}
	}
	for i := range c.Columns {
		if c.Columns[i].Data, err = r.bytes(int(lengths[i]), "column data"); err != nil {
			return err
		}
	}
	c.Extra = r.rest()
	return nil
}
