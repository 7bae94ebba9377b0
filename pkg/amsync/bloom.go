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
	f := new(Bloom)
	if err := parseBloom(b, f); err != nil {
		return nil, err
	}
	return f, nil
}

// parseBloom is ParseBloom into f, which escapes nowhere: ParseMessage
// checks filters without allocating.
func parseBloom(b []byte, f *Bloom) error {
	if len(b) == 0 {
		*f = Bloom{NumBitsPerEntry: 10, NumProbes: 7}
		return nil
	}
	r := &reader{b: b}
	for _, p := range []struct {
		v    *uint32
		what string
	}{{&f.NumEntries, "bloom entries"}, {&f.NumBitsPerEntry, "bloom bits per entry"}, {&f.NumProbes, "bloom probes"}} {
		v, err := r.uleb(p.what)
		if err != nil {
			return err
		}
		if v > 0xffffffff {
			return malformed("%s %d out of range", p.what, v)
		}
		*p.v = uint32(v)
	}
	if f.NumProbes > MaxBloomProbes {
		return malformed("bloom filter asks for %d probes (at most %d)", f.NumProbes, MaxBloomProbes)
	}
	n := (uint64(f.NumEntries)*uint64(f.NumBitsPerEntry) + 7) / 8
	if n > uint64(len(r.rest())) {
		return malformed("bloom filter needs %d bytes of bits, has %d", n, len(r.rest()))
	}
	if f.NumEntries > 0 && n == 0 {
		return malformed("bloom filter with %d entries and no bits", f.NumEntries)
	}
	if n >= 1<<29 {
		return malformed("bloom filter too large")
	}
	f.Bits, _ = r.bytes(int(n), "bloom bits")
	return nil
}

// Parameters of the Bloom filters Automerge builds (a 1% false positive rate).
const (
	BloomBitsPerEntry = 10
	BloomProbes       = 7
)

// NewBloom builds the filter of hashes as Automerge does
// (BloomFilter::from_hashes): 10 bits per entry, 7 probes.
func NewBloom(hashes []Hash) *Bloom {
	f := &Bloom{NumEntries: uint32(len(hashes)), NumBitsPerEntry: BloomBitsPerEntry, NumProbes: BloomProbes}
	f.Bits = make([]byte, (uint64(f.NumEntries)*uint64(f.NumBitsPerEntry)+7)/8)
	for i := range hashes {
		f.probes(&hashes[i], func(p uint32) bool {
			f.Bits[p>>3] |= 1 << (p & 7)
			return true
		})
	}
	return f
}

// probes calls f with each bit position of h, until f returns false.
func (f *Bloom) probes(h *Hash, fn func(uint32) bool) {
	modulo := 8 * uint32(len(f.Bits))
	if modulo == 0 {
		return
	}
	le := func(i int) uint32 {
		return uint32(h[i]) | uint32(h[i+1])<<8 | uint32(h[i+2])<<16 | uint32(h[i+3])<<24
	}
	x, y, z := le(0)%modulo, le(4)%modulo, le(8)%modulo
	if !fn(x) {
		return
	}
	for i := uint32(1); i < f.NumProbes; i++ {
		x = (x + y) % modulo
		y = (y + z) % modulo
		if !fn(x) {
			return
		}
	}
}

// Contains reports whether the filter may hold h (the core's
// contains_hash: an empty filter holds nothing).
func (f *Bloom) Contains(h *Hash) bool {
	if f.NumEntries == 0 {
		return false
	}
	in := true
	f.probes(h, func(p uint32) bool {
		if int(p>>3) < len(f.Bits) && f.Bits[p>>3]&(1<<(p&7)) == 0 {
			in = false
		}
		return in
	})
	return in
}

// Encode writes the filter as sync messages carry it; a filter with no
// entries is empty.
func (f *Bloom) Encode() []byte {
	if f.NumEntries == 0 {
		return nil
	}
	b := appendULEB(nil, uint64(f.NumEntries))
	b = appendULEB(b, uint64(f.NumBitsPerEntry))
	b = appendULEB(b, uint64(f.NumProbes))
	return append(b, f.Bits...)
}
