package amsync

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
)

// fixChecksum rewrites the checksum of an uncompressed change chunk so
// that mutated bytes get past ParseChange's checksum check, as an attacker's
// would, and the fuzzer explores the op columns.
func fixChecksum(b []byte) []byte {
	if len(b) < 10 || !bytes.Equal(b[:4], magic) || b[8] != chunkChange {
		return b
	}
	b = slices.Clone(b)
	sum := sha256.Sum256(b[8:])
	copy(b[4:8], sum[:4])
	return b
}

// fuzzBase is the document fuzzed changes are applied to, and what the
// hub would know about it.
type fuzzBase struct {
	doc    *automerge.Doc
	index  *ObjIndex
	seqs   map[string]uint64 // applied changes per actor
	hashes map[Hash]bool
	// objects and list elements of the document, for FuzzOpsEdit to aim at
	objects, elems []OpID
	execs, applied int
}

func newFuzzBase(t testing.TB) (*fuzzBase, [][]byte) {
	doc := smallDoc(t)
	b := &fuzzBase{doc: doc, index: NewObjIndex(), seqs: map[string]uint64{}, hashes: map[Hash]bool{}}
	for _, raw := range docChanges(t, doc) {
		c, err := ParseChange(raw)
		if err != nil {
			t.Fatal(err)
		}
		ops, err := c.Ops()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.index.Apply(ops); err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			if _, ok := op.Action.ObjType(); ok {
				b.objects = append(b.objects, op.ID)
			}
			if op.Insert {
				b.elems = append(b.elems, op.ID)
			}
		}
		b.seqs[string(c.Actor)]++
		b.hashes[c.Hash] = true
	}
	// Seeds: one new change per fork of the document, each a different
	// kind of edit on its objects.
	var seeds [][]byte
	edits := []func(d *automerge.Doc) error{
		func(d *automerge.Doc) error { return d.RootMap().Set("new", "v") },
		func(d *automerge.Doc) error { return d.RootMap().Set("n2", automerge.NewCounter(3)) },
		func(d *automerge.Doc) error { return d.Path("list").List().Append(int64(1), "x", 2.5) },
		func(d *automerge.Doc) error { return d.Path("text").Text().Splice(1, 2, "hello") },
		func(d *automerge.Doc) error { return d.Path("n").Counter().Inc(4) },
		func(d *automerge.Doc) error {
			return d.Path("nested", "made").Set(map[string]any{"l": []any{"a", int64(2)}, "t": automerge.NewText("tt")})
		},
		func(d *automerge.Doc) error {
			if err := d.RootMap().Delete("list"); err != nil {
				return err
			}
			tx, err := d.RootMap().Get("text")
			if err != nil {
				return err
			}
			return tx.Text().Delete(0, 3)
		},
	}
	for i, edit := range edits {
		f, err := doc.Fork()
		if err != nil {
			t.Fatal(err)
		}
		if err := edit(f); err != nil {
			t.Fatal(err)
		}
		h, err := f.Commit(fmt.Sprintf("seed %d", i))
		if err != nil {
			t.Fatal(err)
		}
		ch, err := f.Change(h)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, ch.Save())
	}
	return b, seeds
}

