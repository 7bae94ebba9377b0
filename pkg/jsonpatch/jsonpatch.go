// Package jsonpatch parses JSON Patch documents (RFC 6902) with two
// operations JSON Patch lacks for a CRDT document: "splice" (edit a text
// in place) and "increment" (add to a counter), and a "datatype" member
// that makes an added number a counter. It only parses and checks the
// syntax: applying a patch to a document is its user's business.
//
// Parse is safe on untrusted bytes: its output is bounded by Limits and
// every error says which operation and member is wrong. It holds no state
// and is safe for concurrent use.
package jsonpatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every error of Parse.
var ErrInvalid = errors.New("invalid JSON patch")

// The operations.
const (
	OpAdd       = "add"
	OpRemove    = "remove"
	OpReplace   = "replace"
	OpMove      = "move"
	OpCopy      = "copy"
	OpTest      = "test"
	OpSplice    = "splice"    // extension: {"op":"splice","path":"/text","pos":0,"del":0,"value":"abc"}
	OpIncrement = "increment" // extension: {"op":"increment","path":"/count","value":1}
)

// DatatypeCounter, as an add or replace's "datatype", makes the value (an
// integer) a counter.
const DatatypeCounter = "counter"

// Pointer is a parsed JSON Pointer (RFC 6901): its reference tokens,
// unescaped. The empty pointer refers to the whole document.
type Pointer []string

// ParsePointer parses a JSON Pointer: "" or "/" followed by tokens
// separated by "/", in which "~1" stands for "/" and "~0" for "~".
func ParsePointer(s string) (Pointer, error) {
	if s == "" {
		return Pointer{}, nil
	}
	if s[0] != '/' {
		return nil, fmt.Errorf("pointer %q must be empty or start with \"/\"", trunc(s))
	}
	parts := strings.Split(s[1:], "/")
	for i, p := range parts {
		for j := 0; j < len(p); j++ {
			if p[j] == '~' && (j+1 == len(p) || (p[j+1] != '0' && p[j+1] != '1')) {
				return nil, fmt.Errorf("pointer %q: \"~\" must be followed by 0 or 1", trunc(s))
			}
		}
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
	}
	return Pointer(parts), nil
}

