package amsync

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// sameAsAdd checks that AddAccepted records from c what Add records from
// ops, c's decoded ops.
func sameAsAdd(t *testing.T, c *Change, ops []Op) {
	t.Helper()
	viaOps, viaActions := NewObjIndex(), NewObjIndex()
	viaOps.Add(ops)
	if err := viaActions.AddAccepted(c); err != nil {
		t.Fatalf("AddAccepted refused a change DecodeOps accepted: %v", err)
	}
	if !reflect.DeepEqual(viaOps.objs, viaActions.objs) || !reflect.DeepEqual(viaOps.maxOp, viaActions.maxOp) {
		t.Fatalf("AddAccepted recorded objects %v, max ops %v; Add recorded %v, %v", viaActions.objs, viaActions.maxOp, viaOps.objs, viaOps.maxOp)
	}
}

func TestAddAccepted(t *testing.T) {
	c, ops := base(t)
	sameAsAdd(t, c, ops)
	x := NewObjIndex()
	if err := x.AddAccepted(c); err != nil {
		t.Fatal(err)
	}
	if x.Len() != 3 {
		t.Fatalf("Len %d, want the base change's 3 objects", x.Len())
	}
	// An action column another column of its id swallows (a group 0x40)
	// is absent for the core: no ops, as layoutColumns says.
	swallowed := *c
	swallowed.Columns = append([]Column{{Spec: 0x40, Data: []byte{0}}}, c.Columns...)
	slices.SortStableFunc(swallowed.Columns, func(a, b Column) int { return int(a.Spec) - int(b.Spec) })
	layout, err := layoutColumns(swallowed.Columns)
	if err != nil || len(layout.action) != 0 {
		t.Fatalf("layout: action column %x, %v; want it swallowed", layout.action, err)
	}
	got, err := actionColumn(swallowed.Columns)
	if err != nil || !bytes.Equal(got, layout.action) {
		t.Fatalf("actionColumn %x %v, layout %x", got, err, layout.action)
	}
	// A malformed action column is an error, not a panic.
	bad := *c
	bad.Columns = slices.Clone(c.Columns)
	for i := range bad.Columns {
		if bad.Columns[i].Spec == specAction {
			bad.Columns[i].Data = []byte{0x7f}
		}
	}
	if err := NewObjIndex().AddAccepted(&bad); err == nil {
		t.Fatal("a truncated action column was accepted")
	}
}

// follow builds a change by actor bb.. that follows base (its only
// dependency), with ops referring to base's objects, and decodes it.
func follow(t *testing.T, c *Change, baseOps []Op, ops []Op) []Op {
	t.Helper()
	next := *c
	next.Actor = []byte(strings.Repeat("\xbb", 16))
	next.Seq = 1
	next.Deps = []Hash{c.Hash}
	next.StartOp = baseOps[len(baseOps)-1].ID.Counter + 1
	got, err := rebuild(t, &next, ops, nil).Ops()
	if err != nil {
		t.Fatalf("follow-up change rejected by Ops: %v", err)
	}
	return got
}

