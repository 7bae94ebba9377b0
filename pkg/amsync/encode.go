package amsync

import (
	"bytes"
	"crypto/sha256"
	"math"
	"slices"
)

// Encode writes the change as an uncompressed change chunk (type 1) from
// its fields, Columns and Extra included, with the checksum those bytes
// call for; Raw and Hash are ignored. For a change parsed from an
// uncompressed chunk it returns that chunk. Tests use it to build hostile
// changes that pass the checksum, so what they exercise is the op checks.
func (c *Change) Encode() []byte {
	body := appendHashes(nil, c.Deps)
	body = appendPrefixed(body, c.Actor)
	body = appendULEB(body, c.Seq)
	body = appendULEB(body, c.StartOp)
	body = appendSLEB(body, c.Time)
	body = appendPrefixed(body, []byte(c.Message))
	body = appendULEB(body, uint64(len(c.OtherActors)))
	for _, a := range c.OtherActors {
		body = appendPrefixed(body, a)
	}
	body = appendULEB(body, uint64(len(c.Columns)))
	for _, col := range c.Columns {
		body = appendULEB(body, uint64(col.Spec))
		body = appendULEB(body, uint64(len(col.Data)))
	}
	for _, col := range c.Columns {
		body = append(body, col.Data...)
	}
	body = append(body, c.Extra...)

	hdr := appendULEB([]byte{chunkChange}, uint64(len(body)))
	h := sha256.New()
	h.Write(hdr)
	h.Write(body)
	sum := h.Sum(nil)
	out := make([]byte, 0, len(magic)+4+len(hdr)+len(body))
	out = append(out, magic...)
	out = append(out, sum[:4]...)
	out = append(out, hdr...)
	return append(out, body...)
}

// SetOps replaces the change's OtherActors and Columns with the encoding of
// ops, written the way the Rust core 0.5 writes a change it builds
// (ChangeBuilder::build, storage/change.rs; ChangeOpsColumns::encode):
// the other actors are the actors the ops refer to, sorted; empty columns
// are left out. The ops' own IDs are not stored (they follow from StartOp
// and the order), nor checked: SetOps encodes whatever it is given, which
// is what tests of hostile changes need. Call Encode for the chunk.
func (c *Change) SetOps(ops []Op) {
	self := string(c.Actor)
	others := map[string]bool{}
	note := func(id OpID) {
		if !id.IsZero() && id.Actor != self {
			others[id.Actor] = true
		}
	}
	for i := range ops {
		note(ops[i].Obj)
		if ops[i].Key.Kind == KeyElem {
			note(ops[i].Key.Elem)
		}
		for _, p := range ops[i].Pred {
			note(p)
		}
	}
	sorted := make([]string, 0, len(others))
	for a := range others {
		sorted = append(sorted, a)
	}
	slices.Sort(sorted)
	index := map[string]uint64{self: 0}
	c.OtherActors = make([][]byte, len(sorted))
	for i, a := range sorted {
		index[a] = uint64(i + 1)
		c.OtherActors[i] = []byte(a)
	}
	c.Columns = encodeOps(ops, func(id OpID) uint64 { return index[id.Actor] })
}

