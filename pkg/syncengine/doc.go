package syncengine

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/plaithub/plait/pkg/amsync"
)

// Hash is an Automerge change hash.
type Hash = amsync.Hash

// Defaults of Options.
const (
	DefaultMaxQueued        = 4096
	DefaultMaxQueuedBytes   = 32 << 20
	DefaultMaxOpsPerChange  = 100_000
	DefaultMaxOpsPerKey     = 4096
	DefaultMaxHashes        = 4096
	DefaultMaxHaves         = 2
	DefaultMaxBloomBytes    = 2 << 20
	DefaultMaxInflatedBytes = 64 << 20
	DefaultMaxInflateRatio  = 256
	DefaultMaxSendBytes     = 8 << 20
)

// ErrInvalidChange is wrapped by every error about a change that is
// malformed or does not fit the document.
var ErrInvalidChange = errors.New("invalid change")

// ErrQueueFull is returned when changes waiting for their dependencies
// would exceed Options.MaxQueued or MaxQueuedBytes.
var ErrQueueFull = errors.New("too many changes waiting for their dependencies")

// ErrInvalidMessage is wrapped by every error about a sync message that
// is malformed (as opposed to one of its changes).
var ErrInvalidMessage = errors.New("invalid sync message")

// ErrLimitExceeded is wrapped by every error about a message or change
// that exceeds a resource bound (Options.MaxHashes, MaxHaves,
// MaxBloomBytes, MaxInflatedBytes, MaxBytes, and the per-change inflate
// cap amsync.MaxInflatedChangeBytes), whatever else the error wraps. The
// data may be valid: the node refuses to spend that much on it. The
// error's text names the bound and its value. The hub closes such peers
// with close code 4413 (protocol.CloseLimitExceeded).
var ErrLimitExceeded = errors.New("resource limit exceeded")

// ErrDocTooLarge is the ErrLimitExceeded of Options.MaxBytes: the changes
// of a message would take the document past its maximum size.
var ErrDocTooLarge = fmt.Errorf("%w: document too large", ErrLimitExceeded)

// ErrInflateBudget is the ErrLimitExceeded of Options.MaxInflatedBytes
// and amsync.MaxInflatedChangeBytes: compressed changes inflate too much.
var ErrInflateBudget = fmt.Errorf("%w: compressed changes inflate too much", ErrLimitExceeded)

// Options configure a Doc. The zero value is usable: each zero field takes
// its documented default.
type Options struct {
	// Accept, if set, is called for each change after it passed the
	// engine's checks and before it is applied, in the order of
	// application, with the origin given to ReceiveMessage or AddChanges.
	// An error refuses the change; if the change came with the current
	// call, that call fails with the error and applies nothing. A queued
	// change from an earlier call that is refused is dropped. Accept is a
	// check: it may see a change that is not applied after all (another
	// change of the same call was refused), so what to store or publish
	// is what ReceiveMessage and AddChanges return.
	Accept func(c *amsync.Change, origin any) error
	// MaxQueued bounds the changes waiting for dependencies (default 4096).
	MaxQueued int
	// MaxQueuedBytes bounds their bytes (default 32 MiB).
	MaxQueuedBytes int
	// MaxOpsPerChange bounds the ops of one change (default 100,000).
	MaxOpsPerChange int
	// MaxOpsPerKey bounds the ops of one change on one key (default 4096):
	// the core's cost grows with the square of the ops on a key.
	MaxOpsPerKey int

	// The bounds below apply to what ReceiveMessage takes from a peer; a
	// message that exceeds one is refused whole with an error wrapping
	// ErrLimitExceeded (nothing applied, the State unchanged).

	// MaxHashes bounds the hashes of a received message's heads, of its
	// need, and of each have's last sync heads, each list on its own
	// (default 4096).
	MaxHashes int
	// MaxHaves bounds the entries of a received message's have list
	// (default 2; Automerge sends at most one).
	MaxHaves int
	// MaxBloomBytes bounds the encoded size of one received Bloom filter
	// (default 2 MiB: about 1.6 million changes at 10 bits each, so an
	// honest peer that missed that many changes still fits).
	MaxBloomBytes int
	// MaxInflatedBytes bounds what the compressed change chunks of one
	// ReceiveMessage call may inflate to, in total (default 64 MiB).
	// Inflating stops as soon as it is exceeded. AddChanges is not
	// subject to it, only to the per-change cap,
	// amsync.MaxInflatedChangeBytes.
	MaxInflatedBytes int
	// MaxInflateRatio bounds how many times its own size one of a peer's
	// compressed change chunks may inflate to, once it inflates past
	// inflateRatioFloor (1 MiB; smaller chunks are exempt): the document
	// holds and sends changes uncompressed, so a chunk of deflated zeros
	// would cost the node a thousand times what it cost the peer. Honest
	// changes compress far less (their columns are already run-length
	// encoded). Default 256; negative: no bound. ReceiveMessage only.
	MaxInflateRatio int
	// MaxBytes bounds the size of the document (see Bytes): a
	// ReceiveMessage whose changes would take the document past it is
	// refused. Zero (the default) means no bound. AddChanges is not
	// limited: a document stored before the bound existed still loads,
	// and changes from other nodes were checked there. A document over
	// the bound is read-only for peers: it refuses their new changes but
	// still serves its history.
	MaxBytes int
	// MaxSendBytes bounds the bytes of change chunks GenerateMessage puts
	// into one message (default 8 MiB). When more is due, a message
	// carries a prefix of it, dependencies first, of at most MaxSendBytes
	// but always at least one change; the rest follows in later messages
	// as the peer answers.
	MaxSendBytes int
}

