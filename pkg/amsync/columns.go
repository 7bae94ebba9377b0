package amsync

import (
	"fmt"
	"math"
	"unicode/utf8"
)

// Column types: the low three bits of a column spec.
const (
	colGroup     = 0
	colActor     = 1
	colInteger   = 2
	colDelta     = 3
	colBoolean   = 4
	colString    = 5
	colValueMeta = 6
	colValue     = 7
	// colDeflate is the spec bit that marks a deflated column.
	colDeflate = 8
)

// Specs (id<<4 | type) of the change op columns the Rust core 0.5 reads
// (storage/change/change_op_columns.rs:29-36, 422-524).
const (
	specObjActor  = 0x01
	specObjCtr    = 0x02
	specKeyActor  = 0x11
	specKeyCtr    = 0x13
	specKeyStr    = 0x15
	specInsert    = 0x34
	specAction    = 0x42
	specValMeta   = 0x56
	specValRaw    = 0x57
	specPredGroup = 0x70
	specPredActor = 0x71
	specPredCtr   = 0x73
	specExpand    = 0x94
	specMarkName  = 0xa5
)

// opColumns holds the data of each op column the core reads; a nil or
// empty slice is an absent column.
type opColumns struct {
	objActor, objCtr            []byte
	keyActor, keyCtr, keyStr    []byte
	insert, action              []byte
	valMeta, valRaw             []byte
	predNum, predActor, predCtr []byte
	expand, markName            []byte
}

// logicalColumn is a column as the core's layout parser groups them
// (storage/columns.rs, ColumnLayoutParser): a simple column, a value
// (metadata plus raw bytes), or a group with its sub-columns.
type logicalColumn struct {
	spec  uint32
	data  []byte
	raw   []byte          // value columns: the raw value bytes
	parts []logicalColumn // group columns: the grouped columns
}

// layoutColumns mirrors how the core 0.5 turns a change's raw columns into
// op columns: Columns::parse (storage/columns.rs:77-87, 163-355) and
// ChangeOpsColumns::try_from (change_op_columns.rs:422-524). It matters
// for columns the core ignores: a group or value column with an id the
// core does not expect swallows the columns of that id that follow it, so
// they are absent for the core, and must be for us.
func layoutColumns(cols []Column) (*opColumns, error) {
	out := make([]logicalColumn, 0, len(cols))
	const (
		ready = iota
		inValue
		inGroup
	)
	state := ready
	var cur logicalColumn // pending value or group
	groupInValue := false
	for i, col := range cols {
		if col.Spec&colDeflate != 0 {
			// Change::parse_following_header refuses any deflated column
			// (storage/change.rs:126-128, CompressedChangeCols).
			return nil, malformed("change column 0x%x is deflated (the Automerge core 0.5 refuses compressed change columns)", col.Spec)
		}
		if i > 0 && col.Spec <= cols[i-1].Spec {
			return nil, malformed("column specs not strictly ascending")
		}
		id, typ := col.Spec>>4, col.Spec&7
	again:
		switch state {
		case ready:
			switch typ {
			case colGroup:
				cur, state, groupInValue = logicalColumn{spec: col.Spec, data: col.Data}, inGroup, false
			case colValueMeta:
				cur, state = logicalColumn{spec: col.Spec, data: col.Data}, inValue
			case colValue:
				return nil, malformed("raw value column 0x%x without its metadata column", col.Spec)
			default:
				out = append(out, logicalColumn{spec: col.Spec, data: col.Data})
			}
		case inValue:
			if typ != colValue {
				out, state = append(out, cur), ready
				goto again
			}
			if id != cur.spec>>4 {
				return nil, malformed("raw value column 0x%x follows metadata column 0x%x", col.Spec, cur.spec)
			}
			cur.raw = col.Data
			out, state = append(out, cur), ready
		case inGroup:
			if id != cur.spec>>4 {
				out, state = append(out, cur), ready
				goto again
			}
			if groupInValue {
				groupInValue = false
				if typ == colValue {
					cur.parts[len(cur.parts)-1].raw = col.Data
					continue
				}
			}
			switch typ {
			case colGroup:
				return nil, malformed("nested group column 0x%x", col.Spec)
			case colValue:
				return nil, malformed("raw value column 0x%x without its metadata column", col.Spec)
			case colValueMeta:
				groupInValue = true
			}
			cur.parts = append(cur.parts, logicalColumn{spec: col.Spec, data: col.Data})
		}
	}
	if state != ready {
		out = append(out, cur)
	}
	oc := &opColumns{}
	for _, l := range out {
		switch l.spec {
		case specObjActor:
			oc.objActor = l.data
		case specObjCtr:
			oc.objCtr = l.data
		case specKeyActor:
			oc.keyActor = l.data
		case specKeyCtr:
			oc.keyCtr = l.data
		case specKeyStr:
			oc.keyStr = l.data
		case specInsert:
			oc.insert = l.data
		case specAction:
			oc.action = l.data
		case specValMeta:
			oc.valMeta, oc.valRaw = l.data, l.raw
		case specPredGroup:
			oc.predNum = l.data
			switch {
			case len(l.parts) == 0:
			case len(l.parts) == 2 && isRLEIntType(l.parts[0].spec) && l.parts[1].spec&7 == colDelta:
				oc.predActor, oc.predCtr = l.parts[0].data, l.parts[1].data
			default:
				return nil, malformed("pred group columns are not (actor, delta counter)")
			}
		case specExpand:
			oc.expand = l.data
		case specMarkName:
			oc.markName = l.data
		}
		// Any other column is one the core 0.5 ignores.
	}
	return oc, nil
}