// encodeOps encodes ops into change op columns; actor maps an OpID to its
// actor index.
func encodeOps(ops []Op, actor func(OpID) uint64) []Column {
	var (
		objActor  = newRLEEnc(appendULEB)
		objCtr    = newRLEEnc(appendULEB)
		keyActor  = newRLEEnc(appendULEB)
		keyCtr    = newDeltaEnc()
		keyStr    = newRLEEnc(appendStr)
		insert    = &boolEncoder{}
		action    = newRLEEnc(appendULEB)
		valMeta   = newRLEEnc(appendULEB)
		valRaw    []byte
		predNum   = newRLEEnc(appendULEB)
		predActor = newRLEEnc(appendULEB)
		predCtr   = newDeltaEnc()
		expand    = &boolEncoder{}
		anyExpand bool
		markName  = newRLEEnc(appendStr)
	)
	for i := range ops {
		op := &ops[i]
		if op.Obj.IsZero() {
			objActor.appendNull()
			objCtr.appendNull()
		} else {
			objActor.appendValue(actor(op.Obj))
			objCtr.appendValue(op.Obj.Counter)
		}
		switch {
		case op.Key.Kind == KeyProp:
			keyActor.appendNull()
			keyCtr.appendNull()
			keyStr.appendValue(op.Key.Prop)
		case op.Key.Elem.IsZero():
			keyActor.appendNull()
			keyCtr.appendValue(0)
			keyStr.appendNull()
		default:
			keyActor.appendValue(actor(op.Key.Elem))
			keyCtr.appendValue(int64(op.Key.Elem.Counter))
			keyStr.appendNull()
		}
		insert.append(op.Insert)
		action.appendValue(uint64(op.Action))
		var meta uint64
		meta, valRaw = appendValue(valRaw, op.Value)
		valMeta.appendValue(meta)
		predNum.appendValue(uint64(len(op.Pred)))
		for _, p := range op.Pred {
			predActor.appendValue(actor(p))
			predCtr.appendValue(int64(p.Counter))
		}
		expand.append(op.Expand)
		anyExpand = anyExpand || op.Expand
		if op.HasMarkName {
			markName.appendValue(op.MarkName)
		} else {
			markName.appendNull()
		}
	}
	var expandData []byte
	if anyExpand {
		expandData = expand.finish()
	}
	var cols []Column
	for _, col := range []Column{
		{specObjActor, objActor.finish()},
		{specObjCtr, objCtr.finish()},
		{specKeyActor, keyActor.finish()},
		{specKeyCtr, keyCtr.finish()},
		{specKeyStr, keyStr.finish()},
		{specInsert, insert.finish()},
		{specAction, action.finish()},
		{specValMeta, valMeta.finish()},
		{specValRaw, valRaw},
		{specPredGroup, predNum.finish()},
		{specPredActor, predActor.finish()},
		{specPredCtr, predCtr.finish()},
		{specExpand, expandData},
		{specMarkName, markName.finish()},
	} {
		if len(col.Data) > 0 {
			cols = append(cols, col)
		}
	}
	return cols
}

// appendValue appends v's raw bytes to raw and returns its metadata
// (value.rs, ValueMeta::from and encode_val).
func appendValue(raw []byte, v Value) (meta uint64, out []byte) {
	start := len(raw)
	switch v.Type {
	case ValueUint:
		raw = appendULEB(raw, v.num)
	case ValueInt, ValueCounter, ValueTimestamp:
		raw = appendSLEB(raw, int64(v.num))
	case ValueFloat:
		for k := 0; k < 8; k++ {
			raw = append(raw, byte(v.num>>(8*k)))
		}
	case ValueString, ValueBytes:
		raw = append(raw, v.str...)
	}
	return uint64(len(raw)-start)<<4 | uint64(v.Type&0x0f), raw
}

// CheckCanonical reports whether the change is written exactly as the
// Rust core 0.5 writes a change with these ops (ops as Ops returned
// them), and whether the ops survive the core's document format. The core
// stores a document as ops, not change bytes, and Load rebuilds each
// change and checks its hash (storage/load/change_collector.rs:56-61, 105-116, 193-196):
// a change that is accepted by sync but encoded differently, or carries
// data the op set drops, makes every snapshot saved after it unloadable.
// Changes written by automerge-go and Automerge JS 3.5 pass (see the
// tests). It does not decide whether the change is safe to apply: Ops and
// ObjIndex do.
func (c *Change) CheckCanonical(ops []Op) error {
	for i := 1; i < len(c.Deps); i++ {
		if bytes.Compare(c.Deps[i-1][:], c.Deps[i][:]) >= 0 {
			return malformed("dependencies not sorted")
		}
	}
	for i := range ops {
		op := &ops[i]
		for j := 1; j < len(op.Pred); j++ {
			a, b := op.Pred[j-1], op.Pred[j]
			if a.Counter > b.Counter || (a.Counter == b.Counter && a.Actor >= b.Actor) {
				return opError(i, "predecessors not sorted")
			}
		}
		// What the op set keeps of each action (storage/convert/op_as_changeop.rs:94-145).
		switch op.Action {
		case ActionMakeMap, ActionMakeList, ActionMakeText, ActionMakeTable, ActionDelete:
			if op.Value.Type != ValueNull {
				return opError(i, "%v with a value", op.Action)
			}
		case ActionIncrement:
			if op.Value.Type != ValueInt {
				return opError(i, "increment by a %v value", op.Value.Type)
			}
		case ActionMark:
			if !op.HasMarkName && op.Value.Type != ValueNull {
				return opError(i, "mark end with a value")
			}
		}
		if op.Action != ActionMark && (op.Expand || op.HasMarkName) {
			return opError(i, "expand or mark name on a %v op", op.Action)
		}
	}
	want := *c
	want.SetOps(ops)
	if !slices.EqualFunc(c.OtherActors, want.OtherActors, bytes.Equal) {
		return malformed("other actors are not the sorted actors the ops refer to")
	}
	if !slices.EqualFunc(c.Columns, want.Columns, func(a, b Column) bool {
		return a.Spec == b.Spec && bytes.Equal(a.Data, b.Data)
	}) {
		return malformed("op columns are not encoded as Automerge encodes them")
	}
	return nil
}

