package amsync

// ObjIndex knows every object of one document: its id and type, plus the
// highest op counter each actor has used. It is the state that checks
// the Rust core 0.5 needs but cannot make itself, because it panics
// instead of refusing (op_set.rs:447: an object whose ops mix map keys and
// list element keys) or silently corrupts the document (ops on objects
// that do not exist, op ids that collide with existing ones).
//
// The index must see every change applied to the document, in the order
// the core applies them (causal order): at load, the ops of each change of
// doc.Changes(); afterwards, the ops of each change the core accepted,
// with Add. A change not fed to it makes it refuse honest later changes
// (an unknown object); feeding it a change the core did not apply makes it
// accept ops on objects the core does not have (they are dropped, not a
// panic, but the document can then no longer be saved and loaded).
//
// An ObjIndex is not safe for concurrent use: the document's owner
// goroutine holds it. Memory: one map entry per object and per actor.
type ObjIndex struct {
	objs   map[OpID]ObjType
	maxOp  map[string]uint64 // actor -> highest op counter applied
	base   *ObjIndex         // for a staged index: the index it extends
	actors map[string]string // interned actor ids
}

// NewObjIndex returns the index of an empty document: the root map only.
func NewObjIndex() *ObjIndex {
	return &ObjIndex{objs: map[OpID]ObjType{}, maxOp: map[string]uint64{}, actors: map[string]string{}}
}

// Stage returns an index that sees x's objects plus whatever is added to
// it, without changing x until Commit. It lets the hub check every change
// of a sync message in order (each may use objects made by the ones
// before) and keep x unchanged if it refuses the message. x must not be
// changed while a staged index of it is in use.
func (x *ObjIndex) Stage() *ObjIndex {
	s := NewObjIndex()
	s.base = x
	return s
}

// Commit adds what was added to a staged index to the index it was staged
// from, and returns that index. On an index that is not staged it does
// nothing and returns x.
func (x *ObjIndex) Commit() *ObjIndex {
	b := x.base
	if b == nil {
		return x
	}
	for id, t := range x.objs {
		id.Actor = b.intern(id.Actor)
		b.objs[id] = t
	}
	for a, m := range x.maxOp {
		if old, ok := b.maxOp[a]; !ok || m > old {
			b.maxOp[b.intern(a)] = m
		}
	}
	x.objs, x.maxOp, x.actors = map[OpID]ObjType{}, map[string]uint64{}, map[string]string{}
	return b
}

// Type returns the type of the object id; the root is a map.
func (x *ObjIndex) Type(id OpID) (ObjType, bool) {
	if id.IsZero() {
		return ObjMap, true
	}
	for i := x; i != nil; i = i.base {
		if t, ok := i.objs[id]; ok {
			return t, true
		}
	}
	return 0, false
}

// MaxOp returns the highest op counter the actor (raw id bytes) has used in
// the changes added so far.
func (x *ObjIndex) MaxOp(actor string) (uint64, bool) {
	var best uint64
	found := false
	for i := x; i != nil; i = i.base {
		if m, ok := i.maxOp[actor]; ok && (!found || m > best) {
			best, found = m, true
		}
	}
	return best, found
}

// Len returns the number of objects in the index, the root excluded.
func (x *ObjIndex) Len() int {
	n := 0
	for i := x; i != nil; i = i.base {
		n += len(i.objs)
	}
	return n
}

