package amsync

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
)

// MaxOps bounds the operations Ops decodes from one change. Run-length
// encoding lets a hundred bytes claim 2^60 operations; the bound keeps
// decoding (about 200 bytes of memory per op) and the Automerge core's
// work per change finite. Honest changes reach it only with a paste or a
// deletion of about a million characters in one commit. The hub may apply
// a tighter policy with DecodeOps.
const MaxOps = 1 << 20

// MaxCounter is the largest op counter (an op's own counter and any
// counter it references) Ops accepts. The Rust core 0.5 stores counters
// as u32 and panics on anything larger (types.rs:503, OpId::new); the
// margin below 2^32 keeps a hostile change from pushing a document's max
// op so close to u32::MAX that honest peers can no longer commit (their
// next op id would overflow in their own core).
const MaxCounter = math.MaxInt32

// OpID identifies an operation, and an object by the operation that made
// it: a counter and the actor's id bytes. Actor holds the raw bytes (not
// hex) so that OpIDs are comparable map keys; actor indices cannot be
// used because they are local to each change. The zero OpID is the root
// object (as an object id) or HEAD (as a list element key).
type OpID struct {
	Counter uint64
	Actor   string
}

// IsZero reports whether id is the zero OpID: the root object or HEAD.
func (id OpID) IsZero() bool { return id.Counter == 0 && id.Actor == "" }

// String formats id as Automerge does, counter@actor-hex, or "_root".
func (id OpID) String() string {
	if id.IsZero() {
		return "_root"
	}
	return strconv.FormatUint(id.Counter, 10) + "@" + hex.EncodeToString([]byte(id.Actor))
}

// KeyKind says whether an op addresses a map entry or a list element.
type KeyKind uint8

// Key kinds. Maps and tables take KeyProp keys only, lists and text take
// KeyElem keys only: the Rust core 0.5 panics when an object's ops mix
// them (op_set.rs:447, "can only compare map keys").
const (
	KeyProp KeyKind = iota + 1
	KeyElem
)

// Key is where in its object an op acts: a map property, or a list
// element named by the op that inserted it (Elem), HEAD being the zero
// OpID (insert at the start).
type Key struct {
	Kind KeyKind
	Prop string
	Elem OpID
}

// IsHead reports whether k is the HEAD element key.
func (k Key) IsHead() bool { return k.Kind == KeyElem && k.Elem.IsZero() }

// String formats k for error messages.
func (k Key) String() string {
	switch {
	case k.Kind == KeyProp:
		return strconv.Quote(k.Prop)
	case k.IsHead():
		return "_head"
	default:
		return k.Elem.String()
	}
}

// Action is an op's action code, an index into Automerge's action array.
type Action uint8

// The actions the Rust core 0.5 knows (types.rs:224-250); it rejects
// any other code.
const (
	ActionMakeMap   Action = 0
	ActionPut       Action = 1
	ActionMakeList  Action = 2
	ActionDelete    Action = 3
	ActionMakeText  Action = 4
	ActionIncrement Action = 5
	ActionMakeTable Action = 6
	ActionMark      Action = 7
)

var actionNames = [...]string{"makeMap", "set", "makeList", "del", "makeText", "inc", "makeTable", "mark"}

// String returns the action's name as Automerge JS prints it.
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// ObjType returns the type of the object a make action creates.
func (a Action) ObjType() (ObjType, bool) {
	switch a {
	case ActionMakeMap:
		return ObjMap, true
	case ActionMakeList:
		return ObjList, true
	case ActionMakeText:
		return ObjText, true
	case ActionMakeTable:
		return ObjTable, true
	}
	return 0, false
}

// ObjType is the type of an Automerge object.
type ObjType uint8

// Object types. The root is a map.
const (
	ObjMap ObjType = iota + 1
	ObjList
	ObjText
	ObjTable
)

// IsSeq reports whether objects of type t are sequences (list, text),
// addressed by element keys, as opposed to maps and tables.
func (t ObjType) IsSeq() bool { return t == ObjList || t == ObjText }

// String returns the type's name.
func (t ObjType) String() string {
	switch t {
	case ObjMap:
		return "map"
	case ObjList:
		return "list"
	case ObjText:
		return "text"
	case ObjTable:
		return "table"
	}
	return "objtype(" + strconv.Itoa(int(t)) + ")"
}

// ValueType is the type code of an op's value, as the value metadata
// column stores it.
type ValueType uint8

// Value types (codes of the storage format). Codes 10-15 are reserved;
// the Rust core 0.5 keeps them as opaque "unknown" values, Ops rejects
// them because no Automerge writes them.
const (
	ValueNull      ValueType = 0
	ValueFalse     ValueType = 1
	ValueTrue      ValueType = 2
	ValueUint      ValueType = 3
	ValueInt       ValueType = 4
	ValueFloat     ValueType = 5
	ValueString    ValueType = 6
	ValueBytes     ValueType = 7
	ValueCounter   ValueType = 8
	ValueTimestamp ValueType = 9
)

var valueTypeNames = [...]string{"null", "false", "true", "uint", "int", "float", "string", "bytes", "counter", "timestamp"}

// String returns the type's name.
func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return "valuetype(" + strconv.Itoa(int(t)) + ")"
}

