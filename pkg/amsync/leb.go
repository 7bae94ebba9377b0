package amsync

import (
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every parse error of this package, those
// wrapping ErrTooLarge included.
var ErrMalformed = errors.New("malformed automerge data")

// ErrTooLarge is wrapped, along with ErrMalformed, by every error about
// input that exceeds a size bound rather than the format: a compressed
// change that inflates past its limit (ParseChangeLimit), a sync message
// whose lists or Bloom filters exceed MessageLimits. Such input may be
// valid Automerge data; a caller that bounds resources tells it apart
// from malformed input with errors.Is. The error's text names the bound
// and its value.
var ErrTooLarge = errors.New("automerge data exceeds a size bound")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// tooLargeError is an error wrapping ErrTooLarge and ErrMalformed whose
// text is only what exceeded which bound.
type tooLargeError struct{ msg string }

func (e *tooLargeError) Error() string   { return e.msg }
func (e *tooLargeError) Unwrap() []error { return []error{ErrTooLarge, ErrMalformed} }

func tooLarge(format string, args ...any) error {
	return &tooLargeError{msg: fmt.Sprintf(format, args...)}
}

// reader is a cursor over untrusted bytes.
type reader struct {
	b   []byte
	off int
}

func (r *reader) done() bool { return r.off >= len(r.b) }

func (r *reader) rest() []byte { return r.b[r.off:] }

func (r *reader) byte(what string) (byte, error) {
	if r.off >= len(r.b) {
		return 0, malformed("truncated %s", what)
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

// uleb reads an unsigned LEB128 of at most 64 bits, rejecting overlong
// encodings (as the Rust core does).
func (r *reader) uleb(what string) (uint64, error) {
	v, bad := r.ulebRaw()
	if bad != ulebOK {
		return 0, ulebError(bad, what, "")
	}
	return v, nil
}

// Outcomes of ulebRaw.
const (
	ulebOK = iota
	ulebTruncated
	ulebOverflow
	ulebOverlong
)

// ulebRaw is uleb without an error value, so that callers name what they
// read only when it fails (building the name costs an allocation).
func (r *reader) ulebRaw() (uint64, int) {
	var v uint64
	for i := 0; ; i++ {
		if r.off >= len(r.b) {
			return 0, ulebTruncated
		}
		c := r.b[r.off]
		r.off++
		if i == 9 && c > 1 {
			return 0, ulebOverflow
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, ulebOverlong
			}
			return v, ulebOK
		}
	}
}

func ulebError(bad int, what, suffix string) error {
	switch bad {
	case ulebTruncated:
		return malformed("truncated %s%s", what, suffix)
	case ulebOverflow:
		return malformed("%s%s overflows 64 bits", what, suffix)
	default:
		return malformed("overlong LEB128 in %s%s", what, suffix)
	}
}

// sleb reads a signed LEB128 of at most 64 bits.
func (r *reader) sleb(what string) (int64, error) {
	var v int64
	var shift uint
	for i := 0; ; i++ {
		if r.off >= len(r.b) {
			return 0, malformed("truncated %s", what)
		}
		c := r.b[r.off]
		r.off++
		if i == 9 && c != 0 && c != 0x7f {
			return 0, malformed("%s overflows 64 bits", what)
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, nil
		}
	}
}

// count reads a uLEB count of items that each take at least minSize bytes,
// rejecting counts the remaining input cannot hold.
func (r *reader) count(what string, minSize int) (int, error) {
	return r.countOf(what, "", minSize)
}

// countOf is count of what named what+suffix, a name built only for an error.
func (r *reader) countOf(what, suffix string, minSize int) (int, error) {
	n, bad := r.ulebRaw()
	if bad != ulebOK {
		return 0, ulebError(bad, what, suffix)
	}
	if minSize < 1 {
		minSize = 1
	}
	if n > uint64(len(r.b)-r.off)/uint64(minSize) {
		return 0, malformed("%s%s %d exceeds the remaining %d bytes", what, suffix, n, len(r.b)-r.off)
	}
	return int(n), nil
}

func (r *reader) bytes(n int, what string) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, malformed("truncated %s", what)
	}
	b := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return b, nil
}

// prefixed reads a uLEB length and that many bytes.
func (r *reader) prefixed(what string) ([]byte, error) {
	n, err := r.countOf(what, " length", 1)
	if err != nil {
		return nil, err
	}
	return r.bytes(n, what)
}

func appendULEB(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
