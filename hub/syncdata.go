package hub

import (
	"encoding/hex"
	"fmt"
	"log/slog"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

// Bounds of the changes a document holds back while their dependencies are
// missing, and of the ops of one change from a client (the core's cost
// grows with the square of the ops that touch one key).
const (
	maxHeldChanges  = 4096
	maxHeldBytes    = 32 << 20
	maxOpsPerChange = 100_000
	maxOpsPerKey    = 4096 // ops on one key (or inserted after one element) in one change
)

// syncGuard stands between clients' sync messages and the Automerge core
// (automerge-go, Rust core 0.5), where a panic aborts the whole node. It
// parses every message and change in Go and hands the core only changes
// that are safe for it:
//
//   - every dependency is already applied (or arrives in the same message):
//     changes that arrive early are held here, never queued in the core,
//     and released once their dependencies are applied;
//   - each actor's sequence numbers stay consecutive (the core indexes an
//     actor's changes by seq and panics on a gap);
//   - every op decodes within the bounds the core needs (actor indexes,
//     counters, actions, values: amsync.Change.DecodeOps), and fits the
//     document's objects (amsync.ObjIndex: the object exists, map keys only
//     on maps, element keys only on lists and text, fresh op ids).
//
// Held changes also drive "need": the guard adds their missing
// dependencies to the sync messages for the peer that sent them, because
// the core, which never saw them, would not ask. (An honest peer sends a
// change before its dependency when a Bloom filter false positive made it
// believe the hub already had the dependency.)
//
// One guard belongs to one document owner goroutine.
type syncGuard struct {
	log       *slog.Logger
	seqs      map[string]uint64 // actor (hex) -> highest seq applied
	objs      *amsync.ObjIndex  // objects of the applied changes
	held      map[amsync.Hash]*heldChange
	heldBytes int
}

type heldChange struct {
	c    *amsync.Change
	ops  []amsync.Op
	from *session // nil once that session is gone
}

// newSyncGuard indexes the changes of doc (once, when a document is loaded).
func newSyncGuard(doc *automerge.Doc, log *slog.Logger) (*syncGuard, error) {
	g := &syncGuard{log: log, seqs: make(map[string]uint64), objs: amsync.NewObjIndex(), held: make(map[amsync.Hash]*heldChange)}
	chs, err := doc.Changes() // in the order the core applied them
	if err != nil {
		return nil, fmt.Errorf("failed to index changes: %w", err)
	}
	for _, ch := range chs {
		a := ch.ActorID()
		g.seqs[a] = max(g.seqs[a], ch.ActorSeq())
		c, err := amsync.ParseChange(ch.Save())
		if err != nil {
			return nil, fmt.Errorf("failed to index stored change %s: %w", ch.Hash(), err)
		}
		// A stored change may be saved compressed; index what it holds.
		c.Raw = c.Encode()
		ops, err := c.DecodeOps(amsync.MaxOps)
		if err != nil {
			return nil, fmt.Errorf("failed to index the ops of stored change %s: %w", ch.Hash(), err)
		}
		g.objs.Add(ops)
	}
	return g, nil
}

func has(doc *automerge.Doc, h amsync.Hash) bool {
	_, err := doc.Change(automerge.ChangeHash(h))
	return err == nil
}

// admitted is a change admit handed to the core, with its decoded ops.
type admitted struct {
	c   *amsync.Change
	ops []amsync.Op
}

// admit validates a sync message from peer from and returns the message to
// give the core: the same message with only the changes that are ready,
// plus held changes this message makes ready (listed in ready, in the
// order the core will apply them). It returns an error, and changes
// nothing, if the message or any change in it is invalid.
func (g *syncGuard) admit(doc *automerge.Doc, from *session, data []byte) (core []byte, ready []admitted, err error) {
	m, err := amsync.ParseMessage(data)
	if err != nil {
		return nil, nil, err
	}
	if m.Type != amsync.MessageTypeSync {
		return nil, nil, fmt.Errorf("sync message type 0x%02x is not supported (this server speaks 0x%02x)", m.Type, amsync.MessageTypeSync)
	}
	var incoming []*amsync.Change
	opsOf := make(map[amsync.Hash][]amsync.Op)
	for i, raw := range m.Changes {
		c, err := amsync.ParseChange(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("change %d: %w", i, err)
		}
		if opsOf[c.Hash] != nil || g.held[c.Hash] != nil || has(doc, c.Hash) {
			continue // a duplicate is harmless
		}
		ops, err := c.DecodeOps(maxOpsPerChange)
		if err != nil {
			return nil, nil, fmt.Errorf("change %d: %w", i, err)
		}
		if err := checkOpsPerKey(ops); err != nil {
			return nil, nil, fmt.Errorf("change %d: %w", i, err)
		}
		opsOf[c.Hash] = ops
		incoming = append(incoming, c)
	}
	// Release in dependency order: a change is ready when each of its
	// dependencies is applied or ready.
	pending := make(map[amsync.Hash]*amsync.Change, len(incoming)+len(g.held))
	for _, c := range incoming {
		pending[c.Hash] = c
	}
	for h, hc := range g.held {
		pending[h] = hc.c
		opsOf[h] = hc.ops
	}
	stage := g.objs.Stage()
	isReady := make(map[amsync.Hash]bool)
	next := make(map[string]uint64) // actor -> highest seq applied or ready
	var order []*amsync.Change
	for progress := true; progress; {
		progress = false
		for h, c := range pending {
			if !depsReady(doc, c, isReady) {
				continue
			}
			actor := hex.EncodeToString(c.Actor)
			last, ok := next[actor]
			if !ok {
				last = g.seqs[actor]
			}
			var bad error
			if c.Seq != last+1 {
				bad = fmt.Errorf("change %s: actor %s seq %d does not follow its seq %d", c.Hash, actor, c.Seq, last)
			} else if err := stage.Apply(opsOf[h]); err != nil {
				bad = fmt.Errorf("change %s: %w", c.Hash, err)
			}
			if bad != nil {
				if g.held[h] == nil {
					return nil, nil, bad
				}
				// A held change that turns out invalid: drop it.
				g.log.Warn("dropping an invalid held change", "err", bad)
				g.heldBytes -= len(c.Raw)
				delete(g.held, h)
				delete(pending, h)
				continue
			}
			next[actor] = c.Seq
			isReady[h] = true
			order = append(order, c)
			delete(pending, h)
			progress = true
		}
	}
	// What is still pending waits for its dependencies.
	add := 0
	for _, c := range incoming {
		if !isReady[c.Hash] {
			add += len(c.Raw)
		}
	}
	if len(pending) > maxHeldChanges || g.heldBytes+add > maxHeldBytes {
		return nil, nil, fmt.Errorf("too many changes waiting for their dependencies (limit %d changes, %d bytes)", maxHeldChanges, maxHeldBytes)
	}
	for _, c := range incoming {
		if !isReady[c.Hash] {
			g.held[c.Hash] = &heldChange{c: c, ops: opsOf[c.Hash], from: from}
			g.heldBytes += len(c.Raw)
		}
	}
	for _, c := range order {
		if hc := g.held[c.Hash]; hc != nil {
			g.heldBytes -= len(c.Raw)
			delete(g.held, c.Hash)
		}
	}
	m.Changes = m.Changes[:0]
	for _, c := range order {
		m.Changes = append(m.Changes, c.Raw)
		ready = append(ready, admitted{c: c, ops: opsOf[c.Hash]})
	}
	return m.Encode(), ready, nil
}

// checkOpsPerKey refuses a change that piles many ops onto one key: the
// core's cost grows with the square of the ops on a key (20,000 take
// seconds), so a small message could stall the document.
func checkOpsPerKey(ops []amsync.Op) error {
	type slot struct {
		obj amsync.OpID
		key amsync.Key
	}
	var n map[slot]int
	for _, op := range ops {
		if n == nil {
			n = make(map[slot]int)
		}
		k := slot{op.Obj, op.Key}
		if n[k]++; n[k] > maxOpsPerKey {
			return fmt.Errorf("more than %d ops on one key (%s) in one change", maxOpsPerKey, op.Key)
		}
	}
	return nil
}

func depsReady(doc *automerge.Doc, c *amsync.Change, ready map[amsync.Hash]bool) bool {
	for _, d := range c.Deps {
		if !ready[d] && !has(doc, d) {
			return false
		}
	}
	return true
}

// applied records the seqs and objects of the changes the core applied,
// of those admit handed it (in the order the core applied them).
func (g *syncGuard) applied(doc *automerge.Doc, ready []admitted) {
	for _, a := range ready {
		if !has(doc, a.c.Hash) {
			g.log.Error("the core did not apply a ready change", "hash", a.c.Hash.String())
			continue
		}
		actor := hex.EncodeToString(a.c.Actor)
		g.seqs[actor] = max(g.seqs[actor], a.c.Seq)
		g.objs.Add(a.ops)
	}
}

// missingFor returns the dependencies of changes held from peer s that no
// one has sent yet: what the hub needs from s.
func (g *syncGuard) missingFor(doc *automerge.Doc, s *session) []amsync.Hash {
	var out []amsync.Hash
	seen := map[amsync.Hash]bool{}
	for _, hc := range g.held {
		if hc.from != s {
			continue
		}
		for _, d := range hc.c.Deps {
			if !seen[d] && g.held[d] == nil && !has(doc, d) {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// forget drops the link from held changes to a session that left (the
// changes stay held: another peer may send their dependencies).
func (g *syncGuard) forget(s *session) {
	for _, hc := range g.held {
		if hc.from == s {
			hc.from = nil
		}
	}
}

// withNeed rewrites a sync message the core generated for a peer so that
// its need lists the dependencies the hub is missing, and not the changes
// it already holds. With msg nil it builds a message that only asks.
func (g *syncGuard) withNeed(doc *automerge.Doc, msg []byte, need []amsync.Hash) ([]byte, error) {
	var m *amsync.Message
	if msg == nil {
		m = &amsync.Message{Type: amsync.MessageTypeSync}
		for _, h := range doc.Heads() {
			m.Heads = append(m.Heads, amsync.Hash(h))
		}
	} else {
		var err error
		if m, err = amsync.ParseMessage(msg); err != nil {
			return nil, err
		}
	}
	want := make(map[amsync.Hash]bool)
	var out []amsync.Hash
	for _, h := range append(m.Need, need...) {
		if !want[h] && g.held[h] == nil {
			want[h] = true
			out = append(out, h)
		}
	}
	m.Need = out
	return m.Encode(), nil
}