func TestObjIndex(t *testing.T) {
	c, ops := base(t)
	x := NewObjIndex()
	if err := x.Apply(ops); err != nil {
		t.Fatal(err)
	}
	objOf := func(typ Action) OpID {
		return ops[find(t, ops, func(op Op) bool { return op.Action == typ })].ID
	}
	list, text, mp := objOf(ActionMakeList), objOf(ActionMakeText), objOf(ActionMakeMap)
	for id, want := range map[OpID]ObjType{OpID{}: ObjMap, list: ObjList, text: ObjText, mp: ObjMap} {
		if got, ok := x.Type(id); !ok || got != want {
			t.Fatalf("Type(%v) = %v %v, want %v", id, got, ok, want)
		}
	}
	if x.Len() != 3 {
		t.Fatalf("Len %d", x.Len())
	}
	elem := ops[find(t, ops, func(op Op) bool { return op.Obj == list && op.Insert })].ID
	scalar := ops[0].ID // the first set of "k"
	head := Key{Kind: KeyElem}
	prop := func(s string) Key { return Key{Kind: KeyProp, Prop: s} }
	put := func(obj OpID, k Key, insert bool) Op {
		return Op{Obj: obj, Key: k, Insert: insert, Action: ActionPut, Value: IntValue(1)}
	}
	bb := strings.Repeat("\xbb", 16)
	next := ops[len(ops)-1].ID.Counter + 1
	for _, tc := range []struct {
		name     string
		ops      []Op
		contains string // "" means accepted
	}{
		{"honest follow-up", []Op{
			put(OpID{}, prop("k2"), false),
			put(list, Key{Kind: KeyElem, Elem: elem}, true),
			put(mp, prop("q"), false),
			put(text, head, true),
		}, ""},
		{"P6 map key on a list", []Op{put(list, prop("x"), false)}, "map key"},
		{"P6 map key on text", []Op{put(text, prop("x"), false)}, "map key"},
		{"P6 insert into the root", []Op{put(OpID{}, head, true)}, "element key"},
		{"P6 element key on a map", []Op{put(mp, Key{Kind: KeyElem, Elem: elem}, false)}, "element key"},
		{"object that is a scalar", []Op{put(scalar, prop("x"), false)}, "unknown object"},
		{"object of another actor", []Op{put(OpID{list.Counter, bb}, head, true)}, "unknown object"},
		{"new list used in the same change", []Op{
			{Key: prop("l2"), Action: ActionMakeList},
			put(OpID{next, bb}, head, true),
			put(OpID{next, bb}, Key{Kind: KeyElem, Elem: OpID{next + 1, bb}}, true),
		}, ""},
		{"P6 in one change: makeList, insert, map key", []Op{
			{Key: prop("l2"), Action: ActionMakeList},
			put(OpID{next, bb}, head, true),
			put(OpID{next, bb}, prop("x"), false),
		}, "map key"},
		{"table takes map keys", []Op{
			{Key: prop("tb"), Action: ActionMakeTable},
			put(OpID{next, bb}, prop("row"), false),
		}, ""},
		{"table refuses element keys", []Op{
			{Key: prop("tb"), Action: ActionMakeTable},
			put(OpID{next, bb}, head, true),
		}, "element key"},
	} {
		got := follow(t, c, ops, tc.ops)
		err := x.Check(got)
		if tc.contains == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		wantMalformed(t, tc.name, err, tc.contains)
	}
	if x.Len() != 3 {
		t.Fatal("Check changed the index")
	}

	// Op ids of an actor are never reused.
	again := *c
	again.Seq = 2
	again.StartOp = ops[len(ops)-1].ID.Counter
	reused, err := rebuild(t, &again, []Op{put(OpID{}, prop("k"), false)}, nil).Ops()
	if err != nil {
		t.Fatal(err)
	}
	wantMalformed(t, "reused op id", x.Check(reused), "reuses op ids")
	again.StartOp++
	fresh, _ := rebuild(t, &again, []Op{put(OpID{}, prop("k"), false)}, nil).Ops()
	if err := x.Check(fresh); err != nil {
		t.Fatal(err)
	}
	if m, ok := x.MaxOp(string(c.Actor)); !ok || m != again.StartOp-1 {
		t.Fatalf("MaxOp %d %v", m, ok)
	}

	// Hand-made op lists must be one change's ops.
	bad := []Op{put(OpID{}, prop("a"), false), put(OpID{}, prop("b"), false)}
	bad[0].ID, bad[1].ID = OpID{100, bb}, OpID{102, bb}
	wantMalformed(t, "gap in op ids", x.Check(bad), "does not follow")

	// Staging: a staged index sees its base and its own additions; the
	// base sees them after Commit only.
	s := x.Stage()
	made := follow(t, c, ops, []Op{{Key: prop("l3"), Action: ActionMakeList}})
	if err := s.Apply(made); err != nil {
		t.Fatal(err)
	}
	use := []Op{put(made[0].ID, head, true)}
	use[0].ID = OpID{made[0].ID.Counter + 1, bb}
	if err := s.Check(use); err != nil {
		t.Fatalf("staged index: %v", err)
	}
	if _, ok := x.Type(made[0].ID); ok {
		t.Fatal("base sees a staged object")
	}
	if err := s.Check(made); err == nil {
		t.Fatal("staged index accepts reused op ids")
	}
	if s.Commit() != x {
		t.Fatal("Commit returns another index")
	}
	if err := x.Check(use); err != nil {
		t.Fatalf("after Commit: %v", err)
	}
	if m, _ := x.MaxOp(bb); m != made[0].ID.Counter {
		t.Fatalf("MaxOp after Commit %d", m)
	}
}

