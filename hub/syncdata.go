package hub

import (
	"encoding/hex"
	"fmt"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
)

// maxQueuedChanges bounds the changes a document holds whose dependencies
// have not arrived yet.
const maxQueuedChanges = 4096

// syncGuard keeps hostile sync data away from the Automerge core, where a
// panic aborts the whole node. The Rust core 0.5 trusts that each actor's
// changes have consecutive sequence numbers (a gap makes a later
// GenerateMessage panic), so the guard tracks the highest sequence number
// per actor and refuses changes that would break that rule, besides
// refusing anything that does not parse. One guard belongs to one document
// owner goroutine.
type syncGuard struct {
	seqs   map[string]uint64              // actor (hex) -> highest seq applied
	queued map[amsync.Hash]*amsync.Change // received, waiting for dependencies
}

// newSyncGuard indexes the changes of doc (once, when a document is loaded).
func newSyncGuard(doc *automerge.Doc) (*syncGuard, error) {
	g := &syncGuard{seqs: make(map[string]uint64), queued: make(map[amsync.Hash]*amsync.Change)}
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

// check validates a client's sync message against doc and returns its
// changes that doc does not have yet.
func (g *syncGuard) check(doc *automerge.Doc, data []byte) ([]*amsync.Change, error) {
	m, err := amsync.ParseMessage(data)
	if err != nil {
		return nil, err
	}
	if m.Type != amsync.MessageTypeSync {
		return nil, fmt.Errorf("sync message type 0x%02x is not supported (this server speaks 0x%02x)", m.Type, amsync.MessageTypeSync)
	}
	var fresh []*amsync.Change
	var next map[string]uint64 // highest seq per actor including this message so far
	for i, raw := range m.Changes {
		c, err := amsync.ParseChange(raw)
		if err != nil {
			return nil, fmt.Errorf("change %d: %w", i, err)
		}
		if _, ok := g.queued[c.Hash]; ok {
			continue
		}
		if _, err := doc.Change(automerge.ChangeHash(c.Hash)); err == nil {
			continue // already applied: a duplicate is harmless
		}
		actor := hex.EncodeToString(c.Actor)
		last, ok := next[actor]
		if !ok {
			last = g.highest(actor)
		}
		if c.Seq != last+1 {
			return nil, fmt.Errorf("change %d: actor %s seq %d does not follow its seq %d", i, actor, c.Seq, last)
		}
		if next == nil {
			next = make(map[string]uint64)
		}
		next[actor] = c.Seq
		fresh = append(fresh, c)
	}
	if len(g.queued)+len(fresh) > maxQueuedChanges {
		return nil, fmt.Errorf("too many changes waiting for their dependencies (limit %d)", maxQueuedChanges)
	}
	return fresh, nil
}

// highest is the highest seq of actor, applied or queued.
func (g *syncGuard) highest(actor string) uint64 {
	h := g.seqs[actor]
	for _, c := range g.queued {
		if hex.EncodeToString(c.Actor) == actor {
			h = max(h, c.Seq)
		}
	}
	return h
}

// received records what the core did with changes check returned: applied
// ones advance their actor's seq, the others wait for their dependencies.
// Queued changes applied by this message are settled too.
func (g *syncGuard) received(doc *automerge.Doc, fresh []*amsync.Change) {
	for _, c := range fresh {
		g.queued[c.Hash] = c
	}
	for h, c := range g.queued {
		if _, err := doc.Change(automerge.ChangeHash(h)); err == nil {
			a := hex.EncodeToString(c.Actor)
			g.seqs[a] = max(g.seqs[a], c.Seq)
			delete(g.queued, h)
		}
	}
}
