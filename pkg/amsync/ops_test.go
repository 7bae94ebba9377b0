package amsync

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
)

//go:generate sh -c "node testdata/jschanges.mjs ../../server/testdata/js 16 50 1 > testdata/jschanges.jsonl"

// richDocs builds documents with automerge-go (the Rust core 0.5 itself)
// exercising every kind of op it writes: every scalar type, nested maps
// and lists, text inserts, deletes and splices, counters, deletes of map
// keys and list elements, overwrites, empty commits, a change of more
// than 10,000 ops (the core encodes those row by row), and merges between
// actors. It returns one document holding all of it.
func richDocs(t testing.TB, seed uint64, actors, edits int) *automerge.Doc {
	rng := rand.New(rand.NewPCG(seed, 2))
	root := automerge.New()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(root.Path("text").Set(automerge.NewText("hello")))
	must(root.Path("list").Set(automerge.NewList()))
	must(root.Path("n").Set(automerge.NewCounter(0)))
	must(root.Path("nested").Set(automerge.NewMap()))
	if _, err := root.Commit("init"); err != nil {
		t.Fatal(err)
	}
	docs := []*automerge.Doc{root}
	for i := 1; i < actors; i++ {
		f, err := root.Fork()
		must(err)
		docs = append(docs, f)
	}
	scalar := func() any {
		switch rng.IntN(10) {
		case 0:
			return rng.Int64() - rng.Int64()
		case 1:
			return rng.Uint64()
		case 2:
			return rng.NormFloat64()
		case 3:
			return strings.Repeat("ü", rng.IntN(3)) + "s"
		case 4:
			return []byte{byte(rng.IntN(256)), 0}
		case 5:
			return rng.IntN(2) == 0
		case 6:
			return nil
		case 7:
			return time.UnixMilli(rng.Int64N(1 << 42))
		case 8:
			return automerge.NewCounter(rng.Int64N(100) - 50)
		default:
			return int64(rng.IntN(100))
		}
	}
	for e := 0; e < edits; e++ {
		d := docs[rng.IntN(len(docs))]
		get := func(k string) *automerge.Value {
			v, err := d.RootMap().Get(k)
			must(err)
			return v
		}
		if e == edits/2 {
			// More than 10,000 ops in one change: the core writes those row
			// by row (ChangeOpsColumns::encode_rowwise).
			must(get("text").Text().Insert(0, strings.Repeat("big", 3400)))
		}
		for k := 0; k < 1+rng.IntN(3); k++ {
			var err error
			switch rng.IntN(14) {
			case 0:
				err = d.RootMap().Set(fmt.Sprintf("k%d", rng.IntN(8)), scalar())
			case 1:
				if keys, _ := d.RootMap().Keys(); len(keys) > 0 {
					if key := keys[rng.IntN(len(keys))]; strings.HasPrefix(key, "k") {
						err = d.RootMap().Delete(key)
					}
				}
			case 2:
				err = get("list").List().Append(scalar(), scalar())
			case 3:
				if l := get("list").List(); l.Len() > 0 {
					err = l.Insert(rng.IntN(l.Len()+1), scalar())
				}
			case 4:
				if l := get("list").List(); l.Len() > 0 {
					err = l.Set(rng.IntN(l.Len()), scalar())
				}
			case 5:
				if l := get("list").List(); l.Len() > 0 {
					err = l.Delete(rng.IntN(l.Len()))
				}
			case 6:
				tx := get("text").Text()
				err = tx.Insert(rng.IntN(tx.Len()+1), strings.Repeat("xy😀", 1+rng.IntN(5)))
			case 7:
				if tx := get("text").Text(); tx.Len() > 2 {
					p := rng.IntN(tx.Len() - 1)
					err = tx.Splice(p, 1+rng.IntN(tx.Len()-p-1), "z")
				}
			case 8:
				err = get("n").Counter().Inc(rng.Int64N(20) - 10)
			case 9:
				err = d.Path("nested", fmt.Sprintf("m%d", rng.IntN(4))).Set(map[string]any{
					"a": []any{int64(1), "two", map[string]any{"deep": true}},
					"t": automerge.NewText("inner"),
				})
			case 10:
				err = d.Path("nested", "l").Set([]any{scalar(), []any{scalar()}})
			case 11:
				err = d.RootMap().Set("u", uint64(1)<<63+rng.Uint64N(1<<63))
			case 12:
				o := docs[rng.IntN(len(docs))]
				if o != d {
					_, err = d.Merge(o)
				}
			case 13:
				if tx := get("text").Text(); tx.Len() > 0 {
					err = tx.Delete(0, min(tx.Len(), 1+rng.IntN(40)))
				}
			}
			must(err)
		}
		_, err := d.Commit(fmt.Sprintf("edit %d", e), automerge.CommitOptions{AllowEmpty: true})
		must(err)
	}
	for _, d := range docs[1:] {
		_, err := root.Merge(d)
		must(err)
	}
	return root
}