// node is one applied change. Its position in Doc.nodes is its index: a
// change's dependencies always have smaller indexes.
type node struct {
	hash Hash
	raw  []byte
	deps []int32
}

// actorInfo is where an actor's chain of changes ends.
type actorInfo struct {
	last int32 // index of the actor's latest change
	seq  uint64
}

type queued struct {
	c      *amsync.Change
	origin any
	waitOn Hash // the missing dependency it is listed under in Doc.waiting
}

// Doc is the change index of one document. See the package documentation.
type Doc struct {
	opts    Options
	nodes   []node
	index   map[Hash]int32
	heads   []Hash // sorted; replaced, never modified in place
	actors  []actorInfo
	actorIx map[string]int32
	objs    *amsync.ObjIndex

	queue       map[Hash]*queued
	waiting     map[Hash][]Hash // a missing dependency -> queued changes waiting for it
	queuedBytes int
	dropped     int
	size        int // bytes of the applied changes' uncompressed chunks

	// coreStrict makes GenerateMessage stay silent while a message is in
	// flight even when the peer needs something, as the core does (tests
	// compare the engine with the core byte for byte).
	coreStrict bool

	memo memo // walks and Bloom filters shared by peers in the same state (memo.go)

	// scratch of the walks (owner goroutine only)
	epoch uint32
	seen  []uint32 // epoch a node was last pushed in
	xmark []uint32 // epoch a node was last found shared
	heap  []int32
}

// New returns an empty document.
func New(opts Options) *Doc {
	for _, f := range []struct {
		v   *int
		def int
	}{
		{&opts.MaxQueued, DefaultMaxQueued}, {&opts.MaxQueuedBytes, DefaultMaxQueuedBytes},
		{&opts.MaxOpsPerChange, DefaultMaxOpsPerChange}, {&opts.MaxOpsPerKey, DefaultMaxOpsPerKey},
		{&opts.MaxHashes, DefaultMaxHashes}, {&opts.MaxHaves, DefaultMaxHaves},
		{&opts.MaxBloomBytes, DefaultMaxBloomBytes}, {&opts.MaxInflatedBytes, DefaultMaxInflatedBytes},
		{&opts.MaxSendBytes, DefaultMaxSendBytes},
	} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	if opts.MaxInflateRatio == 0 {
		opts.MaxInflateRatio = DefaultMaxInflateRatio
	}
	if opts.MaxBytes < 0 {
		opts.MaxBytes = 0
	}
	return &Doc{
		opts:    opts,
		index:   make(map[Hash]int32),
		actorIx: make(map[string]int32),
		objs:    amsync.NewObjIndex(),
		queue:   make(map[Hash]*queued),
		waiting: make(map[Hash][]Hash),
	}
}

// Heads returns the document's heads, sorted. The slice must not be modified.
func (d *Doc) Heads() []Hash { return d.heads }

