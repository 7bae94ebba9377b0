package hub

import (
	"encoding/hex"
	"fmt"
	"log/slog"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

// Bounds of the changes a document holds back while their dependencies are
// missing.
const (
	maxHeldChanges = 4096
	maxHeldBytes   = 32 << 20
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
//     actor's changes by seq and panics on a gap).
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
	held      map[amsync.Hash]*heldChange
	heldBytes int
}

type heldChange struct {
	c    *amsync.Change
	from *session // nil once that session is gone
}

// newSyncGuard indexes the changes of doc (once, when a document is loaded).
func newSyncGuard(doc *automerge.Doc, log *slog.Logger) (*syncGuard, error) {
	g := &syncGuard{log: log, seqs: make(map[string]uint64), held: make(map[amsync.Hash]*heldChange)}
	chs, err := doc.Changes()
	if err != nil {
		return nil, fmt.Errorf("failed to index changes: %w", err)
	}
	for _, c := range chs {
		a := c.ActorID()
		g.seqs[a] = max(g.seqs[a], c.ActorSeq())
	}
	return g, nil
}

func has(doc *automerge.Doc, h amsync.Hash) bool {
	_, err := doc.Change(automerge.ChangeHash(h))
	return err == nil
}

// admit validates a sync message from peer from and returns the message to
// give the core: the same message with only the changes that are ready,
// plus held changes this message makes ready. It returns an error, and
// changes nothing, if the message or any change in it is invalid.
func (g *syncGuard) admit(doc *automerge.Doc, from *session, data []byte) ([]byte, error) {
	m, err := amsync.ParseMessage(data)
	if err != nil {
		return nil, err
	}
	if m.Type != amsync.MessageTypeSync {
		return nil, fmt.Errorf("sync message type 0x%02x is not supported (this server speaks 0x%02x)", m.Type, amsync.MessageTypeSync)
	}
	var incoming []*amsync.Change
	seen := make(map[amsync.Hash]bool, len(m.Changes))
	for i, raw := range m.Changes {
		c, err := amsync.ParseChange(raw)
		if err != nil {
			return nil, fmt.Errorf("change %d: %w", i, err)
		}
		if seen[c.Hash] || g.held[c.Hash] != nil || has(doc, c.Hash) {
			continue // a duplicate is harmless
		}
		seen[c.Hash] = true
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
	}
	ready := make(map[amsync.Hash]bool)
	next := make(map[string]uint64) // actor -> highest seq applied or ready
	var order []*amsync.Change
	for progress := true; progress; {
		progress = false
		for h, c := range pending {
			if !depsReady(doc, c, ready) {
				continue
			}
			actor := hex.EncodeToString(c.Actor)
			last, ok := next[actor]
			if !ok {
				last = g.seqs[actor]
			}
			if c.Seq != last+1 {
				if g.held[h] != nil {
					// A held change that turns out invalid: drop it.
					g.log.Warn("dropping held change with a broken seq", "actor", actor, "seq", c.Seq, "after", last)
					g.heldBytes -= len(c.Raw)
					delete(g.held, h)
					delete(pending, h)
					continue
				}
				return nil, fmt.Errorf("change %s: actor %s seq %d does not follow its seq %d", c.Hash, actor, c.Seq, last)
			}
			next[actor] = c.Seq
			ready[h] = true
			order = append(order, c)
			delete(pending, h)
			progress = true
		}
	}
	// What is still pending waits for its dependencies.
	add := 0
	for _, c := range incoming {
		if !ready[c.Hash] {
			add += len(c.Raw)
		}
	}
	if len(pending) > maxHeldChanges || g.heldBytes+add > maxHeldBytes {
		return nil, fmt.Errorf("too many changes waiting for their dependencies (limit %d changes, %d bytes)", maxHeldChanges, maxHeldBytes)
	}
	for _, c := range incoming {
		if !ready[c.Hash] {
			g.held[c.Hash] = &heldChange{c: c, from: from}
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
	}
	return m.Encode(), nil
}

func depsReady(doc *automerge.Doc, c *amsync.Change, ready map[amsync.Hash]bool) bool {
	for _, d := range c.Deps {
		if !ready[d] && !has(doc, d) {
			return false
		}
	}
	return true
}

// applied records the seqs of the changes the core applied from a message
// admit returned.
func (g *syncGuard) applied(doc *automerge.Doc, coreData []byte) {
	m, err := amsync.ParseMessage(coreData)
	if err != nil {
		return
	}
	for _, raw := range m.Changes {
		c, err := amsync.ParseChange(raw)
		if err != nil {
			continue
		}
		if has(doc, c.Hash) {
			a := hex.EncodeToString(c.Actor)
			g.seqs[a] = max(g.seqs[a], c.Seq)
		} else {
			g.log.Error("the core did not apply a ready change", "hash", c.Hash.String())
		}
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
