package amsync

import "bytes"

// SplitChunks splits concatenated Automerge chunks (what a store batch or a
// broker publication holds: raw change chunks, one after another) by their
// headers. It checks the framing only: magic bytes and lengths; ParseChange
// checks each chunk. The returned slices alias b.
func SplitChunks(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		r := &reader{b: b}
		m, err := r.bytes(4, "magic bytes")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(m, magic) {
			return nil, malformed("not an automerge chunk (bad magic bytes) at chunk %d", len(out))
		}
		if _, err := r.bytes(5, "checksum and chunk type"); err != nil {
			return nil, err
		}
		n, err := r.uleb("chunk length")
		if err != nil {
			return nil, err
		}
		if n > uint64(len(r.rest())) {
			return nil, malformed("chunk %d claims %d bytes, %d follow", len(out), n, len(r.rest()))
		}
		end := r.off + int(n)
		out = append(out, b[:end:end])
		b = b[end:]
	}
	return out, nil
}