// smallDoc is a document with one object of each kind, edited by two
// actors: small, so that each fuzz execution can copy it.
func smallDoc(t testing.TB) *automerge.Doc {
	doc := automerge.New()
	rm := doc.RootMap()
	for _, err := range []error{
		rm.Set("text", automerge.NewText("hello")),
		rm.Set("list", []any{int64(1), "a"}),
		rm.Set("n", automerge.NewCounter(0)),
		rm.Set("nested", map[string]any{"l": []any{"x"}, "t": automerge.NewText("in")}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := doc.Commit("init"); err != nil {
		t.Fatal(err)
	}
	other, err := doc.Fork()
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		other.Path("text").Text().Insert(5, " world"),
		func() error {
			l, err := other.RootMap().Get("list")
			if err != nil {
				return err
			}
			return l.List().Delete(0)
		}(),
		other.Path("nested", "k").Set("v"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.Commit("other"); err != nil {
		t.Fatal(err)
	}
	if err := doc.Path("n").Counter().Inc(2); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit("inc"); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Merge(other); err != nil {
		t.Fatal(err)
	}
	return doc
}

var heapAllocs = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}

func allocated() uint64 {
	metrics.Read(heapAllocs)
	return heapAllocs[0].Value.Uint64()
}

// FuzzOps feeds mutated change chunks (checksums fixed) to ParseChange,
// DecodeOps and ObjIndex, and everything they accept to automerge-go the
// way the hub would (a sync message), followed by honest edits and the
// calls that run into the core's delayed panics (GenerateMessage,
// SaveIncremental, Changes, Save). A panic in the Rust core aborts the
// fuzzing process, which the fuzzer reports as a crash: the property
// tested is that what Ops and ObjIndex accept cannot crash the core.
func FuzzOps(f *testing.F) {
	base, seeds := newFuzzBase(f)
	for _, s := range seeds {
		f.Add(s)
	}
	c, ops := base.seedChange(f, seeds[0])
	for _, mutate := range []func(*Change){
		func(c *Change) { setColumn(c, specAction, appendULEB(appendSLEB(nil, 1<<40), 1)) },
		func(c *Change) { setColumn(c, specObjActor, uints(3)); setColumn(c, specObjCtr, uints(1)) },
		func(c *Change) { c.StartOp = 1<<32 - 1 },
	} {
		f.Add(rebuild(f, c, ops, mutate).Encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) { base.run(t, fixChecksum(b)) })
}

// fuzzLimit is the op limit of the fuzz targets, to keep executions fast.
const fuzzLimit = 1 << 12

// run puts one change chunk through the hub's checks and, if they pass,
// through the core.
func (b *fuzzBase) run(t *testing.T, raw []byte) {
	if b.execs++; b.execs%200 == 0 {
		runtime.GC() // automerge-go frees C memory in finalizers only
	}
	c, err := ParseChange(raw)
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		return
	}
	before := allocated()
	ops, err := c.DecodeOps(fuzzLimit)
	if grew := allocated() - before; grew > 16<<20 {
		t.Fatalf("decoding %d bytes allocated %d bytes", len(raw), grew)
	}
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		return
	}
	if len(ops) > fuzzLimit {
		t.Fatalf("%d ops over the limit %d", len(ops), fuzzLimit)
	}
	// Encoding what was decoded and decoding again gives the same ops.
	re := *c
	re.SetOps(ops)
	c2, err := ParseChange(re.Encode())
	if err != nil {
		t.Fatalf("re-encoded change does not parse: %v", err)
	}
	ops2, err := c2.DecodeOps(fuzzLimit)
	if err != nil {
		t.Fatalf("re-encoded change rejected: %v", err)
	}
	if !reflect.DeepEqual(ops, ops2) {
		t.Fatal("ops differ after re-encoding")
	}
	_ = c.CheckCanonical(ops)
	// AddAccepted, which reads the action column alone, records what Add
	// records from the decoded ops.
	sameAsAdd(t, c, ops)

	// What the hub checks before the core sees a change: the objects
	// and keys (ObjIndex), seq continuity and causal readiness (notes
	// §5 A), uncompressed chunks only.
	if raw[8] != chunkChange || b.index.Check(ops) != nil || b.hashes[c.Hash] || c.Seq != b.seqs[string(c.Actor)]+1 {
		return
	}
	for _, d := range c.Deps {
		if !b.hashes[d] {
			return
		}
	}
	b.applied++
	b.apply(t, raw)
}

func (b *fuzzBase) seedChange(t testing.TB, raw []byte) (*Change, []Op) {
	c, err := ParseChange(raw)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := c.Ops()
	if err != nil {
		t.Fatal(err)
	}
	return c, ops
}

// apply gives the change to a copy of the base document through a sync
// message, then does what comes next in the hub and in honest clients.
func (b *fuzzBase) apply(t *testing.T, raw []byte) {
	doc, err := b.doc.Fork()
	if err != nil {
		t.Fatal(err)
	}
	ss := automerge.NewSyncState(doc)
	msg := (&Message{Type: MessageTypeSync, Changes: [][]byte{raw}}).Encode()
	if _, err := ss.ReceiveMessage(msg); err != nil {
		return // refused cleanly by the core
	}
	ss.GenerateMessage()
	doc.SaveIncremental()
	if _, err := doc.Changes(); err != nil {
		t.Fatal(err)
	}
	// Honest edits on every object reachable from the root: a time bomb
	// (a key of the wrong kind) goes off on the next op of the right kind.
	vals, err := doc.RootMap().Values()
	if err != nil {
		return
	}
	_ = doc.RootMap().Set("honest", int64(1))
	for _, v := range vals {
		switch v.Kind() {
		case automerge.KindMap:
			_ = v.Map().Set("honest", int64(1))
		case automerge.KindList:
			_ = v.List().Insert(0, int64(1))
			_ = v.List().Append("x")
		case automerge.KindText:
			_ = v.Text().Insert(0, "h")
		}
	}
	if _, err := doc.Commit("honest", automerge.CommitOptions{AllowEmpty: true}); err != nil {
		return
	}
	ss.GenerateMessage()
	doc.SaveIncremental()
	if _, err := automerge.Load(doc.Save()); err != nil {
		t.Logf("snapshot does not load (not a crash): %v", err)
	}
}

// TestFuzzOpsSeeds puts the fuzz seeds through the fuzz targets' path:
// every seed passes the hub's checks and reaches the core.
func TestFuzzOpsSeeds(t *testing.T) {
	base, seeds := newFuzzBase(t)
	for _, s := range seeds {
		base.run(t, s)
	}
	if base.applied != len(seeds) {
		t.Fatalf("%d of %d seeds reached the core", base.applied, len(seeds))
	}
}