// Len returns the number of applied changes.
func (d *Doc) Len() int { return len(d.nodes) }

// Has reports whether the change is applied (queued changes are not).
func (d *Doc) Has(h Hash) bool {
	_, ok := d.index[h]
	return ok
}

// Change returns the raw chunk of an applied change.
func (d *Doc) Change(h Hash) ([]byte, bool) {
	i, ok := d.index[h]
	if !ok {
		return nil, false
	}
	return d.nodes[i].raw, true
}

// Queued returns the number of changes waiting for dependencies.
func (d *Doc) Queued() int { return len(d.queue) }

// SetMaxBytes changes Options.MaxBytes for the ReceiveMessage calls that
// follow (a quota that changed with the document's owners); zero or
// negative: no bound. Like every method, it is called from the document's
// one goroutine.
func (d *Doc) SetMaxBytes(n int) {
	d.opts.MaxBytes = max(n, 0)
}

// MaxBytes returns the bound SetMaxBytes or Options.MaxBytes set (0: none).
func (d *Doc) MaxBytes() int { return d.opts.MaxBytes }

// Bytes returns the size of the document as Options.MaxBytes counts it:
// the bytes of the uncompressed chunks of its applied changes plus those
// of its queued ones.
func (d *Doc) Bytes() int { return d.size + d.queuedBytes }

// Dropped returns how many queued changes were dropped because they were
// refused once their dependencies arrived.
func (d *Doc) Dropped() int { return d.dropped }

// All calls f with the raw chunk of every applied change, in the order of
// application (dependencies first), until f returns false. Concatenated,
// the chunks load into automerge-go (automerge.Load or LoadIncremental).
func (d *Doc) All(f func(raw []byte) bool) {
	for i := range d.nodes {
		if !f(d.nodes[i].raw) {
			return
		}
	}
}

// AddChanges applies change chunks that do not come in a sync message: a
// client's own changes, or changes loaded from storage. It checks them as
// ReceiveMessage does and returns the changes it applied, in order
// (queued changes that they released included). Of the bounds, only the
// queue's and the per-change inflate cap apply: Options.MaxBytes and
// MaxInflatedBytes do not.
func (d *Doc) AddChanges(origin any, chunks ...[]byte) ([]*amsync.Change, error) {
	return d.apply(chunks, origin, nil, false)
}

// AddStored is AddChanges for the document's own stored changes, which
// passed every check of this engine when they were first accepted (the
// store only ever gets changes an engine returned). It keeps the checks
// that tie a change into the history (its hash, its dependencies, its
// actor's seqs) and leaves out those of its ops (ops per change and per
// key, canonical encoding, objects, Options.Accept), decoding only the
// action column the object index needs: opening a large document costs
// a fraction of checking it again. The engine keeps the chunks without
// copying them: the caller must not change them. A queued change that is
// released later, by a change from a peer, is checked in full.
func (d *Doc) AddStored(origin any, chunks ...[]byte) ([]*amsync.Change, error) {
	return d.apply(chunks, origin, nil, true)
}

// Forget drops the queued changes that came from origin (a peer that
// left): if their dependencies ever arrive, so will they, from whoever
// has them.
func (d *Doc) Forget(origin any) {
	for h, q := range d.queue {
		if q.origin == origin {
			d.unqueue(h)
		}
	}
}

func (d *Doc) unqueue(h Hash) {
	q, ok := d.queue[h]
	if !ok {
		return
	}
	d.queuedBytes -= len(q.c.Raw)
	delete(d.queue, h)
	if w := slices.DeleteFunc(d.waiting[q.waitOn], func(x Hash) bool { return x == h }); len(w) > 0 {
		d.waiting[q.waitOn] = w
	} else {
		delete(d.waiting, q.waitOn)
	}
}

// candidate is a change considered in one apply call.
type candidate struct {
	c      *amsync.Change
	origin any
	fresh  bool    // came with this call (else: from the queue)
	stored bool    // from the store (AddStored): its ops were checked when accepted
	done   bool    // staged
	idx    int32   // index it will have once applied
	deps   []int32 // indexes of its dependencies (once staged)
}

// staging holds what one apply call would change, until it commits.
// Staged changes get the indexes they will have once applied, so the
// walks see applied and staged changes as one graph.
type staging struct {
	objs   *amsync.ObjIndex
	ready  []*candidate
	byHash map[Hash]*candidate
	last   map[string]*candidate // actor -> its latest staged change
}

