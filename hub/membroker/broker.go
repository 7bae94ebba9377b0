// Package membroker is the in-memory hub.Broker: the default of a single
// node, and a way to run several hubs in one process in tests. Brokers made
// from one Bus are the nodes of one cluster.
//
// A document's stream (offset, epoch, log) lives while some broker
// subscribes to it; the last Unsubscribe drops it, so the memory a bus
// holds follows the open documents, not every document ever edited. A
// stream made again gets a new epoch.
//
// Concurrency: all methods are safe for concurrent use. Publications are
// delivered synchronously, under the bus lock, to each subscribed broker's
// handler (which must not block): so every subscriber sees one document's
// publications in offset order and none is ever lost.
package membroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

var _ hub.Broker = (*Broker)(nil)

// DefaultHistorySize is how many publications a Bus keeps per document when
// NewBus is given 0.
const DefaultHistorySize = 1000

// Bus connects the Brokers of one cluster. The zero value is not usable.
type Bus struct {
	maxHist int

	mu      sync.Mutex
	streams map[protocol.DocumentID]*stream
	brokers map[*Broker]struct{}
}

type stream struct {
	epoch  string
	offset uint64
	tag    string            // of the publication at offset
	log    []hub.Publication // the last maxHist publications, ascending
}

// NewBus returns a bus whose logs keep the last historySize publications of
// each document (DefaultHistorySize if 0).
func NewBus(historySize int) *Bus {
	if historySize <= 0 {
		historySize = DefaultHistorySize
	}
	return &Bus{
		maxHist: historySize,
		streams: make(map[protocol.DocumentID]*stream),
		brokers: make(map[*Broker]struct{}),
	}
}

// stream returns id's stream, making it (with a new epoch) if needed. The
// caller holds bus.mu.
func (bus *Bus) stream(id protocol.DocumentID) *stream {
	st := bus.streams[id]
	if st == nil {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		st = &stream{epoch: hex.EncodeToString(b)}
		bus.streams[id] = st
	}
	return st
}

func newTag() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Broker is one node's connection to a Bus.
type Broker struct {
	bus *Bus

	// Guarded by bus.mu.
	h      hub.BrokerHandler
	subs   map[protocol.DocumentID]int
	closed bool
}

// New returns a broker on bus; a nil bus gives the broker a bus of its own
// (a single node).
func New(bus *Bus) *Broker {
	if bus == nil {
		bus = NewBus(0)
	}
	return &Broker{bus: bus, subs: make(map[protocol.DocumentID]int)}
}

func (b *Broker) check(ctx context.Context) error {
	if b.closed {
		return hub.ErrBrokerClosed
	}
	return ctx.Err()
}

// Start sets the handler that receives deliveries.
func (b *Broker) Start(h hub.BrokerHandler) error {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	if b.closed {
		return hub.ErrBrokerClosed
	}
	if b.h != nil {
		return fmt.Errorf("membroker: Start called twice")
	}
	b.h = h
	b.bus.brokers[b] = struct{}{}
	return nil
}

// Subscribe counts a subscription to id and returns the stream position.
func (b *Broker) Subscribe(ctx context.Context, id protocol.DocumentID) (hub.StreamPosition, error) {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	if err := b.check(ctx); err != nil {
		return hub.StreamPosition{}, fmt.Errorf("failed to subscribe: %w", err)
	}
	b.subs[id]++
	st := b.bus.stream(id)
	return hub.StreamPosition{Epoch: st.epoch, Offset: st.offset, Tag: st.tag}, nil
}

// Unsubscribe drops one subscription to id.
func (b *Broker) Unsubscribe(ctx context.Context, id protocol.DocumentID) error {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("failed to unsubscribe: %w", err)
	}
	if b.subs[id] > 1 {
		b.subs[id]--
		return nil
	}
	delete(b.subs, id)
	for o := range b.bus.brokers {
		if o.subs[id] > 0 {
			return nil
		}
	}
	delete(b.bus.streams, id) // nobody has it open: drop its log
	return nil
}

// Publish logs p (if it is PubChanges) and delivers it to every broker
// subscribed to id, this one included.
func (b *Broker) Publish(ctx context.Context, id protocol.DocumentID, p hub.Publication) (hub.StreamPosition, error) {
	bus := b.bus
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if err := b.check(ctx); err != nil {
		return hub.StreamPosition{}, fmt.Errorf("failed to publish: %w", err)
	}
	p.Data = append([]byte(nil), p.Data...)
	p.Pos = hub.StreamPosition{}
	if p.Kind == hub.PubDeleted {
		delete(bus.streams, id) // the next Position or publication starts a new epoch
		p.Data = nil
	}
	if p.Kind == hub.PubChanges {
		st := bus.stream(id)
		st.offset++
		p.Prev = st.tag
		st.tag = newTag()
		p.Pos = hub.StreamPosition{Epoch: st.epoch, Offset: st.offset, Tag: st.tag}
		st.log = append(st.log, p)
		if len(st.log) > bus.maxHist {
			st.log = append(st.log[:0], st.log[len(st.log)-bus.maxHist:]...)
		}
	}
	for o := range bus.brokers {
		if o.subs[id] > 0 {
			q := p
			q.Data = append([]byte(nil), p.Data...)
			o.h.HandlePublication(id, q)
		}
	}
	return p.Pos, nil
}

// Position returns the stream position of id.
func (b *Broker) Position(ctx context.Context, id protocol.DocumentID) (hub.StreamPosition, error) {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	if err := b.check(ctx); err != nil {
		return hub.StreamPosition{}, fmt.Errorf("failed to read the stream position: %w", err)
	}
	st := b.bus.stream(id)
	return hub.StreamPosition{Epoch: st.epoch, Offset: st.offset, Tag: st.tag}, nil
}

// History returns the logged publications of id after since.
func (b *Broker) History(ctx context.Context, id protocol.DocumentID, since hub.StreamPosition) ([]hub.Publication, error) {
	bus := b.bus
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("failed to read history: %w", err)
	}
	st := bus.streams[id]
	if st == nil {
		if since.Offset > 0 || since.Epoch != "" {
			return nil, hub.ErrHistoryLost
		}
		return nil, nil
	}
	if since.Epoch != "" && since.Epoch != st.epoch {
		return nil, hub.ErrHistoryLost
	}
	if since.Offset > st.offset {
		return nil, hub.ErrHistoryLost // a position this stream never reached
	}
	if since.Offset == st.offset {
		if since.Offset > 0 && since.Tag != st.tag {
			return nil, hub.ErrHistoryLost // the same offset, another publication
		}
		return nil, nil
	}
	if len(st.log) == 0 || st.log[0].Pos.Offset > since.Offset+1 {
		return nil, hub.ErrHistoryLost
	}
	if i := int(since.Offset + 1 - st.log[0].Pos.Offset); since.Offset > 0 && st.log[i].Prev != since.Tag {
		return nil, hub.ErrHistoryLost // not the stream since.Tag was part of
	}
	var out []hub.Publication
	for _, p := range st.log {
		if p.Pos.Offset > since.Offset {
			p.Data = append([]byte(nil), p.Data...)
			out = append(out, p)
		}
	}
	return out, nil
}

// Close detaches the broker from its bus; later calls fail.
func (b *Broker) Close() error {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	delete(b.bus.brokers, b)
	clear(b.subs)
	return nil
}