// isRLEIntType reports whether a grouped column is read as RLE integers
// (actor and integer columns both are).
func isRLEIntType(spec uint32) bool {
	t := spec & 7
	return t == colActor || t == colInteger
}

// slebStrict reads a signed LEB128 as the core's storage parser does
// (storage/parse/leb128.rs, leb128_i64): at most 64 bits, no overlong
// encodings.
func (r *reader) slebStrict(what string) (int64, error) { return r.slebStrictOf(what, "") }

// slebStrictOf is slebStrict of the value named what+suffix, joined only
// for an error: column decoders read a run length per run, and building
// its name each time was a sixth of the allocations of loading a
// document.
func (r *reader) slebStrictOf(what, suffix string) (int64, error) {
	var v int64
	var shift uint
	var prev byte
	for {
		if r.off >= len(r.b) {
			return 0, malformed("truncated %s%s", what, suffix)
		}
		c := r.b[r.off]
		r.off++
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift > 64 && c != 0 && c != 0x7f {
				return 0, malformed("%s%s overflows 64 bits", what, suffix)
			}
			if shift > 7 && ((c == 0 && prev&0x40 == 0) || (c == 0x7f && prev&0x40 != 0)) {
				return 0, malformed("overlong LEB128 in %s%s", what, suffix)
			}
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, nil
		}
		if shift > 64 {
			return 0, malformed("%s%s overflows 64 bits", what, suffix)
		}
		prev = c
	}
}

// rle value kinds.
const (
	rleUint = iota
	rleInt
	rleStr
)

// rleDecoder reads a run-length encoded column row by row
// (columnar/encoding/rle.rs, RleDecoder): a signed count n > 0 then one
// value repeated n times, n < 0 then -n literal values, or 0 then an
// unsigned count of nulls. It never expands a run, so a run of 2^60 rows
// costs nothing until its rows are read.
type rleDecoder struct {
	r       reader
	s       string // the column as a string, so string values are substrings
	kind    int
	name    string
	count   uint64 // rows left in the current run
	literal bool
	null    bool
	u       uint64 // current value (rleUint)
	i       int64  // current value (rleInt)
	str     string // current value (rleStr)
}

func newRLE(data []byte, kind int, name string) *rleDecoder {
	d := &rleDecoder{r: reader{b: data}, kind: kind, name: name}
	if kind == rleStr {
		d.s = string(data)
	}
	return d
}