// inflateRatioFloor is the inflated size below which
// Options.MaxInflateRatio does not apply.
const inflateRatioFloor = 1 << 20

// peerBounds are the bounds of one ReceiveMessage call on its changes.
type peerBounds struct {
	inflateLeft int // of Options.MaxInflatedBytes
	maxBytes    int // Options.MaxBytes; 0: none
}

func (d *Doc) apply(chunks [][]byte, origin any, pb *peerBounds, stored bool) ([]*amsync.Change, error) {
	var fresh []*candidate
	inCall := make(map[Hash]bool, len(chunks))
	grow := 0 // bytes the new changes add to the document
	for i, raw := range chunks {
		limit := amsync.MaxInflatedChangeBytes
		byRatio := false // the ratio, not the budget, bounds this chunk
		if pb != nil {
			limit = pb.inflateLeft
			if r := d.opts.MaxInflateRatio; r > 0 && len(raw) <= limit/r {
				if rl := max(inflateRatioFloor, r*len(raw)); rl < limit {
					limit, byRatio = rl, true
				}
			}
		}
		// Parsed from a copy of its own, so that neither the change nor
		// its fields keep the message or batch it came in alive (stored
		// chunks are the caller's to give).
		own := raw
		if !stored {
			own = bytes.Clone(raw)
		}
		c, err := amsync.ParseChangeLimit(own, limit)
		if err != nil {
			if errors.Is(err, amsync.ErrTooLarge) {
				if byRatio {
					return nil, fmt.Errorf("%w: change %d: a compressed chunk of %d bytes inflates to more than %d bytes, over %d times its size (MaxInflateRatio)", ErrInflateBudget, i, len(raw), limit, d.opts.MaxInflateRatio)
				}
				if pb != nil && limit < amsync.MaxInflatedChangeBytes {
					return nil, fmt.Errorf("%w: change %d: %w (MaxInflatedBytes is %d for the whole message)", ErrInflateBudget, i, err, d.opts.MaxInflatedBytes)
				}
				return nil, fmt.Errorf("%w: change %d: %w", ErrInflateBudget, i, err)
			}
			return nil, fmt.Errorf("%w %d: %w", ErrInvalidChange, i, err)
		}
		if pb != nil {
			pb.inflateLeft -= c.InflatedLen()
		}
		if _, ok := d.index[c.Hash]; ok || inCall[c.Hash] || d.queue[c.Hash] != nil {
			continue // a duplicate is harmless
		}
		inCall[c.Hash] = true
		grow += len(c.Uncompressed())
		fresh = append(fresh, &candidate{c: c, origin: origin, fresh: true, stored: stored})
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	if pb != nil && pb.maxBytes > 0 && d.Bytes()+grow > pb.maxBytes {
		return nil, fmt.Errorf("%w: the message's %d new changes (%d bytes) would take the document from %d to %d bytes (MaxBytes is %d)",
			ErrDocTooLarge, len(fresh), grow, d.Bytes(), d.Bytes()+grow, pb.maxBytes)
	}
	for _, cd := range fresh {
		if err := ownRaw(cd.c); err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrInvalidChange, cd.c.Hash, err)
		}
	}
	st := &staging{objs: d.objs.Stage(), byHash: make(map[Hash]*candidate, len(fresh)), last: map[string]*candidate{}}
	blocked := make(map[Hash][]*candidate) // missing dependency -> candidates of this call
	work := slices.Clone(fresh)
	var dropped []Hash
	var retried []*candidate // queued changes this call looked at again
	for len(work) > 0 {
		cd := work[0]
		work = work[1:]
		if missing, ok := d.firstMissing(cd.c, st); ok {
			blocked[missing] = append(blocked[missing], cd)
			continue
		}
		if err := d.stage(cd, st); err != nil {
			if cd.fresh {
				return nil, fmt.Errorf("%w %s: %w", ErrInvalidChange, cd.c.Hash, err)
			}
			dropped = append(dropped, cd.c.Hash)
			continue
		}
		work = append(work, blocked[cd.c.Hash]...)
		delete(blocked, cd.c.Hash)
		for _, qh := range d.waiting[cd.c.Hash] {
			if q := d.queue[qh]; q != nil && st.byHash[qh] == nil {
				cq := &candidate{c: q.c, origin: q.origin}
				retried = append(retried, cq)
				work = append(work, cq)
			}
		}
	}
	// What is still blocked waits in the queue, within bounds.
	var wait []*candidate
	add := 0
	for _, cd := range fresh {
		if !cd.done {
			wait = append(wait, cd)
			add += len(cd.c.Raw)
		}
	}
	if len(wait) > 0 && (len(d.queue)+len(wait) > d.opts.MaxQueued || d.queuedBytes+add > d.opts.MaxQueuedBytes) {
		return nil, fmt.Errorf("%w (limit %d changes, %d bytes)", ErrQueueFull, d.opts.MaxQueued, d.opts.MaxQueuedBytes)
	}

	// Commit.
	d.objs = st.objs.Commit()
	out := make([]*amsync.Change, 0, len(st.ready))
	d.nodes = slices.Grow(d.nodes, len(st.ready))
	if len(d.index) == 0 {
		d.index = make(map[Hash]int32, len(st.ready)) // a load: sized once
	}
	for _, cd := range st.ready {
		d.insert(cd)
		d.unqueue(cd.c.Hash)
		delete(d.waiting, cd.c.Hash)
		out = append(out, cd.c)
	}
	for _, h := range dropped {
		d.unqueue(h)
		d.dropped++
	}
	for _, cd := range wait {
		d.queue[cd.c.Hash] = &queued{c: cd.c, origin: cd.origin}
		d.queuedBytes += len(cd.c.Raw)
	}
	// Every change still queued waits on one dependency it lacks (its old
	// entry went away with the dependency that arrived).
	for _, cd := range append(wait, retried...) {
		if cd.done || d.queue[cd.c.Hash] == nil {
			continue
		}
		if m, ok := d.firstMissing(cd.c, nil); ok {
			d.waiting[m] = append(d.waiting[m], cd.c.Hash)
			d.queue[cd.c.Hash].waitOn = m
		}
	}
	if len(st.ready) > 0 {
		d.updateHeads(st.ready)
	}
	return out, nil
}