func appendPrefixed(b, p []byte) []byte {
	return append(appendULEB(b, uint64(len(p))), p...)
}

func appendSLEB(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendStr(b []byte, s string) []byte {
	return append(appendULEB(b, uint64(len(s))), s...)
}

// rle encoder states (columnar/encoding/rle.rs, RleState).
const (
	rleEmpty = iota
	rleInitialNull
	rleNull
	rleLone
	rleRun
	rleLiteral
)

// rleEncoder writes a run-length encoded column exactly as the Rust core
// does, so CheckCanonical can compare bytes.
type rleEncoder[T comparable] struct {
	out   []byte
	write func([]byte, T) []byte
	state int
	n     int // run length or null count
	val   T   // lone value, run value, or the last value of a literal run
	lit   []T // a literal run, without val
}

func newRLEEnc[T comparable](write func([]byte, T) []byte) *rleEncoder[T] {
	return &rleEncoder[T]{write: write}
}

func (e *rleEncoder[T]) flushRun(v T, n int) {
	e.out = appendSLEB(e.out, int64(n))
	e.out = e.write(e.out, v)
}

func (e *rleEncoder[T]) flushNull(n int) {
	e.out = appendSLEB(e.out, 0)
	e.out = appendULEB(e.out, uint64(n))
}

func (e *rleEncoder[T]) flushLiteral(run []T) {
	e.out = appendSLEB(e.out, -int64(len(run)))
	for _, v := range run {
		e.out = e.write(e.out, v)
	}
}

func (e *rleEncoder[T]) appendNull() {
	switch e.state {
	case rleEmpty:
		e.state, e.n = rleInitialNull, 1
		return
	case rleInitialNull, rleNull:
		e.n++
		return
	case rleLone:
		e.flushLiteral([]T{e.val})
	case rleRun:
		e.flushRun(e.val, e.n)
	case rleLiteral:
		e.flushLiteral(append(e.lit, e.val))
		e.lit = e.lit[:0]
	}
	e.state, e.n = rleNull, 1
}

func (e *rleEncoder[T]) appendValue(v T) {
	switch e.state {
	case rleEmpty:
		e.state, e.val = rleLone, v
	case rleLone:
		if e.val == v {
			e.state, e.n = rleRun, 2
		} else {
			e.lit = append(e.lit[:0], e.val)
			e.state, e.val = rleLiteral, v
		}
	case rleRun:
		if e.val == v {
			e.n++
		} else {
			e.flushRun(e.val, e.n)
			e.state, e.val = rleLone, v
		}
	case rleLiteral:
		if e.val == v {
			e.flushLiteral(e.lit)
			e.lit = e.lit[:0]
			e.state, e.n = rleRun, 2
		} else {
			e.lit = append(e.lit, e.val)
			e.val = v
		}
	case rleInitialNull, rleNull:
		e.flushNull(e.n)
		e.state, e.val = rleLone, v
	}
}

func (e *rleEncoder[T]) finish() []byte {
	switch e.state {
	case rleNull:
		e.flushNull(e.n)
	case rleLone:
		e.flushLiteral([]T{e.val})
	case rleRun:
		e.flushRun(e.val, e.n)
	case rleLiteral:
		e.flushLiteral(append(e.lit, e.val))
	}
	e.state = rleEmpty
	return e.out
}

// deltaEncoder writes a delta column (columnar/encoding/delta.rs).
type deltaEncoder struct {
	rle *rleEncoder[int64]
	abs int64
}

func newDeltaEnc() *deltaEncoder { return &deltaEncoder{rle: newRLEEnc(appendSLEB)} }

func (e *deltaEncoder) appendValue(v int64) {
	e.rle.appendValue(saturatingSub(v, e.abs))
	e.abs = v
}

func (e *deltaEncoder) appendNull() { e.rle.appendNull() }

func (e *deltaEncoder) finish() []byte { return e.rle.finish() }

func saturatingSub(a, b int64) int64 {
	if b == math.MinInt64 {
		if a >= 0 {
			return math.MaxInt64
		}
		return a - b
	}
	return saturatingAdd(a, -b)
}

// boolEncoder writes a boolean column (columnar/encoding/boolean.rs).
type boolEncoder struct {
	out   []byte
	last  bool
	count uint64
}

func (e *boolEncoder) append(v bool) {
	if v == e.last {
		e.count++
		return
	}
	e.out = appendULEB(e.out, e.count)
	e.last, e.count = v, 1
}

func (e *boolEncoder) finish() []byte {
	if e.count > 0 {
		e.out = appendULEB(e.out, e.count)
	}
	return e.out
}