func (d *rleDecoder) readValue() error {
	var err error
	switch d.kind {
	case rleUint:
		d.u, err = d.r.uleb(d.name)
	case rleInt:
		d.i, err = d.r.slebStrict(d.name)
	default:
		n, bad := d.r.ulebRaw()
		if bad != ulebOK {
			return ulebError(bad, d.name, " string length")
		}
		if n > uint64(len(d.r.rest())) {
			return malformed("%s: string of %d bytes, %d left", d.name, n, len(d.r.rest()))
		}
		start := d.r.off
		d.r.off += int(n)
		if !utf8.Valid(d.r.b[start:d.r.off]) {
			return malformed("%s: string is not UTF-8", d.name)
		}
		d.str = d.s[start:d.r.off]
	}
	return err
}

// next reads one row. ok is false for a null row and for a row past the
// end of the column: the core treats both the same way everywhere.
func (d *rleDecoder) next() (ok bool, err error) {
	for d.count == 0 {
		if d.r.done() {
			return false, nil
		}
		n, err := d.r.slebStrictOf(d.name, " run length")
		if err != nil {
			return false, err
		}
		switch {
		case n > 0:
			d.count, d.literal, d.null = uint64(n), false, false
			if err := d.readValue(); err != nil {
				return false, err
			}
		case n < 0:
			if n == math.MinInt64 {
				return false, malformed("%s: literal run length out of range", d.name)
			}
			d.count, d.literal, d.null = uint64(-n), true, false
		default:
			var bad int
			if d.count, bad = d.r.ulebRaw(); bad != ulebOK {
				return false, ulebError(bad, d.name, " null run length")
			}
			d.literal, d.null = false, true
		}
	}
	d.count--
	if d.literal {
		if err := d.readValue(); err != nil {
			return false, err
		}
	}
	return !d.null, nil
}

// exhausted reports whether every row of the column has been read.
func (d *rleDecoder) exhausted() bool { return d.count == 0 && d.r.done() }

// deltaDecoder reads a delta column: RLE signed deltas whose running sum
// (saturating, as in columnar/encoding/delta.rs) is the value; null rows
// leave the sum alone.
type deltaDecoder struct {
	rle *rleDecoder
	abs int64
}

func newDelta(data []byte, name string) *deltaDecoder {
	return &deltaDecoder{rle: newRLE(data, rleInt, name)}
}

func (d *deltaDecoder) next() (v int64, ok bool, err error) {
	ok, err = d.rle.next()
	if !ok || err != nil {
		return 0, false, err
	}
	d.abs = saturatingAdd(d.abs, d.rle.i)
	return d.abs, true, nil
}

func saturatingAdd(a, b int64) int64 {
	s := a + b
	switch {
	case a > 0 && b > 0 && s < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && s >= 0:
		return math.MinInt64
	}
	return s
}

// boolDecoder reads a boolean column (columnar/encoding/boolean.rs):
// alternating run lengths, the first run being false.
type boolDecoder struct {
	r     reader
	name  string
	count uint64
	val   bool
}

func newBool(data []byte, name string) *boolDecoder {
	return &boolDecoder{r: reader{b: data}, name: name, val: true}
}

// next reads one row; ok is false past the end of the column.
func (d *boolDecoder) next() (v, ok bool, err error) {
	for d.count == 0 {
		if d.r.done() {
			return false, false, nil
		}
		var bad int
		if d.count, bad = d.r.ulebRaw(); bad != ulebOK {
			return false, false, ulebError(bad, d.name, " run length")
		}
		d.val = !d.val
	}
	d.count--
	return d.val, true, nil
}

func (d *boolDecoder) exhausted() bool { return d.count == 0 && d.r.done() }

// opDecoder decodes the op columns of one change.
type opDecoder struct {
	c      *Change
	maxOps int
	actors []string // index 0 is the change's actor, then OtherActors
	cols   *opColumns
}

func newOpDecoder(c *Change, maxOps int) (*opDecoder, error) {
	cols, err := layoutColumns(c.Columns)
	if err != nil {
		return nil, err
	}
	actors := make([]string, 0, 1+len(c.OtherActors))
	actors = append(actors, string(c.Actor))
	for _, a := range c.OtherActors {
		actors = append(actors, string(a))
	}
	return &opDecoder{c: c, maxOps: maxOps, actors: actors, cols: cols}, nil
}