// firstMissing returns a dependency of c that is neither applied nor staged.
func (d *Doc) firstMissing(c *amsync.Change, st *staging) (Hash, bool) {
	for _, dep := range c.Deps {
		if _, ok := d.index[dep]; ok {
			continue
		}
		if st != nil && st.byHash[dep] != nil {
			continue
		}
		return dep, true
	}
	return Hash{}, false
}

// depIndex returns the index of an applied or staged change.
func (d *Doc) depIndex(h Hash, st *staging) int32 {
	if i, ok := d.index[h]; ok {
		return i
	}
	return st.byHash[h].idx
}

// stage validates a causally ready change against the document plus what
// is staged, and stages it.
func (d *Doc) stage(cd *candidate, st *staging) error {
	c := cd.c
	cd.idx = int32(len(d.nodes) + len(st.ready))
	cd.deps = make([]int32, len(c.Deps))
	for i, dep := range c.Deps {
		cd.deps[i] = d.depIndex(dep, st)
	}
	// Consecutive seqs per actor, each change after its actor's previous one.
	var last uint64
	prev := int32(-1)
	if p := st.last[string(c.Actor)]; p != nil {
		last, prev = p.c.Seq, p.idx
	} else if ai, ok := d.actorIx[string(c.Actor)]; ok {
		last, prev = d.actors[ai].seq, d.actors[ai].last
	}
	if c.Seq != last+1 {
		return fmt.Errorf("actor %x seq %d does not follow its seq %d", c.Actor, c.Seq, last)
	}
	if prev >= 0 && !slices.Contains(cd.deps, prev) && !d.reaches(cd.deps, prev, st) {
		return fmt.Errorf("actor %x seq %d does not depend on its seq %d", c.Actor, c.Seq, last)
	}
	if cd.stored {
		if err := st.objs.AddAccepted(c); err != nil {
			return err
		}
		st.add(cd)
		return nil
	}
	ops, err := c.DecodeOps(d.opts.MaxOpsPerChange)
	if err != nil {
		return err
	}
	if err := checkOpsPerKey(ops, d.opts.MaxOpsPerKey); err != nil {
		return err
	}
	// A change the core's document format cannot reproduce byte for byte
	// makes every snapshot saved after it unloadable, here and on every
	// client that stores it.
	if err := c.CheckCanonical(ops); err != nil {
		return err
	}
	if err := st.objs.Check(ops); err != nil {
		return err
	}
	if d.opts.Accept != nil {
		if err := d.opts.Accept(c, cd.origin); err != nil {
			return err
		}
	}
	st.objs.Add(ops)
	st.add(cd)
	return nil
}