func TestCheckCanonical(t *testing.T) {
	c, ops := base(t)
	if err := c.CheckCanonical(ops); err != nil {
		t.Fatal(err)
	}
	cc, dd := strings.Repeat("\xcc", 16), strings.Repeat("\xdd", 16)
	two := []Op{{Key: Key{Kind: KeyProp, Prop: "k"}, Action: ActionPut, Value: IntValue(1),
		Pred: []OpID{{1, cc}, {1, dd}}}}
	swapped := func(c *Change, ops []Op) {
		c.OtherActors = [][]byte{[]byte(dd), []byte(cc)}
		idx := map[string]uint64{string(c.Actor): 0, dd: 1, cc: 2}
		c.Columns = encodeOps(ops, func(id OpID) uint64 { return idx[id.Actor] })
	}
	for _, tc := range []struct {
		name     string
		ops      []Op
		mutate   func(*Change, []Op)
		contains string
	}{
		{"unsorted other actors", two, swapped, "other actors"},
		{"unreferenced other actor", ops, func(c *Change, _ []Op) { c.OtherActors = append(c.OtherActors, []byte(cc)) }, "other actors"},
		{"zero-length null run", ops, func(c *Change, _ []Op) {
			setColumn(c, specKeyStr, append([]byte{0, 0}, column(c, specKeyStr)...))
		}, "encoded"},
		{"unsorted preds", []Op{{Key: Key{Kind: KeyProp, Prop: "k"}, Action: ActionPut, Value: IntValue(1),
			Pred: []OpID{{1, dd}, {1, cc}}}}, nil, "predecessors not sorted"},
		{"unsorted deps", ops, func(c *Change, _ []Op) { c.Deps = []Hash{{2}, {1}} }, "dependencies"},
		{"delete with a value", []Op{{Key: Key{Kind: KeyProp, Prop: "k"}, Action: ActionDelete, Value: IntValue(1), Pred: []OpID{{1, cc}}}}, nil, "del with a value"},
		{"increment by a uint", []Op{{Key: Key{Kind: KeyProp, Prop: "k"}, Action: ActionIncrement, Value: UintValue(1), Pred: []OpID{{1, cc}}}}, nil, "increment"},
		{"expand on a set", []Op{{Key: Key{Kind: KeyProp, Prop: "k"}, Action: ActionPut, Expand: true}}, nil, "expand"},
		{"mark name on a set", []Op{{Key: Key{Kind: KeyProp, Prop: "k"}, Action: ActionPut, HasMarkName: true}}, nil, "mark name"},
		{"mark end with a value", []Op{{Key: Key{Kind: KeyElem}, Insert: true, Action: ActionMark, Value: IntValue(1)}}, nil, "mark end"},
	} {
		var mutate func(*Change)
		if tc.mutate != nil {
			mutate = func(c *Change) { tc.mutate(c, tc.ops) }
		}
		later := *c
		later.StartOp = 10
		ch := rebuild(t, &later, tc.ops, mutate)
		got, err := ch.Ops()
		if err != nil {
			t.Errorf("%s: Ops: %v", tc.name, err)
			continue
		}
		wantMalformed(t, tc.name, ch.CheckCanonical(got), tc.contains)
	}
}