// String returns the pointer in its escaped form.
func (p Pointer) String() string {
	var b strings.Builder
	for _, t := range p {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

// IsPrefixOf reports whether p is a proper prefix of q (q is inside p).
func (p Pointer) IsPrefixOf(q Pointer) bool {
	if len(p) >= len(q) {
		return false
	}
	for i := range p {
		if p[i] != q[i] {
			return false
		}
	}
	return true
}

// Index parses a token as an array index: "0" or decimal digits without a
// leading zero, below max (RFC 6901 section 4).
func Index(token string, max int) (int, error) {
	if token == "" || len(token) > 10 || (len(token) > 1 && token[0] == '0') {
		return 0, fmt.Errorf("%q is not an array index", trunc(token))
	}
	for i := 0; i < len(token); i++ {
		if token[i] < '0' || token[i] > '9' {
			return 0, fmt.Errorf("%q is not an array index", trunc(token))
		}
	}
	n, err := strconv.Atoi(token)
	if err != nil || n >= max {
		return 0, fmt.Errorf("index %s is out of range (the array has %d elements)", trunc(token), max)
	}
	return n, nil
}

// Op is one operation of a patch.
type Op struct {
	Op   string
	Path Pointer
	// From is the source of move and copy.
	From Pointer
	// Value is the value of add, replace and test, as encoding/json
	// decodes it with numbers kept as json.Number: nil, bool,
	// json.Number, string, []any or map[string]any. For splice it is the
	// string inserted; for increment the json.Number added (an integer).
	Value any
	// Pos and Del are where splice deletes Del characters and inserts
	// Value.
	Pos, Del int
	// Datatype is DatatypeCounter or "" (add and replace only).
	Datatype string
}

// Limits bound what Parse accepts. Zero fields take the defaults.
type Limits struct {
	// MaxOps bounds the operations of a patch (default 1000).
	MaxOps int
	// MaxDepth bounds how deep values nest (default 64).
	MaxDepth int
	// MaxPointerTokens bounds the tokens of a path (default 64).
	MaxPointerTokens int
}

func (l *Limits) fill() {
	if l.MaxOps <= 0 {
		l.MaxOps = 1000
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = 64
	}
	if l.MaxPointerTokens <= 0 {
		l.MaxPointerTokens = 64
	}
}

// Parse parses a patch: a JSON array of operation objects. Members an
// operation does not use are ignored, as RFC 6902 says; members it needs
// must be present and of the right type.
func Parse(data []byte, lim Limits) ([]Op, error) {
	lim.fill()
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw []map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: want a JSON array of operation objects: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the array", ErrInvalid)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: want a JSON array of operation objects, not null", ErrInvalid)
	}
	if len(raw) > lim.MaxOps {
		return nil, fmt.Errorf("%w: %d operations, at most %d", ErrInvalid, len(raw), lim.MaxOps)
	}
	ops := make([]Op, 0, len(raw))
	for i, m := range raw {
		op, err := parseOp(m, lim)
		if err != nil {
			return nil, fmt.Errorf("%w: operation %d: %w", ErrInvalid, i, err)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

func parseOp(m map[string]json.RawMessage, lim Limits) (Op, error) {
	var op Op
	if m == nil {
		return op, errors.New("not an object")
	}
	if err := str(m, "op", &op.Op); err != nil {
		return op, err
	}
	pointer := func(name string) (Pointer, error) {
		var s string
		if err := str(m, name, &s); err != nil {
			return nil, err
		}
		p, err := ParsePointer(s)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", name, err)
		}
		if len(p) > lim.MaxPointerTokens {
			return nil, fmt.Errorf("%q has %d tokens, at most %d", name, len(p), lim.MaxPointerTokens)
		}
		return p, nil
	}
	var err error
	if op.Path, err = pointer("path"); err != nil {
		return op, err
	}
	value := func() error {
		raw, ok := m["value"]
		if !ok {
			return fmt.Errorf("%q needs a \"value\"", op.Op)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&op.Value); err != nil {
			return fmt.Errorf("\"value\": %v", err)
		}
		if depth(op.Value, 0) > lim.MaxDepth {
			return fmt.Errorf("\"value\" nests deeper than %d", lim.MaxDepth)
		}
		return nil
	}
	switch op.Op {
	case OpAdd, OpReplace, OpTest:
		if err := value(); err != nil {
			return op, err
		}
		if op.Op != OpTest {
			if _, ok := m["datatype"]; ok {
				if err := str(m, "datatype", &op.Datatype); err != nil {
					return op, err
				}
				if op.Datatype != DatatypeCounter {
					return op, fmt.Errorf("\"datatype\" %q is not supported (only %q)", trunc(op.Datatype), DatatypeCounter)
				}
				if _, err := Int(op.Value); err != nil {
					return op, fmt.Errorf("a counter's \"value\" %w", err)
				}
			}
		}
	case OpRemove:
	case OpMove, OpCopy:
		if op.From, err = pointer("from"); err != nil {
			return op, err
		}
		if op.Op == OpMove && op.From.IsPrefixOf(op.Path) {
			return op, fmt.Errorf("cannot move %s into itself (%s)", op.From, op.Path)
		}
	case OpSplice:
		var s string
		if err := str(m, "value", &s); err != nil {
			return op, err
		}
		op.Value = s
		if op.Pos, err = count(m, "pos"); err != nil {
			return op, err
		}
		if op.Del, err = count(m, "del"); err != nil {
			return op, err
		}
	case OpIncrement:
		if err := value(); err != nil {
			return op, err
		}
		if _, err := Int(op.Value); err != nil {
			return op, fmt.Errorf("increment's \"value\" %w", err)
		}
	default:
		return op, fmt.Errorf("unknown op %q (want add, remove, replace, move, copy, test, splice or increment)", trunc(op.Op))
	}
	if len(op.Path) == 0 && op.Op != OpTest {
		return op, fmt.Errorf("%q cannot apply to the whole document (path \"\"); name a key", op.Op)
	}
	return op, nil
}

// Int returns v as an int64 if it is a json.Number holding one.
func Int(v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, errors.New("must be an integer")
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("must be an integer that fits 64 bits, not %s", trunc(string(n)))
	}
	return i, nil
}

func str(m map[string]json.RawMessage, name string, out *string) error {
	raw, ok := m[name]
	if !ok {
		return fmt.Errorf("missing %q", name)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%q must be a string", name)
	}
	return nil
}

// count reads a member that must be a non-negative integer (absent: 0).
func count(m map[string]json.RawMessage, name string) (int, error) {
	raw, ok := m[name]
	if !ok {
		return 0, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f < 0 || f != math.Trunc(f) || f > math.MaxInt32 {
		return 0, fmt.Errorf("%q must be a non-negative integer", name)
	}
	return int(f), nil
}

func depth(v any, d int) int {
	best := d
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			best = max(best, depth(e, d+1))
		}
	case map[string]any:
		for _, e := range v {
			best = max(best, depth(e, d+1))
		}
	}
	return best
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