// add records a change that passed stage's checks as staged.
func (st *staging) add(cd *candidate) {
	cd.done = true
	st.ready = append(st.ready, cd)
	st.byHash[cd.c.Hash] = cd
	st.last[string(cd.c.Actor)] = cd
}

func (d *Doc) insert(cd *candidate) {
	c := cd.c
	idx := int32(len(d.nodes))
	ai, ok := d.actorIx[string(c.Actor)]
	if !ok {
		ai = int32(len(d.actors))
		d.actors = append(d.actors, actorInfo{})
		d.actorIx[string(c.Actor)] = ai
	}
	d.actors[ai] = actorInfo{last: idx, seq: c.Seq}
	d.nodes = append(d.nodes, node{hash: c.Hash, raw: c.Raw, deps: cd.deps})
	d.index[c.Hash] = idx
	d.size += len(c.Raw)
}

func (d *Doc) updateHeads(ready []*candidate) {
	gone := make(map[Hash]bool)
	for _, cd := range ready {
		for _, dep := range cd.c.Deps {
			gone[dep] = true
		}
	}
	heads := make([]Hash, 0, len(d.heads)+1)
	for _, h := range d.heads {
		if !gone[h] {
			heads = append(heads, h)
		}
	}
	for _, cd := range ready {
		if !gone[cd.c.Hash] {
			heads = append(heads, cd.c.Hash)
		}
	}
	slices.SortFunc(heads, cmpHash)
	d.heads = heads
}

func cmpHash(a, b Hash) int { return bytes.Compare(a[:], b[:]) }

// ownRaw makes c.Raw the uncompressed chunk and c.Stored the chunk as it
// arrived, given a change parsed from a copy of its own. The index and
// peers get the uncompressed chunk (the Rust core 0.5 misreads compressed
// chunks in sync messages); storage gets what arrived.
func ownRaw(c *amsync.Change) error {
	c.Stored = c.Raw
	if c.Raw[8] == 1 {
		return nil
	}
	// The chunk inflated while parsing, header included: check that it
	// is an uncompressed chunk with the change's hash.
	u := c.Uncompressed()
	again, err := amsync.ParseChange(u)
	if err != nil || again.Hash != c.Hash || u[8] != 1 {
		return errors.New("a compressed change whose uncompressed form does not have its hash")
	}
	c.Raw = u
	return nil
}

// checkOpsPerKey refuses a change that piles many ops onto one key.
func checkOpsPerKey(ops []amsync.Op, limit int) error {
	if len(ops) <= limit {
		return nil
	}
	type slot struct {
		obj amsync.OpID
		key amsync.Key
	}
	n := make(map[slot]int)
	for _, op := range ops {
		k := slot{op.Obj, op.Key}
		if n[k]++; n[k] > limit {
			return fmt.Errorf("more than %d ops on one key (%s) in one change", limit, op.Key)
		}
	}
	return nil
}

// MissingDeps returns, sorted, the hashes the document lacks among heads
// and among the dependencies of queued changes (queued changes excluded):
// what to ask a peer for.
func (d *Doc) MissingDeps(heads []Hash) []Hash {
	if len(d.queue) == 0 && !slices.ContainsFunc(heads, func(h Hash) bool { return !d.Has(h) }) {
		return nil // the usual case, without allocating
	}
	var missing []Hash
	seen := make(map[Hash]bool)
	add := func(h Hash) {
		if _, ok := d.index[h]; ok || d.queue[h] != nil || seen[h] {
			return
		}
		seen[h] = true
		missing = append(missing, h)
	}
	for _, q := range d.queue {
		for _, dep := range q.c.Deps {
			add(dep)
		}
	}
	for _, h := range heads {
		add(h)
	}
	slices.SortFunc(missing, cmpHash)
	return missing
}