// actions decodes the action column, whose length is the number of ops
// (the core iterates until it is exhausted, change_op_columns.rs:357-364).
func (d *opDecoder) actions() ([]Action, error) {
	var acts []Action
	err := eachAction(d.cols.action, d.maxOps, func(a Action) { acts = append(acts, a) })
	return acts, err
}

// eachAction calls f with each action of an action column, in order,
// refusing a column of more than maxOps actions before expanding it.
func eachAction(col []byte, maxOps int, f func(Action)) error {
	dec := newRLE(col, rleUint, "action")
	n := 0
	for !dec.exhausted() {
		if dec.count == 0 {
			// Check the size of the next run before expanding it.
			save := *dec
			run, err := save.r.slebStrict("action run length")
			if err != nil {
				return err
			}
			if run == 0 {
				return malformed("null action")
			}
			if run < 0 && run != math.MinInt64 {
				run = -run
			}
			if run < 0 || uint64(run) > uint64(maxOps-n) {
				return malformed("change has more than %d ops", maxOps)
			}
		}
		ok, err := dec.next()
		if err != nil {
			return err
		}
		if !ok {
			return malformed("null action")
		}
		if dec.u > uint64(ActionMark) {
			// validate_action_and_value (types.rs:236-250)
			return malformed("unknown action %d", dec.u)
		}
		f(Action(dec.u))
		n++
	}
	return nil
}

// actor resolves an actor index read from a column.
func (d *opDecoder) actor(i int, what string, idx uint64) (string, error) {
	if idx >= uint64(len(d.actors)) {
		// import_ops indexes the change's actor table with it
		// (automerge.rs:762, 770, 776: index out of bounds).
		return "", opError(i, "%s actor index %d, the change has %d actors", what, idx, len(d.actors))
	}
	return d.actors[idx], nil
}

// counter checks a counter that names another op: op i can only refer to
// ops made before it, whose counters are smaller than its own.
func (d *opDecoder) counter(i int, what string, ctr, own uint64) error {
	if ctr == 0 || ctr >= own {
		return opError(i, "%s counter %d, must be between 1 and the op's own counter %d", what, ctr, own)
	}
	return nil
}