// Check validates the ops of one change (as Ops returns them) against the
// document the index describes, without changing the index:
//   - the ops are consecutive ops of one actor, and their ids are above
//     every op id that actor used before (no op id is reused: the core
//     would replace an existing object by an empty one of another type);
//   - each op's object is the root or an object made earlier in the
//     document or in this change (the core drops ops on unknown objects
//     and the document can no longer be loaded);
//   - a map or table object gets map keys only, and no inserts; a list or
//     text object gets element keys (HEAD or an op id) only: the core 0.5
//     panics as soon as one object's ops mix the two (op_set.rs:447 via
//     op_tree.rs:359), possibly only when a later, honest change arrives.
func (x *ObjIndex) Check(ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	actor, start := ops[0].ID.Actor, ops[0].ID.Counter
	if m, ok := x.MaxOp(actor); ok && start <= m {
		return malformed("change reuses op ids: starts at %d, its actor already used %d", start, m)
	}
	var local map[OpID]ObjType // objects made by this change
	// Consecutive ops mostly act on one object: remember the last lookup.
	var lastObj OpID
	var lastType ObjType
	for i := range ops {
		op := &ops[i]
		if op.ID.Actor != actor || op.ID.Counter != start+uint64(i) {
			return opError(i, "op id %v does not follow %d@%x", op.ID, start, actor)
		}
		t := lastType
		if t == 0 || op.Obj != lastObj {
			var ok bool
			if t, ok = local[op.Obj]; !ok {
				t, ok = x.Type(op.Obj)
			}
			if !ok {
				return opError(i, "%v on unknown object %v", op.Action, op.Obj)
			}
			lastObj, lastType = op.Obj, t
		}
		if t.IsSeq() {
			if op.Key.Kind != KeyElem {
				return opError(i, "%v with map key %v on %v %v", op.Action, op.Key, t, op.Obj)
			}
		} else if op.Key.Kind != KeyProp || op.Insert {
			return opError(i, "%v with element key %v (insert %v) on %v %v", op.Action, op.Key, op.Insert, t, op.Obj)
		}
		if nt, ok := op.Action.ObjType(); ok {
			if local == nil {
				local = map[OpID]ObjType{}
			}
			local[op.ID] = nt
		}
	}
	return nil
}

// Add records the objects the ops make and their actor's highest op id.
// Call it for every change the core applied, after Check accepted it (or
// at load, for the document's own changes).
func (x *ObjIndex) Add(ops []Op) {
	for i := range ops {
		op := &ops[i]
		if t, ok := op.Action.ObjType(); ok {
			id := op.ID
			id.Actor = x.intern(id.Actor)
			x.objs[id] = t
		}
		if m, ok := x.maxOp[op.ID.Actor]; !ok || op.ID.Counter > m {
			x.maxOp[x.intern(op.ID.Actor)] = op.ID.Counter
		}
	}
}

// AddAccepted is Add for a change that passed Check (and DecodeOps) when
// it was first accepted, such as a document's own stored changes at
// load: it reads the change's action column only, which is all Add
// needs (an op's id is its change's actor and StartOp plus its
// position), and checks nothing the first acceptance did. It returns an
// error only for a change whose action column does not decode.
func (x *ObjIndex) AddAccepted(c *Change) error {
	action, err := actionColumn(c.Columns)
	if err != nil {
		return err
	}
	var actor string
	n := uint64(0)
	err = eachAction(action, MaxOps, func(a Action) {
		if t, ok := a.ObjType(); ok {
			if actor == "" {
				actor = x.intern(string(c.Actor))
			}
			x.objs[OpID{Counter: c.StartOp + n, Actor: actor}] = t
		}
		n++
	})
	if err != nil || n == 0 {
		return err
	}
	last := c.StartOp + n - 1
	if m, ok := x.maxOp[string(c.Actor)]; !ok || last > m {
		x.maxOp[x.intern(string(c.Actor))] = last
	}
	return nil
}

// actionColumn returns the data of the change's action column as the core
// reads it. It is the column of that spec unless another column of its id
// comes first and swallows it (as a group or value, see layoutColumns):
// then the whole layout decides.
func actionColumn(cols []Column) ([]byte, error) {
	for _, col := range cols {
		switch {
		case col.Spec == specAction:
			return col.Data, nil
		case col.Spec>>4 == specAction>>4:
			layout, err := layoutColumns(cols)
			if err != nil {
				return nil, err
			}
			return layout.action, nil
		case col.Spec > specAction:
			return nil, nil
		}
	}
	return nil, nil
}

// Apply is Check followed, if it passes, by Add.
func (x *ObjIndex) Apply(ops []Op) error {
	if err := x.Check(ops); err != nil {
		return err
	}
	x.Add(ops)
	return nil
}

// intern returns one shared copy of an actor id, so that entries of one
// actor do not each hold their own.
func (x *ObjIndex) intern(a string) string {
	if s, ok := x.actors[a]; ok {
		return s
	}
	x.actors[a] = a
	return a
}
