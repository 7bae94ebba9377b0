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
}

// ParseChange parses one change chunk: header, checksum, hash, and the
// change's fields. A compressed change (chunk type 2) is inflated first;
// its hash is that of the uncompressed chunk, as Automerge defines it.
func ParseChange(chunk []byte) (*Change, error) {
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
	body := r.rest()
	switch typ {
	case chunkChange:
	case chunkCompressedChange:
		if body, err = inflate(body); err != nil {
			return nil, err
		}
	case chunkDocument:
		return nil, malformed("a document chunk where a change was expected")
	default:
		return nil, malformed("unknown chunk type %d", typ)
	}
	// The hash covers the uncompressed form: type 1, length, body.
	h := sha256.New()
	hdr := appendULEB([]byte{chunkChange}, uint64(len(body)))
	h.Write(hdr)
	h.Write(body)
	c := &Change{Raw: chunk}
	h.Sum(c.Hash[:0])
	if !bytes.Equal(c.Hash[:4], checksum) {
		return nil, malformed("change checksum mismatch")
	}
	if err := c.parseBody(body); err != nil {
		return nil, err
	}
	return c, nil
}

func inflate(b []byte) ([]byte, error) {
	zr := flate.NewReader(bytes.NewReader(b))
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, MaxInflatedChangeBytes+1))
	if err != nil {
		return nil, malformed("bad deflate data in compressed change: %v", err)
	}
	if len(out) > MaxInflatedChangeBytes {
		return nil, malformed("compressed change inflates beyond %d bytes", MaxInflatedChangeBytes)
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