// FuzzOpsEdit is FuzzOps with structure: it edits the decoded ops of a
// seed change (actions, keys of either kind, objects and elements of the
// document, predecessors, values, counters past u32, actor indices past
// the change's actor table, start op and seq) and encodes them again, so
// that the fuzzer reaches the core with well-formed columns carrying
// hostile ops far more often than byte mutations do. script is read
// three bytes at a time: op index, edit, argument.
func FuzzOpsEdit(f *testing.F) {
	base, seeds := newFuzzBase(f)
	for i := range seeds {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), []byte{0, 2, 1, 1, 4, 3})
		f.Add(uint8(i), []byte{0, 13, 5, 0, 6, 2, 0, 7, 9})
	}
	f.Fuzz(func(t *testing.T, seed uint8, script []byte) {
		c, ops := base.seedChange(t, seeds[int(seed)%len(seeds)])
		ch := *c
		ops = base.edit(&ch, cloneOps(ops), script)
		ch.OtherActors, ch.Columns = encodeRawActors(ch.Actor, ops)
		base.run(t, ch.Encode())
	})
}

// rawActor names, in an OpID, a raw actor index instead of an actor.
func rawActor(i uint8) string { return "\x00raw" + string(rune(i)) }

// encodeRawActors is SetOps, except that an actor named rawActor(i) is
// written as index i, whatever the change's actor table holds.
func encodeRawActors(self []byte, ops []Op) ([][]byte, []Column) {
	c := &Change{Actor: self}
	clean := cloneOps(ops)
	raw := func(id OpID) OpID {
		if strings.HasPrefix(id.Actor, "\x00raw") {
			return OpID{Counter: id.Counter, Actor: string(self)}
		}
		return id
	}
	for i := range clean {
		clean[i].Obj = raw(clean[i].Obj)
		clean[i].Key.Elem = raw(clean[i].Key.Elem)
		for j := range clean[i].Pred {
			clean[i].Pred[j] = raw(clean[i].Pred[j])
		}
	}
	c.SetOps(clean)
	index := map[string]uint64{string(self): 0}
	for i, a := range c.OtherActors {
		index[string(a)] = uint64(i + 1)
	}
	return c.OtherActors, encodeOps(ops, func(id OpID) uint64 {
		if strings.HasPrefix(id.Actor, "\x00raw") {
			return uint64([]rune(id.Actor[4:])[0])
		}
		return index[id.Actor]
	})
}

// edit applies a FuzzOpsEdit script to a change and its ops.
func (b *fuzzBase) edit(c *Change, ops []Op, script []byte) []Op {
	pickID := func(v byte) OpID {
		switch v % 4 {
		case 0:
			if len(b.objects) > 0 {
				return b.objects[int(v/4)%len(b.objects)]
			}
		case 1:
			if len(b.elems) > 0 {
				return b.elems[int(v/4)%len(b.elems)]
			}
		case 2:
			return OpID{Counter: c.StartOp + uint64(v/4)%8, Actor: string(c.Actor)}
		}
		return OpID{Counter: uint64(v / 4), Actor: rawActor(v % 8)}
	}
	for len(script) >= 3 {
		i, e, v := int(script[0]), script[1], script[2]
		script = script[3:]
		if len(ops) == 0 {
			ops = append(ops, Op{Key: Key{Kind: KeyProp, Prop: "k"}, Action: ActionPut})
		}
		op := &ops[i%len(ops)]
		switch e % 16 {
		case 0:
			op.Action = Action(v % 9)
			op.Expand = op.Action == ActionMark && v&0x80 != 0
			op.HasMarkName = op.Action == ActionMark && v&0x40 != 0
		case 1:
			op.Insert = !op.Insert
		case 2:
			op.Key = Key{Kind: KeyProp, Prop: string(rune('a' + v%4))}
		case 3:
			op.Key = Key{Kind: KeyElem}
		case 4:
			op.Key = Key{Kind: KeyElem, Elem: pickID(v)}
		case 5:
			op.Obj = OpID{}
		case 6:
			op.Obj = pickID(v)
		case 7:
			op.Pred = append(op.Pred, pickID(v))
		case 8:
			op.Pred = nil
		case 9:
			op.Value = []Value{NullValue(), IntValue(int64(v)), UintValue(uint64(v)), StringValue("s"),
				CounterValue(1), FloatValue(1), BoolValue(true), {Type: ValueType(v % 16)}}[v%8]
		case 10:
			ops = slices.Insert(ops, i%len(ops), *op)
		case 11:
			ops = slices.Delete(ops, i%len(ops), i%len(ops)+1)
		case 12:
			big := uint64(1)<<32 + uint64(v)
			switch v % 3 {
			case 0:
				op.Obj.Counter = big
			case 1:
				op.Key.Elem.Counter = big
			default:
				op.Pred = append(op.Pred, OpID{Counter: big, Actor: string(c.Actor)})
			}
		case 13:
			switch v % 3 {
			case 0:
				op.Obj.Actor = rawActor(v / 3)
			case 1:
				op.Key.Elem.Actor = rawActor(v / 3)
			default:
				op.Pred = append(op.Pred, OpID{Counter: 1, Actor: rawActor(v / 3)})
			}
		case 14:
			c.StartOp = []uint64{1, c.StartOp - 1, c.StartOp + uint64(v), 1<<32 - 1, MaxCounter}[v%5]
		case 15:
			c.Seq = uint64(v % 4)
		}
	}
	return ops
}
