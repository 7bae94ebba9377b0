// Package content reads and edits Automerge documents for the node's REST
// API: a document as JSON, a JSON Patch (pkg/jsonpatch) applied as one
// change, and the compacted binary. It works on automerge-go documents
// built from changes the hub's sync engine has checked (never from a
// client's bytes directly: the Rust core aborts the process on some
// malformed input), one document per request, owned by the caller's
// goroutine. Nothing here is shared: every function is safe for
// concurrent use on distinct documents.
package content

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/jsonpatch"
	"github.com/plaithub/plait/pkg/protocol"
)

// ErrTooLarge is wrapped by ToJSON when the JSON would exceed its bound.
var ErrTooLarge = errors.New("too large")

// Load builds a document from change chunks in dependency order (the
// hub's ReadChanges), as of the given heads if any (each must be a change
// of the document).
func Load(changes [][]byte, heads ...automerge.ChangeHash) (*automerge.Doc, error) {
	n := 0
	for _, c := range changes {
		n += len(c)
	}
	buf := make([]byte, 0, n)
	for _, c := range changes {
		buf = append(buf, c...)
	}
	doc := automerge.New()
	if len(buf) > 0 {
		var err error
		if doc, err = automerge.Load(buf); err != nil {
			return nil, fmt.Errorf("failed to load the document: %w", err)
		}
	}
	if len(heads) == 0 {
		return doc, nil
	}
	for _, h := range heads {
		if _, err := doc.Change(h); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrUnknownHeads, h)
		}
	}
	return doc.Fork(heads...)
}

// ErrUnknownHeads is returned by Load for heads that are not changes of
// the document.
var ErrUnknownHeads = errors.New("not a change of this document")

// ToJSON returns the document as JSON: maps as objects, lists as arrays,
// text and strings as strings, counters and integers as numbers, floats
// as numbers (NaN and infinities as null), bytes as base64 strings,
// timestamps as RFC 3339 strings. Object keys are sorted. A result
// larger than maxBytes (when positive) is an error wrapping ErrTooLarge.
func ToJSON(doc *automerge.Doc, maxBytes int) (out []byte, err error) {
	defer recoverInto(&err)
	v, err := plain(doc.Root())
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&limitWriter{w: &buf, left: maxBytes})
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return nil, fmt.Errorf("%w: the document's JSON is larger than %d bytes", ErrTooLarge, maxBytes)
		}
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

type limitWriter struct {
	w    *bytes.Buffer
	left int // <= 0 at start: no bound
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left > 0 {
		if len(p) > l.left {
			return 0, ErrTooLarge
		}
		l.left -= len(p)
		if l.left == 0 {
			l.left = -1 // exactly full: the next byte is too many
		}
	} else if l.left < 0 {
		return 0, ErrTooLarge
	}
	return l.w.Write(p)
}

// recoverInto turns a Go panic of automerge-go's value accessors (an
// unknown value kind) into an error.
func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("failed to read the document: %v", r)
	}
}

