package amsync

// MaxBloomProbes bounds the probes per hash a Bloom filter may ask for.
// Automerge uses 7; the Rust core 0.5 allocates one slot per probe, so an
// unbounded count from a peer is a memory bomb.
const MaxBloomProbes = 64

// Bloom is a decoded sync Bloom filter (the "have" of a sync message).
type Bloom struct {
	NumEntries      uint32
	NumBitsPerEntry uint32
	NumProbes       uint32
	Bits            []byte
}

// ParseBloom decodes a Bloom filter; empty input is the empty filter. It
// refuses filters the Rust core 0.5 would mishandle: entries without bits
// (a division by zero there) and excessive probe counts.
func ParseBloom(b []byte) (*Bloom, error) {
	if len(b) == 0 {
		return &Bloom{NumBitsPerEntry: 10, NumProbes: 7}, nil
	}
	r := &reader{b: b}
	var f Bloom
	for _, p := range []struct {
		v    *uint32
		what string
	}{{&f.NumEntries, "bloom entries"}, {&f.NumBitsPerEntry, "bloom bits per entry"}, {&f.NumProbes, "bloom probes"}} {
		v, err := r.uleb(p.what)
		if err != nil {
			return nil, err
		}
		if v > 0xffffffff {
			return nil, malformed("%s %d out of range", p.what, v)
		}
		*p.v = uint32(v)
	}
	if f.NumProbes > MaxBloomProbes {
		return nil, malformed("bloom filter asks for %d probes (at most %d)", f.NumProbes, MaxBloomProbes)
	}
	n := (uint64(f.NumEntries)*uint64(f.NumBitsPerEntry) + 7) / 8
	if n > uint64(len(r.rest())) {
		return nil, malformed("bloom filter needs %d bytes of bits, has %d", n, len(r.rest()))
	}
	if f.NumEntries > 0 && n == 0 {
		return nil, malformed("bloom filter with %d entries and no bits", f.NumEntries)
	}
	if n >= 1<<29 {
		return nil, malformed("bloom filter too large")
	}
	f.Bits, _ = r.bytes(int(n), "bloom bits")
	return &f, nil
}