// honestStats counts what checkHonest verified.
type honestStats struct {
	changes, ops, startOpExact int
	notCanonical               []string
}

// checkHonest decodes the changes of one document, in the order the core
// applied them, and checks what must hold for every honest change: they
// parse and decode, re-encode byte for byte, decode again to the same
// ops, pass ObjIndex in causal order, and their op counts agree with the
// start ops of the changes that follow them.
func checkHonest(t testing.TB, raws [][]byte, requireCanonical bool) honestStats {
	t.Helper()
	var st honestStats
	x := NewObjIndex()
	type span struct {
		actor      string
		start, len uint64
	}
	spans := map[Hash]span{}
	for _, raw := range raws {
		c, err := ParseChange(raw)
		if err != nil {
			t.Fatalf("honest change rejected by ParseChange: %v", err)
		}
		if !bytes.Equal(c.Encode(), raw) {
			t.Fatalf("change %s: Encode does not reproduce the chunk", c.Hash)
		}
		ops, err := c.Ops()
		if err != nil {
			t.Fatalf("change %s (actor %x seq %d): honest ops rejected: %v", c.Hash, c.Actor, c.Seq, err)
		}
		for i, op := range ops {
			if op.ID != (OpID{c.StartOp + uint64(i), string(c.Actor)}) {
				t.Fatalf("op %d has id %v", i, op.ID)
			}
		}
		// Re-encoding the decoded ops and decoding again is the identity.
		re := *c
		re.SetOps(ops)
		c2, err := ParseChange(re.Encode())
		if err != nil {
			t.Fatal(err)
		}
		ops2, err := c2.Ops()
		if err != nil {
			t.Fatalf("re-encoded change rejected: %v", err)
		}
		if !reflect.DeepEqual(ops, ops2) {
			t.Fatalf("change %s: ops differ after re-encoding", c.Hash)
		}
		if err := c.CheckCanonical(ops); err != nil {
			if requireCanonical {
				t.Fatalf("change %s: %v", c.Hash, err)
			}
			st.notCanonical = append(st.notCanonical, err.Error())
		}
		if err := x.Apply(ops); err != nil {
			t.Fatalf("change %s (actor %x seq %d): ObjIndex refuses honest ops: %v", c.Hash, c.Actor, c.Seq, err)
		}
		// The core gives a change the start op max(op of its history) + 1,
		// so it exceeds every op of its dependencies, and equals the next
		// counter of its only dependency when that is the same actor's.
		for _, dep := range c.Deps {
			s, ok := spans[dep]
			if !ok {
				t.Fatalf("change %s comes before its dependency %s", c.Hash, dep)
			}
			if c.StartOp < s.start+s.len {
				t.Fatalf("change %s starts at op %d, its dependency has ops up to %d", c.Hash, c.StartOp, s.start+s.len-1)
			}
			if len(c.Deps) == 1 && s.actor == string(c.Actor) {
				if c.StartOp != s.start+s.len {
					t.Fatalf("change %s starts at %d; its sole dependency, same actor, has %d ops from %d", c.Hash, c.StartOp, s.len, s.start)
				}
				st.startOpExact++
			}
		}
		spans[c.Hash] = span{string(c.Actor), c.StartOp, uint64(len(ops))}
		st.changes++
		st.ops += len(ops)
	}
	return st
}

func docChanges(t testing.TB, d *automerge.Doc) [][]byte {
	t.Helper()
	chs, err := d.Changes()
	if err != nil {
		t.Fatal(err)
	}
	raws := make([][]byte, len(chs))
	for i, ch := range chs {
		raws[i] = ch.Save()
	}
	return raws
}

func TestOpsMatchAutomerge(t *testing.T) {
	var total honestStats
	check := func(d *automerge.Doc) {
		st := checkHonest(t, docChanges(t, d), true)
		total.changes += st.changes
		total.ops += st.ops
		total.startOpExact += st.startOpExact
	}
	for seed := uint64(0); seed < 10; seed++ {
		docs := randomDocs(t, seed, 3, 40)
		for _, d := range docs[1:] {
			if _, err := docs[0].Merge(d); err != nil {
				t.Fatal(err)
			}
		}
		check(docs[0])
	}
	for seed := uint64(0); seed < 8; seed++ {
		check(richDocs(t, seed, 3, 60))
	}
	if total.startOpExact < 100 {
		t.Fatalf("only %d start op checks", total.startOpExact)
	}
	t.Logf("%d changes, %d ops, %d exact start-op checks", total.changes, total.ops, total.startOpExact)
}