func (d *opDecoder) decode() ([]Op, error) {
	c := d.c
	if c.StartOp == 0 || c.StartOp > MaxCounter {
		// verify_ops requires start_op <= u32::MAX (storage/change.rs:180).
		return nil, malformed("start op %d out of range", c.StartOp)
	}
	acts, err := d.actions()
	if err != nil {
		return nil, err
	}
	if n := uint64(len(acts)); n > 0 && c.StartOp+n-1 > MaxCounter {
		// import_ops builds OpId::new(start_op + i) (automerge.rs:757, types.rs:503).
		return nil, malformed("op counters %d..%d exceed %d", c.StartOp, c.StartOp+n-1, uint64(MaxCounter))
	}
	cols := d.cols
	// ObjIdRange::new (obj_id.rs:21-27): without both columns every op is on the root.
	objPresent := len(cols.objActor) > 0 && len(cols.objCtr) > 0
	if !objPresent && len(cols.objActor)+len(cols.objCtr) > 0 {
		return nil, malformed("object actor and counter columns must both be present or absent")
	}
	var (
		objActor  = newRLE(cols.objActor, rleUint, "object actor")
		objCtr    = newRLE(cols.objCtr, rleUint, "object counter")
		keyActor  = newRLE(cols.keyActor, rleUint, "key actor")
		keyCtr    = newDelta(cols.keyCtr, "key counter")
		keyStr    = newRLE(cols.keyStr, rleStr, "key string")
		insert    = newBool(cols.insert, "insert")
		valMeta   = newRLE(cols.valMeta, rleUint, "value metadata")
		raw       = reader{b: cols.valRaw}
		rawStr    = string(cols.valRaw)
		predNum   = newRLE(cols.predNum, rleUint, "pred count")
		predActor = newRLE(cols.predActor, rleUint, "pred actor")
		predCtr   = newDelta(cols.predCtr, "pred counter")
		expand    = newBool(cols.expand, "expand")
		markName  = newRLE(cols.markName, rleStr, "mark name")
		preds     = 0
	)
	ops := make([]Op, len(acts))
	for i := range ops {
		op := &ops[i]
		own := c.StartOp + uint64(i)
		op.ID = OpID{Counter: own, Actor: d.actors[0]}
		op.Action = acts[i]

		// Object (obj_id.rs:123-141).
		if objPresent {
			aok, err := objActor.next()
			if err != nil {
				return nil, err
			}
			cok, err := objCtr.next()
			if err != nil {
				return nil, err
			}
			switch {
			case !aok && !cok:
			case aok && cok && objCtr.u != 0:
				if op.Obj.Actor, err = d.actor(i, "object", objActor.u); err != nil {
					return nil, err
				}
				if err := d.counter(i, "object", objCtr.u, own); err != nil {
					return nil, err
				}
				op.Obj.Counter = objCtr.u
			case cok && objCtr.u == 0:
				// The core reads this as the root; no Automerge writes it.
				return nil, opError(i, "object counter 0")
			case !aok:
				return nil, opError(i, "null object actor")
			default:
				return nil, opError(i, "null object counter")
			}
		}

		// Key (key.rs:146-190).
		aok, err := keyActor.next()
		if err != nil {
			return nil, err
		}
		ctr, cok, err := keyCtr.next()
		if err != nil {
			return nil, err
		}
		sok, err := keyStr.next()
		if err != nil {
			return nil, err
		}
		switch {
		case aok && cok && sok:
			return nil, opError(i, "key has an actor, a counter and a string")
		case !aok && !cok && sok:
			op.Key = Key{Kind: KeyProp, Prop: keyStr.str}
		case !aok && cok && ctr == 0 && !sok:
			op.Key = Key{Kind: KeyElem}
		case aok && cok && !sok:
			if ctr < 0 {
				return nil, opError(i, "negative key counter")
			}
			if ctr == 0 {
				// The core makes an element id (0, actor) of it, which is
				// HEAD for one actor and nothing for the others.
				return nil, opError(i, "key counter 0 with an actor")
			}
			a, err := d.actor(i, "key", keyActor.u)
			if err != nil {
				return nil, err
			}
			if err := d.counter(i, "key element", uint64(ctr), own); err != nil {
				return nil, err
			}
			op.Key = Key{Kind: KeyElem, Elem: OpID{Counter: uint64(ctr), Actor: a}}
		case !aok && !cok && !sok:
			return nil, opError(i, "null key")
		case !aok:
			return nil, opError(i, "null key actor")
		default:
			return nil, opError(i, "null key counter")
		}

		// Insert.
		v, ok, err := insert.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, opError(i, "null insert")
		}
		op.Insert = v

		// Value (value.rs:209-310).
		ok, err = valMeta.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, opError(i, "null value metadata")
		}
		if op.Value, err = decodeValue(valMeta.u, &raw, rawStr); err != nil {
			return nil, fmt.Errorf("op %d: %w", i, err)
		}

		// Pred (opid_list.rs:181-215).
		ok, err = predNum.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, opError(i, "null pred count")
		}
		if n := predNum.u; n > 0 {
			if n > uint64(d.maxOps-preds) {
				return nil, malformed("change has more than %d predecessor references", d.maxOps)
			}
			preds += int(n)
			op.Pred = make([]OpID, n)
			for j := range op.Pred {
				aok, err := predActor.next()
				if err != nil {
					return nil, err
				}
				ctr, cok, err := predCtr.next()
				if err != nil {
					return nil, err
				}
				switch {
				case !aok:
					return nil, opError(i, "null pred actor")
				case !cok:
					return nil, opError(i, "null pred counter")
				case ctr < 0:
					return nil, opError(i, "negative pred counter")
				}
				a, err := d.actor(i, "pred", predActor.u)
				if err != nil {
					return nil, err
				}
				if err := d.counter(i, "pred", uint64(ctr), own); err != nil {
					return nil, err
				}
				op.Pred[j] = OpID{Counter: uint64(ctr), Actor: a}
			}
		}

		// Expand and mark name: optional columns.
		if len(cols.expand) > 0 {
			v, ok, err := expand.next()
			if err != nil {
				return nil, err
			}
			op.Expand = ok && v
		}
		if op.HasMarkName, err = markName.next(); err != nil {
			return nil, err
		}
		if op.HasMarkName {
			op.MarkName = markName.str
		}

		if err := checkOp(i, op); err != nil {
			return nil, err
		}
	}
	// The core stops at the last action and ignores anything after it in
	// the other columns; no Automerge writes such rows, and a change that
	// has them cannot be saved and loaded again.
	for _, col := range []*rleDecoder{objActor, objCtr, keyActor, keyCtr.rle, keyStr, valMeta, predNum, predActor, predCtr.rle, markName} {
		if !col.exhausted() {
			return nil, malformed("%s column has more rows than the change has ops", col.name)
		}
	}
	for _, col := range []*boolDecoder{insert, expand} {
		if !col.exhausted() {
			return nil, malformed("%s column has more rows than the change has ops", col.name)
		}
	}
	if !raw.done() {
		return nil, malformed("value column has %d bytes no op uses", len(raw.rest()))
	}
	return ops, nil
}

