package hub

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/automerge/automerge-go"
)

// A snapshot, as compaction stores it, is the document's changes in
// dependency order, deflated, each change its uncompressed chunk with two
// things left out that can be rebuilt: the checksum, and each dependency's
// 32-byte hash, replaced by how many changes back it is:
//
//	"PLTS" 0x01 | deflate( change* )
//	change = uLEB ndeps | ndeps * uLEB distance | uLEB len(rest) | rest
//
// where rest is the chunk's body after its dependencies. Reading one is an
// inflate and a SHA-256 per change, with no Automerge core: a document of
// 100,000 changes opens in a fraction of the seconds automerge-go takes to
// load a document chunk and hand each change back one call at a time.
// Writing one needs no core either, so compaction neither builds nor
// re-loads the document. The hashes left out are most of what deflate
// cannot shrink in a history of small changes. Snapshots written before
// this format are Automerge documents (automerge-go's Save) and still load.
const snapshotMagic = "PLTS\x01"

var errBadSnapshot = errors.New("malformed snapshot")

// chunkMagic starts every Automerge chunk.
var chunkMagic = []byte{0x85, 0x6f, 0x4a, 0x83}

// encodeSnapshot returns the snapshot of the uncompressed change chunks
// all yields, each after its dependencies.
func encodeSnapshot(all func(yield func([]byte) bool)) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(snapshotMagic)
	w, err := flate.NewWriter(&buf, flate.BestSpeed)
	if err != nil {
		return nil, err
	}
	index := make(map[[32]byte]int)
	var rec []byte
	k := 0
	for raw := range all {
		deps, rest, err := splitChange(raw)
		if err != nil {
			return nil, fmt.Errorf("change %d: %w", k, err)
		}
		rec = binary.AppendUvarint(rec[:0], uint64(len(deps)))
		for _, dep := range deps {
			j, ok := index[dep]
			if !ok {
				return nil, fmt.Errorf("change %d: a dependency that is not before it", k)
			}
			rec = binary.AppendUvarint(rec, uint64(k-j))
		}
		rec = binary.AppendUvarint(rec, uint64(len(rest)))
		if _, err := w.Write(rec); err != nil {
			return nil, err
		}
		if _, err := w.Write(rest); err != nil {
			return nil, err
		}
		index[sha256.Sum256(raw[8:])] = k
		k++
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// splitChange returns the dependencies of an uncompressed change chunk
// and the rest of its body.
func splitChange(raw []byte) (deps [][32]byte, rest []byte, err error) {
	if len(raw) < 10 || !bytes.Equal(raw[:4], chunkMagic) || raw[8] != 1 {
		return nil, nil, errors.New("not an uncompressed change chunk")
	}
	n, k := binary.Uvarint(raw[9:])
	if k <= 0 || n != uint64(len(raw)-9-k) {
		return nil, nil, errors.New("bad chunk length")
	}
	body := raw[9+k:]
	nd, k := binary.Uvarint(body)
	if k <= 0 || nd > uint64(len(body)-k)/32 {
		return nil, nil, errors.New("bad dependencies")
	}
	body = body[k:]
	deps = make([][32]byte, nd)
	for i := range deps {
		copy(deps[i][:], body[32*i:])
	}
	return deps, body[32*nd:], nil
}

// snapshotChanges returns the change chunks of a snapshot, in either
// format.
func snapshotChanges(snap []byte) ([][]byte, error) {
	if !bytes.HasPrefix(snap, []byte(snapshotMagic)) {
		return automergeChanges(snap)
	}
	data, err := io.ReadAll(flate.NewReader(bytes.NewReader(snap[len(snapshotMagic):])))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadSnapshot, err)
	}
	var chunks [][]byte
	var hashes [][32]byte
	var deps []uint64 // one change's dependencies, as distances back
	for len(data) > 0 {
		k := len(chunks)
		uleb := func() (uint64, error) {
			v, n := binary.Uvarint(data)
			if n <= 0 {
				return 0, fmt.Errorf("%w: change %d", errBadSnapshot, k)
			}
			data = data[n:]
			return v, nil
		}
		nd, err := uleb()
		if err != nil || nd > uint64(k) {
			return nil, fmt.Errorf("%w: change %d: dependencies", errBadSnapshot, k)
		}
		deps = deps[:0]
		for range nd {
			dist, err := uleb()
			if err != nil || dist == 0 || dist > uint64(k) {
				return nil, fmt.Errorf("%w: change %d: a dependency out of range", errBadSnapshot, k)
			}
			deps = append(deps, dist)
		}
		n, err := uleb()
		if err != nil || n > uint64(len(data)) {
			return nil, fmt.Errorf("%w: change %d: length", errBadSnapshot, k)
		}
		// The chunk is built in one allocation: magic, checksum, type,
		// body length, then the body (dependencies, the rest).
		bodyLen := uvarintLen(nd) + len(deps)*32 + int(n)
		chunk := make([]byte, 8, 8+1+uvarintLen(uint64(bodyLen))+bodyLen)
		chunk = append(chunk, 1)
		chunk = binary.AppendUvarint(chunk, uint64(bodyLen))
		chunk = binary.AppendUvarint(chunk, nd)
		for _, dist := range deps {
			chunk = append(chunk, hashes[k-int(dist)][:]...)
		}
		chunk = append(chunk, data[:n]...)
		data = data[n:]
		h := sha256.Sum256(chunk[8:])
		copy(chunk, chunkMagic)
		copy(chunk[4:8], h[:4])
		chunks = append(chunks, chunk)
		hashes = append(hashes, h)
	}
	return chunks, nil
}

// automergeChanges returns the changes of a snapshot written as an
// Automerge document.
func automergeChanges(snap []byte) ([][]byte, error) {
	doc, err := automerge.Load(snap)
	if err != nil {
		return nil, fmt.Errorf("failed to load snapshot: %w", err)
	}
	chs, err := doc.Changes()
	if err != nil {
		return nil, fmt.Errorf("failed to read the snapshot's changes: %w", err)
	}
	raws := make([][]byte, 0, len(chs))
	for _, ch := range chs {
		raws = append(raws, ch.Save())
	}
	return raws, nil
}

var errSnapshotMismatch = errors.New("the snapshot reads back as other changes")

// uvarintLen is the length of v as an unsigned LEB128 varint.
func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}