// TestOpsMatchAutomergeJS checks changes written by Automerge JS 3.5 (the
// browser client), committed in testdata/jschanges.jsonl: maps, lists,
// text with marks, counters, every scalar type, merges of 2-4 actors.
func TestOpsMatchAutomergeJS(t *testing.T) {
	f, err := os.Open("testdata/jschanges.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	var total honestStats
	marks := 0
	for sc.Scan() {
		var line struct {
			Doc     int      `json:"doc"`
			Changes []string `json:"changes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		raws := make([][]byte, len(line.Changes))
		for i, h := range line.Changes {
			if raws[i], err = hex.DecodeString(h); err != nil {
				t.Fatal(err)
			}
			c, _ := ParseChange(raws[i])
			if ops, err := c.Ops(); err == nil {
				for _, op := range ops {
					if op.Action == ActionMark {
						marks++
					}
				}
			}
		}
		st := checkHonest(t, raws, true)
		total.changes += st.changes
		total.ops += st.ops
		total.startOpExact += st.startOpExact
		// The Rust core 0.5 accepts and loads them too.
		doc := automerge.New()
		if err := doc.LoadIncremental(bytes.Join(raws, nil)); err != nil {
			t.Fatalf("doc %d: automerge-go refuses the JS changes: %v", line.Doc, err)
		}
		if got := len(doc.Heads()); got == 0 {
			t.Fatalf("doc %d: nothing loaded", line.Doc)
		}
		if _, err := automerge.Load(doc.Save()); err != nil {
			t.Fatalf("doc %d: snapshot does not load: %v", line.Doc, err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if total.changes < 100 || marks == 0 {
		t.Fatalf("fixture too small: %d changes, %d mark ops", total.changes, marks)
	}
	t.Logf("%d JS changes, %d ops (%d marks), %d exact start-op checks", total.changes, total.ops, marks, total.startOpExact)
}

// TestOpsDecodeKnown checks decoded ops field by field for edits whose
// ops are known.
func TestOpsDecodeKnown(t *testing.T) {
	doc := automerge.New()
	if err := doc.SetActorID("aaaa"); err != nil {
		t.Fatal(err)
	}
	rm := doc.RootMap()
	for _, err := range []error{
		rm.Set("i", int64(-3)),
		rm.Set("u", uint64(7)),
		rm.Set("f", 1.5),
		rm.Set("s", "hé"),
		rm.Set("b", []byte{1, 2}),
		rm.Set("t", true),
		rm.Set("z", nil),
		rm.Set("ts", time.UnixMilli(1234)),
		rm.Set("c", automerge.NewCounter(5)),
		rm.Set("l", automerge.NewList()),
		rm.Set("x", automerge.NewText("ab")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := doc.Commit("one"); err != nil {
		t.Fatal(err)
	}
	l, _ := rm.Get("l")
	if err := l.List().Append("e"); err != nil {
		t.Fatal(err)
	}
	c, _ := rm.Get("c")
	if err := c.Counter().Inc(2); err != nil {
		t.Fatal(err)
	}
	if err := rm.Delete("z"); err != nil {
		t.Fatal(err)
	}
	if err := l.List().Delete(0); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit("two"); err != nil {
		t.Fatal(err)
	}
	raws := docChanges(t, doc)
	a := string([]byte{0xaa, 0xaa})
	id := func(n uint64) OpID { return OpID{n, a} }
	prop := func(s string) Key { return Key{Kind: KeyProp, Prop: s} }
	want := [][]Op{{
		{ID: id(1), Key: prop("i"), Action: ActionPut, Value: IntValue(-3)},
		{ID: id(2), Key: prop("u"), Action: ActionPut, Value: UintValue(7)},
		{ID: id(3), Key: prop("f"), Action: ActionPut, Value: FloatValue(1.5)},
		{ID: id(4), Key: prop("s"), Action: ActionPut, Value: StringValue("hé")},
		{ID: id(5), Key: prop("b"), Action: ActionPut, Value: BytesValue([]byte{1, 2})},
		{ID: id(6), Key: prop("t"), Action: ActionPut, Value: BoolValue(true)},
		{ID: id(7), Key: prop("z"), Action: ActionPut, Value: NullValue()},
		{ID: id(8), Key: prop("ts"), Action: ActionPut, Value: TimestampValue(1234)},
		{ID: id(9), Key: prop("c"), Action: ActionPut, Value: CounterValue(5)},
		{ID: id(10), Key: prop("l"), Action: ActionMakeList},
		{ID: id(11), Key: prop("x"), Action: ActionMakeText},
		{ID: id(12), Obj: id(11), Key: Key{Kind: KeyElem}, Insert: true, Action: ActionPut, Value: StringValue("a")},
		{ID: id(13), Obj: id(11), Key: Key{Kind: KeyElem, Elem: id(12)}, Insert: true, Action: ActionPut, Value: StringValue("b")},
	}, {
		{ID: id(14), Obj: id(10), Key: Key{Kind: KeyElem}, Insert: true, Action: ActionPut, Value: StringValue("e")},
		{ID: id(15), Key: prop("c"), Action: ActionIncrement, Value: IntValue(2), Pred: []OpID{id(9)}},
		{ID: id(16), Key: prop("z"), Action: ActionDelete, Pred: []OpID{id(7)}},
		{ID: id(17), Obj: id(10), Key: Key{Kind: KeyElem, Elem: id(14)}, Action: ActionDelete, Pred: []OpID{id(14)}},
	}}
	if len(raws) != 2 {
		t.Fatalf("%d changes", len(raws))
	}
	for i, raw := range raws {
		ch, err := ParseChange(raw)
		if err != nil {
			t.Fatal(err)
		}
		ops, err := ch.Ops()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ops, want[i]) {
			t.Errorf("change %d:\n got %+v\nwant %+v", i, ops, want[i])
		}
	}
}

// base returns an honest change to derive hostile ones from, and its ops:
// actor aa.., making a list, a text and a map under the root, filling
// them, and overwriting a root key.
func base(t testing.TB) (*Change, []Op) {
	t.Helper()
	doc := automerge.New()
	if err := doc.SetActorID(strings.Repeat("aa", 16)); err != nil {
		t.Fatal(err)
	}
	rm := doc.RootMap()
	for _, err := range []error{
		rm.Set("k", "v"),
		rm.Set("list", []any{"a", "b"}),
		rm.Set("text", automerge.NewText("xy")),
		rm.Set("map", map[string]any{"q": int64(1)}),
		rm.Set("k", "w"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := doc.Commit("base"); err != nil {
		t.Fatal(err)
	}
	raws := docChanges(t, doc)
	c, err := ParseChange(raws[0])
	if err != nil {
		t.Fatal(err)
	}
	ops, err := c.Ops()
	if err != nil {
		t.Fatal(err)
	}
	return c, ops
}

// rebuild encodes ops into a copy of c, lets mutate change the copy's
// fields or columns, and parses the re-encoded chunk (valid checksum).
func rebuild(t testing.TB, c *Change, ops []Op, mutate func(*Change)) *Change {
	t.Helper()
	cp := *c
	cp.SetOps(ops)
	if mutate != nil {
		mutate(&cp)
	}
	p, err := ParseChange(cp.Encode())
	if err != nil {
		t.Fatalf("rebuilt change does not parse: %v", err)
	}
	return p
}

func cloneOps(ops []Op) []Op {
	out := slices.Clone(ops)
	for i := range out {
		out[i].Pred = slices.Clone(out[i].Pred)
	}
	return out
}

// setColumn replaces (or adds, keeping specs sorted) a column; nil data removes it.
func setColumn(c *Change, spec uint32, data []byte) {
	cols := slices.DeleteFunc(slices.Clone(c.Columns), func(col Column) bool { return col.Spec == spec })
	if data != nil {
		cols = append(cols, Column{Spec: spec, Data: data})
	}
	slices.SortFunc(cols, func(a, b Column) int { return int(a.Spec) - int(b.Spec) })
	c.Columns = cols
}

func column(c *Change, spec uint32) []byte {
	for _, col := range c.Columns {
		if col.Spec == spec {
			return col.Data
		}
	}
	return nil
}

// uints encodes values as an RLE uint column; -1 is a null.
func uints(vals ...int64) []byte {
	e := newRLEEnc(appendULEB)
	for _, v := range vals {
		if v < 0 {
			e.appendNull()
		} else {
			e.appendValue(uint64(v))
		}
	}
	return e.finish()
}

func bools(vals ...bool) []byte {
	e := &boolEncoder{}
	for _, v := range vals {
		e.append(v)
	}
	return e.finish()
}

func find(t testing.TB, ops []Op, pred func(Op) bool) int {
	t.Helper()
	for i, op := range ops {
		if pred(op) {
			return i
		}
	}
	t.Fatal("no such op")
	return -1
}

func wantMalformed(t *testing.T, name string, err error, contains string) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("%s: got %v, want ErrMalformed", name, err)
		return
	}
	if contains != "" && !strings.Contains(err.Error(), contains) {
		t.Errorf("%s: error %q does not mention %q", name, err, contains)
	}
}

func TestOpsRejects(t *testing.T) {
	c, ops := base(t)
	n := len(ops)
	listOp := find(t, ops, func(op Op) bool { return op.Insert && op.Key.IsHead() })
	predOp := find(t, ops, func(op Op) bool { return len(op.Pred) > 0 })
	elemOp := find(t, ops, func(op Op) bool { return op.Key.Kind == KeyElem && !op.Key.IsHead() })

	// retype rewrites the value metadata column, giving op 0's value
	// another type but the same raw bytes.
	retype := func(typ ValueType) func(*Change, []Op) {
		return func(c *Change, ops []Op) {
			e := newRLEEnc(appendULEB)
			for i, op := range ops {
				m, _ := appendValue(nil, op.Value)
				if i == 0 {
					m = m&^0xf | uint64(typ)
				}
				e.appendValue(m)
			}
			setColumn(c, specValMeta, e.finish())
		}
	}
	// Each case edits a copy of the honest ops (edit) and/or the encoded
	// change (mutate); Ops must refuse the result.
	cases := []struct {
		name     string
		edit     func(ops []Op)
		mutate   func(c *Change, ops []Op)
		contains string
	}{
		// Layout, as Columns::parse and ChangeOpsColumns::try_from refuse it.
		{name: "deflated column", mutate: func(c *Change, _ []Op) {
			data := column(c, specAction)
			setColumn(c, specAction, nil)
			setColumn(c, specAction|colDeflate, data)
		}, contains: "deflated"},
		{name: "raw values without metadata", mutate: func(c *Change, _ []Op) { setColumn(c, specValMeta, nil) }, contains: "without its metadata"},
		{name: "raw values after no metadata", mutate: func(c *Change, _ []Op) { setColumn(c, 0x47, []byte{1}) }, contains: "without its metadata"},
		{name: "raw values after other metadata", mutate: func(c *Change, _ []Op) {
			setColumn(c, specValRaw, nil)
			setColumn(c, 0x67, []byte{1})
		}, contains: "follows metadata"},
		{name: "three pred columns", mutate: func(c *Change, _ []Op) { setColumn(c, 0x72, uints(0)) }, contains: "pred group"},
		{name: "pred group without actors", mutate: func(c *Change, _ []Op) { setColumn(c, specPredActor, nil); setColumn(c, 0x74, bools(true)) }, contains: "pred group"},
		{name: "one object column", mutate: func(c *Change, _ []Op) { setColumn(c, specObjCtr, nil) }, contains: "both"},
		// Op bombs.
		{name: "op bomb", mutate: func(c *Change, _ []Op) {
			setColumn(c, specAction, appendULEB(appendSLEB(nil, 1<<60), 1))
		}, contains: "more than"},
		{name: "literal op bomb", mutate: func(c *Change, _ []Op) {
			setColumn(c, specAction, appendSLEB(nil, -1<<60))
		}, contains: "more than"},
		{name: "min int64 literal run", mutate: func(c *Change, _ []Op) {
			setColumn(c, specAction, appendSLEB(nil, -1<<63))
		}, contains: "more than"},
		{name: "pred bomb", edit: func(ops []Op) {}, mutate: func(c *Change, _ []Op) {
			num := appendULEB(appendSLEB(nil, int64(n)), 1<<62)
			setColumn(c, specPredGroup, num)
		}, contains: "predecessor"},
		// Decoding, as the core's verify_ops refuses it.
		{name: "unknown action", edit: func(ops []Op) { ops[0].Action = 8 }, contains: "unknown action"},
		{name: "increment by a string", edit: func(ops []Op) { ops[0].Action = ActionIncrement }, contains: "increment"},
		{name: "increment by a counter", edit: func(ops []Op) { ops[0].Action, ops[0].Value = ActionIncrement, CounterValue(1) }, contains: "increment"},
		{name: "null action", mutate: func(c *Change, _ []Op) { setColumn(c, specAction, uints(append(make([]int64, n-1), -1)...)) }, contains: "null action"},
		{name: "key with actor, counter and string", mutate: func(c *Change, _ []Op) {
			setColumn(c, specKeyStr, func() []byte {
				e := newRLEEnc(appendStr)
				for range n {
					e.appendValue("s")
				}
				return e.finish()
			}())
		}, contains: "key"},
		{name: "null key", mutate: func(c *Change, _ []Op) {
			setColumn(c, specKeyStr, nil)
			setColumn(c, specKeyActor, nil)
			setColumn(c, specKeyCtr, nil)
		}, contains: "null key"},
		{name: "key actor without counter", mutate: func(c *Change, _ []Op) { setColumn(c, specKeyCtr, nil) }, contains: "null key"},
		{name: "negative key counter", edit: func(ops []Op) { ops[elemOp].Key.Elem.Counter = 1 << 63 }, contains: "negative"},
		{name: "missing insert rows", mutate: func(c *Change, ops []Op) {
			vals := make([]bool, n-1)
			for i := range vals {
				vals[i] = ops[i].Insert
			}
			setColumn(c, specInsert, bools(vals...))
		}, contains: "null insert"},
		{name: "missing value rows", mutate: func(c *Change, _ []Op) {
			col := newRLEEnc(appendULEB)
			for _, op := range ops[:n-1] {
				m, _ := appendValue(nil, op.Value)
				col.appendValue(m)
			}
			setColumn(c, specValMeta, col.finish())
		}, contains: ""},
		{name: "missing pred rows", mutate: func(c *Change, _ []Op) { setColumn(c, specPredGroup, uints(make([]int64, n-1)...)) }, contains: "null pred count"},
		{name: "null pred count", mutate: func(c *Change, _ []Op) { setColumn(c, specPredGroup, uints(append(make([]int64, n-1), -1)...)) }, contains: "null pred count"},
		{name: "pred actor column short", mutate: func(c *Change, _ []Op) { setColumn(c, specPredActor, nil); setColumn(c, 0x72, nil) }, contains: "pred group"},
		{name: "overlong leb in a column", edit: func(ops []Op) {
			for i := range ops {
				ops[i].Action = ActionMakeMap
			}
		}, mutate: func(c *Change, _ []Op) {
			// One run: count n, value 0; write the count in two bytes.
			setColumn(c, specAction, []byte{0x80 | byte(n), 0x00, 0x00})
		}, contains: "overlong"},
		{name: "unknown value type", edit: func(ops []Op) { ops[0].Value = Value{Type: 10, str: "x"} }, contains: "unknown value type"},
		{name: "short float", edit: func(ops []Op) { ops[0].Value = BytesValue([]byte("abcd")) }, mutate: retype(ValueFloat), contains: "float"},
		{name: "invalid UTF-8 string", edit: func(ops []Op) { ops[0].Value = StringValue("\xff") }, contains: "UTF-8"},
		{name: "invalid UTF-8 key", edit: func(ops []Op) { ops[0].Key.Prop = "\xc3" }, contains: "UTF-8"},
		{name: "null with a length", edit: func(ops []Op) { ops[0].Value = BytesValue([]byte("x")) }, mutate: retype(ValueNull), contains: "length"},
		{name: "overlong int value", edit: func(ops []Op) { ops[0].Value = BytesValue([]byte{0x81, 0x00}) }, mutate: retype(ValueInt), contains: "overlong"},
		{name: "uint value with extra bytes", edit: func(ops []Op) { ops[0].Value = BytesValue([]byte{1, 1}) }, mutate: retype(ValueUint), contains: "extra bytes"},
		{name: "value past the raw column", mutate: func(c *Change, _ []Op) {
			raw := column(c, specValRaw)
			setColumn(c, specValRaw, raw[:len(raw)-1])
		}, contains: "left in the value column"},
		{name: "unused raw value bytes", mutate: func(c *Change, _ []Op) { setColumn(c, specValRaw, append(slices.Clone(column(c, specValRaw)), 'x')) }, contains: "no op uses"},
		// Rows beyond the last op.
		{name: "extra key rows", mutate: func(c *Change, _ []Op) {
			e := newRLEEnc(appendStr)
			d := newRLE(column(c, specKeyStr), rleStr, "")
			for range n {
				if ok, _ := d.next(); ok {
					e.appendValue(d.str)
				} else {
					e.appendNull()
				}
			}
			e.appendValue("extra")
			setColumn(c, specKeyStr, e.finish())
		}, contains: "more rows"},
		{name: "extra insert rows", mutate: func(c *Change, _ []Op) {
			vals := make([]bool, n+1)
			for i := range ops {
				vals[i] = ops[i].Insert
			}
			setColumn(c, specInsert, bools(vals...))
		}, contains: "more rows"},
		{name: "extra pred rows", mutate: func(c *Change, _ []Op) {
			setColumn(c, specPredActor, append(slices.Clone(column(c, specPredActor)), 2, 0))
		}, contains: "more rows"},
		// Panics of the core on apply (notes §3).
		{name: "P3 huge object actor", edit: func(ops []Op) {}, mutate: func(c *Change, _ []Op) {
			nulls := slices.Repeat([]int64{-1}, n-1)
			setColumn(c, specObjActor, uints(append(nulls, 1<<40)...))
			setColumn(c, specObjCtr, uints(append(nulls, 1)...))
		}, contains: "actor index"},
		{name: "P5 object actor", mutate: func(c *Change, _ []Op) {
			col := make([]int64, n)
			for i, op := range ops {
				col[i] = -1
				if !op.Obj.IsZero() {
					col[i] = 3
				}
			}
			setColumn(c, specObjActor, uints(col...))
		}, contains: "object actor index 3"},
		{name: "P5 key actor", mutate: func(c *Change, _ []Op) {
			col := make([]int64, n)
			for i, op := range ops {
				col[i] = -1
				if op.Key.Kind == KeyElem && !op.Key.IsHead() {
					col[i] = 1
				}
			}
			setColumn(c, specKeyActor, uints(col...))
		}, contains: "key actor index 1"},
		{name: "P5 pred actor", mutate: func(c *Change, _ []Op) { setColumn(c, specPredActor, uints(5)) }, contains: "pred actor index 5"},
		{name: "P2 object counter", edit: func(ops []Op) { ops[listOp].Obj.Counter = 1<<32 + 1 }, contains: "object counter"},
		{name: "P2 key counter", edit: func(ops []Op) { ops[elemOp].Key.Elem.Counter = 1<<32 + 1 }, contains: "key element counter"},
		{name: "P2 pred counter", edit: func(ops []Op) { ops[predOp].Pred[0].Counter = 1<<32 + 1 }, contains: "pred counter"},
		{name: "P4 start op", mutate: func(c *Change, _ []Op) { c.StartOp = 1<<32 - 1 }, contains: "start op"},
		{name: "P4 last op", mutate: func(c *Change, _ []Op) { c.StartOp = MaxCounter }, contains: "exceed"},
		{name: "object counter 0", edit: func(ops []Op) { ops[listOp].Obj.Counter = 0 }, contains: "object counter 0"},
		{name: "key counter 0 with an actor", edit: func(ops []Op) { ops[elemOp].Key.Elem.Counter = 0 }, contains: "counter 0"},
		// References must point at earlier ops.
		{name: "object not made yet", edit: func(ops []Op) { ops[listOp].Obj.Counter = ops[listOp].ID.Counter }, contains: "object counter"},
		{name: "element not made yet", edit: func(ops []Op) { ops[elemOp].Key.Elem.Counter = ops[elemOp].ID.Counter + 1 }, contains: "key element counter"},
		{name: "pred not made yet", edit: func(ops []Op) { ops[predOp].Pred[0].Counter = ops[predOp].ID.Counter }, contains: "pred counter"},
		{name: "pred counter 0", edit: func(ops []Op) { ops[predOp].Pred[0].Counter = 0 }, contains: "pred counter 0"},
		// Shapes no Automerge writes and the core mishandles.
		{name: "insert with a map key", edit: func(ops []Op) { ops[0].Insert = true }, contains: "insert with a map key"},
		{name: "set on HEAD", edit: func(ops []Op) { ops[listOp].Insert = false }, contains: "HEAD"},
		{name: "delete of nothing", edit: func(ops []Op) { ops[0].Action, ops[0].Value = ActionDelete, NullValue() }, contains: "delete without"},
	}
	for _, tc := range cases {
		hostile := cloneOps(ops)
		if tc.edit != nil {
			tc.edit(hostile)
		}
		var mutate func(*Change)
		if tc.mutate != nil {
			mutate = func(c *Change) { tc.mutate(c, hostile) }
		}
		ch := rebuild(t, c, hostile, mutate)
		_, err := ch.Ops()
		wantMalformed(t, tc.name, err, tc.contains)
	}
}

// TestOpsLikeTheCore checks inputs the core 0.5 accepts: Ops must accept
// them too and read them the way the core does.
func TestOpsLikeTheCore(t *testing.T) {
	c, ops := base(t)
	n := len(ops)
	same := func(name string, mutate func(*Change), want []Op) {
		t.Helper()
		got, err := rebuild(t, c, ops, mutate).Ops()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ops differ", name)
		}
	}
	// Columns the core does not know are ignored.
	same("unknown columns", func(c *Change) {
		setColumn(c, 0x05, []byte{0xff, 0xff})
		setColumn(c, 0x200, []byte("anything"))
		setColumn(c, 0x66, []byte{1, 2})
		setColumn(c, 0x67, []byte{3})
	}, ops)
	// Missing expand and mark name rows default to false and none.
	same("short expand", func(c *Change) { setColumn(c, specExpand, bools(false, true)) }, func() []Op {
		w := cloneOps(ops)
		w[1].Expand = true
		return w
	}())
	// A pred actor column typed as integer (0x72) is read all the same.
	same("integer pred actors", func(c *Change) {
		data := column(c, specPredActor)
		setColumn(c, specPredActor, nil)
		setColumn(c, 0x72, data)
	}, ops)
	// A group column with the object id swallows the object columns: the
	// core then puts every op on the root, and so must Ops, so that
	// ObjIndex checks what the core will do.
	ch := rebuild(t, c, ops, func(c *Change) { setColumn(c, 0x00, uints(0)) })
	got, err := ch.Ops()
	if err != nil {
		t.Fatal(err)
	}
	for i, op := range got {
		if !op.Obj.IsZero() {
			t.Fatalf("op %d on %v, the core reads the root", i, op.Obj)
		}
	}
	if err := NewObjIndex().Check(got); err == nil {
		t.Fatal("ObjIndex accepts list ops on the root")
	}
	// Zero ops: no columns at all.
	empty := rebuild(t, c, nil, nil)
	if len(empty.Columns) != 0 {
		t.Fatalf("empty change has %d columns", len(empty.Columns))
	}
	if got, err := empty.Ops(); err != nil || len(got) != 0 {
		t.Fatalf("empty change: %v, %d ops", err, len(got))
	}
	_ = n
}

func TestOpsLimit(t *testing.T) {
	c, _ := base(t)
	op := Op{Key: Key{Kind: KeyProp, Prop: "k"}, Action: ActionPut, Value: IntValue(1)}
	for _, tc := range []struct {
		n, limit int
		ok       bool
	}{{100, 100, true}, {101, 100, false}, {5000, 0, true}} {
		ops := make([]Op, tc.n)
		for i := range ops {
			ops[i] = op
		}
		ch := rebuild(t, c, ops, nil)
		got, err := ch.DecodeOps(tc.limit)
		if tc.ok != (err == nil) || (err == nil && len(got) != tc.n) {
			t.Errorf("%d ops, limit %d: %d ops, %v", tc.n, tc.limit, len(got), err)
		}
	}
	// A 2^60-op claim costs neither time nor memory.
	bomb := rebuild(t, c, nil, func(c *Change) {
		setColumn(c, specAction, appendULEB(appendSLEB(nil, 1<<60), 1))
		setColumn(c, specKeyStr, append(appendSLEB(nil, 1<<60), 1, 'k'))
		setColumn(c, specInsert, appendULEB(nil, 1<<60))
		setColumn(c, specValMeta, appendULEB(appendSLEB(nil, 1<<60), 0))
		setColumn(c, specPredGroup, appendULEB(appendSLEB(nil, 1<<60), 0))
	})
	if allocs := testing.AllocsPerRun(10, func() {
		if _, err := bomb.Ops(); err == nil {
			t.Fatal("op bomb accepted")
		}
	}); allocs > 100 {
		t.Fatalf("refusing an op bomb takes %v allocations", allocs)
	}
}

// TestNotesReproducers runs the hostile sync messages of
// docs/notes-rust-sync-panic.md §7 through ParseMessage, Ops and ObjIndex.
func TestNotesReproducers(t *testing.T) {
	decode := func(h string) []*Change {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParseMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		var out []*Change
		for _, raw := range m.Changes {
			c, err := ParseChange(raw)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
		return out
	}
	// P6: makeList, insert into it, then a map-keyed op on the list.
	p6 := decode("42012f06edcd634483e77cdbcdd2574cb168f5353f5ba5eca7ddb791aca02229024800000159856f4a832f06edcd014f0010dddddddddddddddddddddddddddddddd010100000009010402041306150834034204560457027002000102000001020100017f0000017f016c00017f01700101017f0202017f00021661760300")
	ops, err := p6[0].Ops()
	if err != nil {
		t.Fatalf("P6 ops are well formed, the problem is their keys: %v", err)
	}
	wantMalformed(t, "P6", NewObjIndex().Check(ops), "map key")
	// P5: object actor index 3 in a change with no other actors.
	_, err = decode("420146e7d742a4cacd86b1146649f979bae47716e305d8f9f122b7ee183fe92b8c5600000141856f4a8346e7d74201370010dddddddddddddddddddddddddddddddd010100000008010202021503340142025602570170027f037f017f0170017f017f16767f00")[0].Ops()
	wantMalformed(t, "P5", err, "actor index 3")
	// P4: start op 0xffffffff and two ops.
	_, err = decode("42012c1f23668c276a87098b9f4206ba76e1d7b143594faf5aa80682ea71b666d3a100000140856f4a832c1f236601360010dddddddddddddddddddddddddddddddd01ffffffff0f000000061505340142025602570270027e01610162020201021676760200")[0].Ops()
	wantMalformed(t, "P4", err, "start op")
	// P1 is a seq gap through the core's queue: its ops are fine, the
	// seq rule is the hub's (notes §5 A).
	for i, c := range decode("42026eb62f03e26a0b6fc9c7c113201abf1db00d2296e67bf64076a5092190694057ab04d1e8af4e24fedb5d189cf3cdadc7deea3dfb35b8501343ec59d76afc986500000259856f4a83ab04d1e8014f01111111111111111111111111111111111111111111111111111111111111111110cccccccccccccccccccccccccccccccc0101000000061503340142025602570170027f0161017f017f16317f0039856f4a836eb62f03012f0010cccccccccccccccccccccccccccccccc0202000000061503340142025602570170027f0162017f017f16327f00") {
		if _, err := c.Ops(); err != nil {
			t.Errorf("P1 change %d: %v", i, err)
		}
	}
}

// BenchmarkOps measures decoding plus ObjIndex.Check for a typical small
// change and for a 10,200-op text paste.
func BenchmarkOps(b *testing.B) {
	doc := automerge.New()
	if err := doc.Path("text").Set(automerge.NewText("")); err != nil {
		b.Fatal(err)
	}
	if _, err := doc.Commit("init"); err != nil {
		b.Fatal(err)
	}
	tx, _ := doc.RootMap().Get("text")
	if err := tx.Text().Insert(0, "hello"); err != nil {
		b.Fatal(err)
	}
	if _, err := doc.Commit("small"); err != nil {
		b.Fatal(err)
	}
	if err := tx.Text().Insert(0, strings.Repeat("big", 3400)); err != nil {
		b.Fatal(err)
	}
	if _, err := doc.Commit("big"); err != nil {
		b.Fatal(err)
	}
	raws := docChanges(b, doc)
	x := NewObjIndex()
	init, _ := ParseChange(raws[0])
	initOps, _ := init.Ops()
	x.Add(initOps)
	for _, bc := range []struct {
		name string
		raw  []byte
	}{{"small", raws[1]}, {"paste10k", raws[2]}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.raw)))
			b.ReportAllocs()
			for b.Loop() {
				c, err := ParseChange(bc.raw)
				if err != nil {
					b.Fatal(err)
				}
				ops, err := c.Ops()
				if err != nil {
					b.Fatal(err)
				}
				if err := x.Check(ops); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