// plain converts a value to what encoding/json writes as described in
// ToJSON.
func plain(v *automerge.Value) (any, error) {
	switch v.Kind() {
	case automerge.KindVoid, automerge.KindNull, automerge.KindUnknown:
		return nil, nil
	case automerge.KindBool:
		return v.Bool(), nil
	case automerge.KindStr:
		return v.Str(), nil
	case automerge.KindBytes:
		return base64.StdEncoding.EncodeToString(v.Bytes()), nil
	case automerge.KindFloat64:
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, nil
		}
		return f, nil
	case automerge.KindInt64:
		return v.Int64(), nil
	case automerge.KindUint64:
		return v.Uint64(), nil
	case automerge.KindTime:
		return v.Time().UTC().Format(time.RFC3339Nano), nil
	case automerge.KindCounter:
		return v.Counter().Get()
	case automerge.KindText:
		return v.Text().Get()
	case automerge.KindMap:
		vals, err := v.Map().Values()
		if err != nil {
			return nil, err
		}
		out := make(map[string]any, len(vals))
		for k, e := range vals {
			if out[k], err = plain(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	case automerge.KindList:
		vals, err := v.List().Values()
		if err != nil {
			return nil, err
		}
		out := make([]any, len(vals))
		for i, e := range vals {
			if out[i], err = plain(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("a value of unsupported kind %v", v.Kind())
}

// PatchError is why a patch could not be applied: Op is the index of the
// operation. Conflict is true when the patch is well formed but does not
// fit the document (a failed test, a path that is not there, a value of
// the wrong type), false when the operation itself is wrong.
type PatchError struct {
	Op       int
	Conflict bool
	Msg      string
}

func (e *PatchError) Error() string { return fmt.Sprintf("operation %d: %s", e.Op, e.Msg) }

// Apply applies the operations to doc in order, uncommitted: the caller
// commits them as one change, or drops doc. On error doc is in an
// undefined state and must be dropped.
func Apply(doc *automerge.Doc, ops []jsonpatch.Op) (err error) {
	i := 0
	defer func() {
		if r := recover(); r != nil {
			err = &PatchError{Op: i, Msg: fmt.Sprintf("failed: %v", r)}
		}
	}()
	for ; i < len(ops); i++ {
		if err := apply(doc, ops[i]); err != nil {
			var pe *PatchError
			if errors.As(err, &pe) {
				pe.Op = i
				return pe
			}
			return &PatchError{Op: i, Msg: err.Error()}
		}
	}
	return nil
}

func conflict(format string, args ...any) error {
	return &PatchError{Conflict: true, Msg: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return &PatchError{Msg: fmt.Sprintf(format, args...)}
}

// get returns the value p points to (KindVoid if its last token names
// nothing in a map or list).
func get(doc *automerge.Doc, p jsonpatch.Pointer) (*automerge.Value, error) {
	v := doc.Root()
	for k, tok := range p {
		var err error
		switch v.Kind() {
		case automerge.KindMap:
			v, err = v.Map().Get(tok)
		case automerge.KindList:
			l := v.List()
			i, ierr := jsonpatch.Index(tok, l.Len())
			if ierr != nil {
				return nil, conflict("%s: %v", p[:k+1], ierr)
			}
			v, err = l.Get(i)
		default:
			return nil, conflict("%s is not an object or array", p[:k])
		}
		if err != nil {
			return nil, err
		}
		if v.IsVoid() && k < len(p)-1 {
			return nil, conflict("%s does not exist", p[:k+1])
		}
	}
	return v, nil
}

// parent returns the container of p's last token.
func parent(doc *automerge.Doc, p jsonpatch.Pointer) (*automerge.Value, string, error) {
	v, err := get(doc, p[:len(p)-1])
	if err != nil {
		return nil, "", err
	}
	if v.IsVoid() {
		return nil, "", conflict("%s does not exist", p[:len(p)-1])
	}
	return v, p[len(p)-1], nil
}

func apply(doc *automerge.Doc, op jsonpatch.Op) error {
	switch op.Op {
	case jsonpatch.OpTest:
		v, err := get(doc, op.Path)
		if err != nil {
			return err
		}
		if v.IsVoid() {
			return conflict("test failed: %s does not exist", op.Path)
		}
		have, err := plain(v)
		if err != nil {
			return err
		}
		if !equal(have, op.Value) {
			got, _ := json.Marshal(have)
			return conflict("test failed: %s is %s", op.Path, truncate(string(got)))
		}
		return nil
	case jsonpatch.OpAdd:
		return add(doc, op.Path, op.Value, op.Datatype, false)
	case jsonpatch.OpReplace:
		return add(doc, op.Path, op.Value, op.Datatype, true)
	case jsonpatch.OpRemove:
		return remove(doc, op.Path)
	case jsonpatch.OpCopy, jsonpatch.OpMove:
		v, err := get(doc, op.From)
		if err != nil {
			return err
		}
		if v.IsVoid() {
			return conflict("%s (from) does not exist", op.From)
		}
		val, err := plain(v)
		if err != nil {
			return err
		}
		if op.Op == jsonpatch.OpMove {
			if slices.Equal(op.From, op.Path) {
				return nil
			}
			if err := remove(doc, op.From); err != nil {
				return err
			}
		}
		return add(doc, op.Path, val, "", false)
	case jsonpatch.OpSplice:
		v, err := get(doc, op.Path)
		if err != nil {
			return err
		}
		if v.Kind() != automerge.KindText {
			return conflict("%s is not a text (splice edits text)", op.Path)
		}
		t := v.Text()
		if n := t.Len(); op.Pos > n || op.Del > n-op.Pos {
			return conflict("splice at %d deleting %d is out of range: %s has %d characters", op.Pos, op.Del, op.Path, n)
		}
		return t.Splice(op.Pos, op.Del, op.Value.(string))
	case jsonpatch.OpIncrement:
		v, err := get(doc, op.Path)
		if err != nil {
			return err
		}
		if v.Kind() != automerge.KindCounter {
			return conflict("%s is not a counter (add one with \"datatype\": \"counter\")", op.Path)
		}
		d, _ := jsonpatch.Int(op.Value)
		return v.Counter().Inc(d)
	}
	return invalid("unknown op %q", op.Op)
}

func remove(doc *automerge.Doc, p jsonpatch.Pointer) error {
	c, tok, err := parent(doc, p)
	if err != nil {
		return err
	}
	switch c.Kind() {
	case automerge.KindMap:
		m := c.Map()
		if v, err := m.Get(tok); err != nil {
			return err
		} else if v.IsVoid() {
			return conflict("%s does not exist", p)
		}
		return m.Delete(tok)
	case automerge.KindList:
		l := c.List()
		i, err := jsonpatch.Index(tok, l.Len())
		if err != nil {
			return conflict("%s: %v", p, err)
		}
		return l.Delete(i)
	}
	return conflict("%s is not an object or array", p[:len(p)-1])
}

// add sets (replace: only if it exists) or inserts the value at p.
func add(doc *automerge.Doc, p jsonpatch.Pointer, val any, datatype string, replace bool) error {
	c, tok, err := parent(doc, p)
	if err != nil {
		return err
	}
	switch c.Kind() {
	case automerge.KindMap:
		m := c.Map()
		if replace {
			if v, err := m.Get(tok); err != nil {
				return err
			} else if v.IsVoid() {
				return conflict("%s does not exist (replace needs it; add creates it)", p)
			}
		}
		return put(func(x any) error { return m.Set(tok, x) }, val, datatype)
	case automerge.KindList:
		l := c.List()
		n := l.Len()
		if tok == "-" && !replace {
			return put(func(x any) error { return l.Append(x) }, val, datatype)
		}
		max := n + 1 // add may insert at the end
		if replace {
			max = n
		}
		i, err := jsonpatch.Index(tok, max)
		if err != nil {
			return conflict("%s: %v", p, err)
		}
		if replace {
			return put(func(x any) error { return l.Set(i, x) }, val, datatype)
		}
		return put(func(x any) error { return l.Insert(i, x) }, val, datatype)
	}
	return conflict("%s is not an object or array", p[:len(p)-1])
}

// put writes a JSON value through attach (which puts one automerge value
// in place): strings become text (as @automerge/automerge does with a JS
// string), integers int64 (uint64 above its range), other numbers
// float64, and objects and arrays are filled after they are attached.
func put(attach func(any) error, v any, datatype string) error {
	switch v := v.(type) {
	case nil, bool, float64:
		return attach(v)
	case int64, uint64: // copied from the document (plain)
		return attach(v)
	case json.Number:
		if datatype == jsonpatch.DatatypeCounter {
			n, err := jsonpatch.Int(v)
			if err != nil {
				return invalid("a counter %v", err)
			}
			return attach(automerge.NewCounter(n))
		}
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return attach(i)
		}
		if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return attach(u)
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return invalid("number %s does not fit a 64-bit float", truncate(string(v)))
		}
		return attach(f)
	case string:
		return attach(automerge.NewText(v))
	case []any:
		l := automerge.NewList()
		if err := attach(l); err != nil {
			return err
		}
		for _, e := range v {
			if err := put(func(x any) error { return l.Append(x) }, e, ""); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		m := automerge.NewMap()
		if err := attach(m); err != nil {
			return err
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if err := put(func(x any) error { return m.Set(k, x) }, v[k], ""); err != nil {
				return err
			}
		}
		return nil
	}
	if datatype != "" && datatype != jsonpatch.DatatypeCounter {
		return invalid("unknown datatype %q", datatype)
	}
	return invalid("unsupported value %T", v)
}

// equal compares a value read from the document (plain) with one from a
// patch (numbers as json.Number): numbers by their value.
func equal(have, want any) bool {
	switch w := want.(type) {
	case json.Number:
		return numEqual(have, w)
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return false
		}
		for i := range w {
			if !equal(h[i], w[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok || len(h) != len(w) {
			return false
		}
		for k, wv := range w {
			hv, ok := h[k]
			if !ok || !equal(hv, wv) {
				return false
			}
		}
		return true
	}
	return have == want
}

func numEqual(have any, want json.Number) bool {
	w := string(want)
	switch h := have.(type) {
	case int64:
		if i, err := strconv.ParseInt(w, 10, 64); err == nil {
			return i == h
		}
		f, err := strconv.ParseFloat(w, 64)
		return err == nil && f == float64(h)
	case uint64:
		if u, err := strconv.ParseUint(w, 10, 64); err == nil {
			return u == h
		}
		f, err := strconv.ParseFloat(w, 64)
		return err == nil && f == float64(h)
	case float64:
		f, err := strconv.ParseFloat(w, 64)
		return err == nil && f == h
	}
	return false
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// Edit applies a patch to the document built from changes, as one change
// by a fresh actor (so concurrent edits never share an actor's sequence),
// with message and time, and returns that change's chunk and hash; a
// patch that changes nothing returns a nil chunk. Errors of the patch are
// *PatchError.
func Edit(changes [][]byte, ops []jsonpatch.Op, message string, at time.Time) ([]byte, automerge.ChangeHash, error) {
	doc, err := Load(changes)
	if err != nil {
		return nil, automerge.ChangeHash{}, err
	}
	if err := doc.SetActorID(automerge.NewActorID()); err != nil {
		return nil, automerge.ChangeHash{}, err
	}
	before := doc.Heads()
	if err := Apply(doc, ops); err != nil {
		return nil, automerge.ChangeHash{}, err
	}
	hash, err := doc.Commit(message, automerge.CommitOptions{Time: &at})
	if err != nil {
		if slices.Equal(doc.Heads(), before) {
			return nil, automerge.ChangeHash{}, nil // nothing to commit
		}
		return nil, automerge.ChangeHash{}, err
	}
	ch, err := doc.Change(hash)
	if err != nil {
		return nil, automerge.ChangeHash{}, err
	}
	return ch.Save(), hash, nil
}

// Save returns the compacted Automerge binary (a document chunk, as
// Automerge.save writes it) of the document built from changes.
func Save(changes [][]byte) ([]byte, error) {
	doc, err := Load(changes)
	if err != nil {
		return nil, err
	}
	return doc.Save(), nil
}

// ParseHeads parses a list of heads from a request (?heads=):
// comma-separated change hashes, each 64 hex digits (Automerge.getHeads)
// or bs58check (automerge-repo's handle.heads()); at most 64 of them.
func ParseHeads(s string) ([]automerge.ChangeHash, error) {
	parts := strings.Split(s, ",")
	if len(parts) > 64 {
		return nil, errors.New("at most 64 heads")
	}
	out := make([]automerge.ChangeHash, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		var h automerge.ChangeHash
		if b, err := hex.DecodeString(p); err == nil && len(b) == len(h) {
			copy(h[:], b)
		} else if hb, err := protocol.DecodeHead(p); err == nil {
			h = hb
		} else {
			return nil, fmt.Errorf("head %q is neither 64 hex digits nor a bs58check change hash", truncate(p))
		}
		out = append(out, h)
	}
	return out, nil
}

// WithExtra returns the change chunk with its extra bytes (the part of a
// change that Automerge keeps and ignores) set to extra, re-encoded as an
// uncompressed chunk, and the new chunk's hash. Only a change nobody has
// yet may be rewritten: its hash changes.
func WithExtra(chunk, extra []byte) ([]byte, automerge.ChangeHash, error) {
	c, err := amsync.ParseChange(chunk)
	if err != nil {
		return nil, automerge.ChangeHash{}, err
	}
	c.Extra = extra
	out := c.Encode()
	c2, err := amsync.ParseChange(out)
	if err != nil {
		return nil, automerge.ChangeHash{}, err
	}
	return out, automerge.ChangeHash(c2.Hash), nil
}