// Value is an op's scalar value. Use the accessor that matches Type.
type Value struct {
	Type ValueType
	num  uint64 // uint, int, counter, timestamp (two's complement) or float bits
	str  string // string or bytes
}

// NullValue returns the null value.
func NullValue() Value { return Value{Type: ValueNull} }

// BoolValue returns a boolean value.
func BoolValue(b bool) Value {
	if b {
		return Value{Type: ValueTrue}
	}
	return Value{Type: ValueFalse}
}

// UintValue returns an unsigned integer value.
func UintValue(u uint64) Value { return Value{Type: ValueUint, num: u} }

// IntValue returns a signed integer value (also the delta of an increment).
func IntValue(i int64) Value { return Value{Type: ValueInt, num: uint64(i)} }

// FloatValue returns a 64-bit float value.
func FloatValue(f float64) Value { return Value{Type: ValueFloat, num: math.Float64bits(f)} }

// StringValue returns a string value (one character of a text object).
func StringValue(s string) Value { return Value{Type: ValueString, str: s} }

// BytesValue returns a byte string value.
func BytesValue(b []byte) Value { return Value{Type: ValueBytes, str: string(b)} }

// CounterValue returns a counter's initial value.
func CounterValue(i int64) Value { return Value{Type: ValueCounter, num: uint64(i)} }

// TimestampValue returns a timestamp value (milliseconds since the epoch).
func TimestampValue(ms int64) Value { return Value{Type: ValueTimestamp, num: uint64(ms)} }

// Bool returns a boolean value's value.
func (v Value) Bool() bool { return v.Type == ValueTrue }

// Uint returns an unsigned integer value's value.
func (v Value) Uint() uint64 { return v.num }

// Int returns the value of an int, counter or timestamp.
func (v Value) Int() int64 { return int64(v.num) }

// Float returns a float value's value.
func (v Value) Float() float64 { return math.Float64frombits(v.num) }

// Str returns a string value's value.
func (v Value) Str() string { return v.str }

// Bytes returns a copy of a byte string value's bytes.
func (v Value) Bytes() []byte { return []byte(v.str) }

// String formats v for messages.
func (v Value) String() string { return fmt.Sprintf("%v", v.any()) }

func (v Value) any() any {
	switch v.Type {
	case ValueNull:
		return nil
	case ValueFalse, ValueTrue:
		return v.Bool()
	case ValueUint:
		return v.num
	case ValueInt, ValueCounter, ValueTimestamp:
		return v.Int()
	case ValueFloat:
		return v.Float()
	case ValueString:
		return v.str
	default:
		return []byte(v.str)
	}
}

// Op is one decoded operation of a change.
type Op struct {
	// ID is the op's own id: (change StartOp + index, change actor).
	ID OpID
	// Obj is the object the op acts on; the zero OpID for the root map.
	Obj OpID
	// Key is the property or list element the op acts on.
	Key Key
	// Insert is true when the op inserts a new list element after Key.
	Insert bool
	// Action says what the op does; make actions create the object whose
	// id is the op's ID.
	Action Action
	// Value is the op's scalar value (set), its delta (inc) or the mark's value.
	Value Value
	// Pred are the ops this op overwrites or deletes.
	Pred []OpID
	// Expand and MarkName belong to mark ops: a mark with a name begins a
	// mark range, one without ends it.
	Expand      bool
	MarkName    string
	HasMarkName bool
}

// Ops decodes and validates the change's operations with the MaxOps
// limit; see DecodeOps.
func (c *Change) Ops() ([]Op, error) { return c.DecodeOps(MaxOps) }

// DecodeOps decodes the change's op columns as the Rust core 0.5
// (automerge-go) does (storage/change/change_op_columns.rs), and checks
// each op against the rules that keep the core from panicking on it when
// it is applied. It returns an error wrapping ErrMalformed for a change
// the core would refuse to decode, and for one it would decode but then
// panic on or store inconsistently; it never returns ops the core would
// read differently. maxOps (at most MaxOps) bounds the number of ops and,
// separately, of predecessor references.
//
// Stateless rules only: whether each op's object exists and its key kind
// fits the object's type needs the document's history; see ObjIndex.
func (c *Change) DecodeOps(maxOps int) ([]Op, error) {
	if maxOps <= 0 || maxOps > MaxOps {
		maxOps = MaxOps
	}
	if len(c.Raw) > 8 && bytes.Equal(c.Raw[:4], magic) && c.Raw[8] == chunkCompressedChange {
		// The core 0.5's sync message parser does not inflate: it reads the
		// deflated bytes of a compressed chunk as a change body
		// (sync.rs:499-503 and storage/change.rs:88, "TODO(alex): check chunk type"), so ops checked
		// here would not be the ops the core applies.
		return nil, malformed("compressed change chunk (the Automerge core 0.5 reads it as uncompressed)")
	}
	d, err := newOpDecoder(c, maxOps)
	if err != nil {
		return nil, err
	}
	return d.decode()
}

// opError formats an error about op i of a change.
func opError(i int, format string, args ...any) error {
	return malformed("op %d: %s", i, fmt.Sprintf(format, args...))
}