// checkOp applies the stateless per-op rules beyond decoding.
func checkOp(i int, op *Op) error {
	if op.Action == ActionIncrement && op.Value.Type != ValueInt && op.Value.Type != ValueUint {
		// validate_action_and_value (types.rs:243-246).
		return opError(i, "increment by a %v value", op.Value.Type)
	}
	if op.Insert && op.Key.Kind != KeyElem {
		// An insert into a map is accepted by the core and makes the
		// next map op on that object panic (op_set.rs:447).
		return opError(i, "insert with a map key %s", op.Key)
	}
	if !op.Insert && op.Key.IsHead() {
		return opError(i, "%v of the HEAD element (only inserts use HEAD)", op.Action)
	}
	if op.Action == ActionDelete && len(op.Pred) == 0 {
		// Automerge never writes a delete of nothing; the core would
		// accept it and then fail to load its own snapshot.
		return opError(i, "delete without predecessors")
	}
	return nil
}

// decodeValue turns value metadata and the value's raw bytes into a Value
// (columnar/column_range/value.rs, ValueIter). rawStr is raw's data as a
// string, so string values are substrings of it.
func decodeValue(meta uint64, raw *reader, rawStr string) (Value, error) {
	typ, length := meta&0x0f, meta>>4
	switch typ {
	case uint64(ValueNull), uint64(ValueFalse), uint64(ValueTrue):
		// The core ignores the length of these; no Automerge writes one.
		if length != 0 {
			return Value{}, malformed("value of type %d with length %d", typ, length)
		}
		return Value{Type: ValueType(typ)}, nil
	}
	if typ > uint64(ValueTimestamp) {
		return Value{}, malformed("unknown value type code %d", typ)
	}
	if length > uint64(len(raw.rest())) {
		return Value{}, malformed("value of %d bytes, %d left in the value column", length, len(raw.rest()))
	}
	start := raw.off
	b, _ := raw.bytes(int(length), "value")
	v := Value{Type: ValueType(typ)}
	switch v.Type {
	case ValueUint:
		r := &reader{b: b}
		u, err := r.uleb("uint value")
		if err != nil {
			return Value{}, err
		}
		if !r.done() {
			return Value{}, malformed("extra bytes after uint value")
		}
		v.num = u
	case ValueInt, ValueCounter, ValueTimestamp:
		r := &reader{b: b}
		i, err := r.slebStrict("int value")
		if err != nil {
			return Value{}, err
		}
		if !r.done() {
			return Value{}, malformed("extra bytes after int value")
		}
		v.num = uint64(i)
	case ValueFloat:
		if length != 8 {
			return Value{}, malformed("float value of %d bytes (want 8)", length)
		}
		for k := 7; k >= 0; k-- {
			v.num = v.num<<8 | uint64(b[k])
		}
	case ValueString:
		if !utf8.Valid(b) {
			return Value{}, malformed("string value is not UTF-8")
		}
		v.str = rawStr[start:raw.off]
	case ValueBytes:
		v.str = rawStr[start:raw.off]
	}
	return v, nil
}
