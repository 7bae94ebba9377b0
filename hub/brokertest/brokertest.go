// Package brokertest is the hub.Broker conformance suite: every Broker
// implementation runs RunBrokerTests.
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

// Cluster returns a function that makes brokers of one cluster (they see
// each other's publications). Each broker's logs keep at least historySize
// and at most about twice historySize publications per document (a capped
// log may trim approximately). The suite starts and closes every broker.
type Cluster func(t *testing.T, historySize int) (newBroker func() hub.Broker)

// Recorder is a hub.BrokerHandler that records what it receives.
type Recorder struct {
	mu     sync.Mutex
	pubs   map[protocol.DocumentID][]hub.Publication
	resubs map[protocol.DocumentID]int
	notify chan struct{}
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{pubs: map[protocol.DocumentID][]hub.Publication{}, resubs: map[protocol.DocumentID]int{}, notify: make(chan struct{}, 1)}
}

// HandlePublication records p.
func (r *Recorder) HandlePublication(id protocol.DocumentID, p hub.Publication) {
	r.mu.Lock()
	r.pubs[id] = append(r.pubs[id], p)
	r.mu.Unlock()
	r.poke()
}

// HandleResubscribed counts the call.
func (r *Recorder) HandleResubscribed(id protocol.DocumentID) {
	r.mu.Lock()
	r.resubs[id]++
	r.mu.Unlock()
	r.poke()
}

func (r *Recorder) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Pubs returns a copy of what was received for id.
func (r *Recorder) Pubs(id protocol.DocumentID) []hub.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hub.Publication(nil), r.pubs[id]...)
}

// Resubscribed returns how often HandleResubscribed(id) was called.
func (r *Recorder) Resubscribed(id protocol.DocumentID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resubs[id]
}

// WaitFor waits until cond holds (checked after every delivery) or timeout.
func (r *Recorder) WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-r.notify:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			return cond()
		}
	}
	return true
}

// RunBrokerTests runs the conformance suite.
func RunBrokerTests(t *testing.T, cluster Cluster) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, nb func() (hub.Broker, *Recorder))
		hist int
	}{
		{"Publish/DeliveredToSubscribersAndSelf", testDelivered, 100},
		{"Publish/OffsetsPerDocument", testOffsetsPerDoc, 100},
		{"Publish/BinaryExact", testBinary, 100},
		{"Subscribe/OnlySubscribedDocs", testOnlySubscribed, 100},
		{"Subscribe/Counted", testCounted, 100},
		{"Subscribe/ReturnsCurrentPosition", testSubscribePosition, 100},
		{"Ephemeral/DeliveredNotLogged", testEphemeral, 100},
		{"Deleted/DeliveredAndLogRemoved", testDeleted, 100},
		{"History/AfterPosition", testHistory, 100},
		{"History/OtherEpochIsLost", testHistoryEpoch, 100},
		{"History/TrimmedIsLost", testHistoryTrimmed, 5},
		{"Concurrency/PublishersNothingLost", testConcurrent, 1000},
		{"Context/CancelledFails", testCancelled, 100},
		{"Close/CallsAfterCloseFail", testClosed, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mk := cluster(t, tc.hist)
			tc.fn(t, func() (hub.Broker, *Recorder) {
				b := mk()
				r := NewRecorder()
				if err := b.Start(r); err != nil {
					t.Fatalf("Start: %v", err)
				}
				t.Cleanup(func() { _ = b.Close() })
				return b, r
			})
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// NewDocID returns a random valid document id.
func NewDocID() protocol.DocumentID { return protocol.NewDocumentID() }

func mustSub(t *testing.T, b hub.Broker, id protocol.DocumentID) hub.StreamPosition {
	t.Helper()
	pos, err := b.Subscribe(ctx(t), id)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	return pos
}

func mustPub(t *testing.T, b hub.Broker, id protocol.DocumentID, kind hub.PublicationKind, data string) hub.StreamPosition {
	t.Helper()
	pos, err := b.Publish(ctx(t), id, hub.Publication{Kind: kind, Origin: "node-test", Data: []byte(data)})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return pos
}

func waitN(t *testing.T, r *Recorder, id protocol.DocumentID, n int) []hub.Publication {
	t.Helper()
	if !r.WaitFor(10*time.Second, func() bool { return len(r.Pubs(id)) >= n }) {
		t.Fatalf("received %d publications for %s, want %d", len(r.Pubs(id)), id, n)
	}
	return r.Pubs(id)
}

func testDelivered(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, ra := nb()
	b, rb := nb()
	id := NewDocID()
	p0 := mustSub(t, a, id)
	mustSub(t, b, id)
	if p0.Offset != 0 {
		t.Fatalf("new document's stream at offset %d, want 0", p0.Offset)
	}
	pos1 := mustPub(t, a, id, hub.PubChanges, "one")
	pos2 := mustPub(t, b, id, hub.PubChanges, "two")
	if pos1.Offset != 1 || pos2.Offset != 2 || pos1.Epoch == "" || pos1.Epoch != pos2.Epoch {
		t.Fatalf("positions %+v %+v, want offsets 1, 2 in one non-empty epoch", pos1, pos2)
	}
	for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
		got := waitN(t, r, id, 2)
		if len(got) != 2 || string(got[0].Data) != "one" || string(got[1].Data) != "two" ||
			got[0].Pos != pos1 || got[1].Pos != pos2 || got[0].Kind != hub.PubChanges || got[0].Origin != "node-test" {
			t.Fatalf("%s received %+v", name, got)
		}
		if pos1.Tag == "" || pos2.Tag == pos1.Tag || got[0].Prev != "" || got[1].Prev != pos1.Tag {
			t.Fatalf("%s: tags %q, %q and prevs %q, %q: each publication names the one before", name, pos1.Tag, pos2.Tag, got[0].Prev, got[1].Prev)
		}
	}
}

func testOffsetsPerDoc(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	x, y := NewDocID(), NewDocID()
	mustPub(t, a, x, hub.PubChanges, "x1")
	mustPub(t, a, x, hub.PubChanges, "x2")
	if p := mustPub(t, a, y, hub.PubChanges, "y1"); p.Offset != 1 {
		t.Fatalf("first publication of another doc at offset %d", p.Offset)
	}
	if p := mustPub(t, a, x, hub.PubChanges, "x3"); p.Offset != 3 {
		t.Fatalf("third publication at offset %d", p.Offset)
	}
}

func testBinary(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, ra := nb()
	id := NewDocID()
	mustSub(t, a, id)
	all := make([]byte, 256*4)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	for _, d := range [][]byte{all, big, {}, []byte("a:b:c:\x00")} {
		if _, err := a.Publish(ctx(t), id, hub.Publication{Kind: hub.PubChanges, Origin: "o:1", Data: d}); err != nil {
			t.Fatal(err)
		}
	}
	got := waitN(t, ra, id, 4)
	for i, d := range [][]byte{all, big, {}, []byte("a:b:c:\x00")} {
		if !bytes.Equal(got[i].Data, d) || got[i].Origin != "o:1" {
			t.Fatalf("publication %d: %d bytes, origin %q; want %d bytes", i, len(got[i].Data), got[i].Origin, len(d))
		}
	}
	h, err := a.History(ctx(t), id, hub.StreamPosition{Epoch: got[0].Pos.Epoch})
	if err != nil || len(h) != 4 || !bytes.Equal(h[1].Data, big) {
		t.Fatalf("History: %d publications, %v", len(h), err)
	}
}

func testOnlySubscribed(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	b, rb := nb()
	x, y := NewDocID(), NewDocID()
	mustSub(t, b, y)
	mustPub(t, a, x, hub.PubChanges, "x")
	mustPub(t, a, y, hub.PubChanges, "y")
	waitN(t, rb, y, 1)
	if got := rb.Pubs(x); len(got) != 0 {
		t.Fatalf("received %d publications of a document not subscribed", len(got))
	}
	if err := b.Unsubscribe(ctx(t), y); err != nil {
		t.Fatal(err)
	}
	mustPub(t, a, y, hub.PubChanges, "y2")
	mustSub(t, b, x)
	mustPub(t, a, x, hub.PubChanges, "x2")
	waitN(t, rb, x, 1)
	if got := rb.Pubs(y); len(got) != 1 {
		t.Fatalf("received %d publications after Unsubscribe, want only the first", len(got))
	}
}

func testCounted(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, ra := nb()
	id := NewDocID()
	mustSub(t, a, id)
	mustSub(t, a, id)
	if err := a.Unsubscribe(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	mustPub(t, a, id, hub.PubChanges, "still")
	waitN(t, ra, id, 1)
}

func testSubscribePosition(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	b, rb := nb()
	id := NewDocID()
	for i := 0; i < 3; i++ {
		mustPub(t, a, id, hub.PubChanges, fmt.Sprint(i))
	}
	pos := mustSub(t, b, id)
	if pos.Offset != 3 {
		t.Fatalf("Subscribe after 3 publications returned offset %d", pos.Offset)
	}
	if p, err := a.Position(ctx(t), id); err != nil || p != pos {
		t.Fatalf("Position = %+v, %v; want %+v", p, err, pos)
	}
	p4 := mustPub(t, a, id, hub.PubChanges, "3")
	got := waitN(t, rb, id, 1)
	if got[0].Pos != p4 || p4.Offset != 4 || p4.Epoch != pos.Epoch {
		t.Fatalf("first delivery %+v, want %+v in epoch %q", got[0].Pos, p4, pos.Epoch)
	}
}

func testEphemeral(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	b, rb := nb()
	id := NewDocID()
	mustSub(t, b, id)
	mustPub(t, a, id, hub.PubChanges, "c1")
	if pos := mustPub(t, a, id, hub.PubEphemeral, "e1"); pos.Offset != 0 {
		t.Fatalf("ephemeral publication got offset %d", pos.Offset)
	}
	p2 := mustPub(t, a, id, hub.PubChanges, "c2")
	if p2.Offset != 2 {
		t.Fatalf("an ephemeral publication moved the offset: %d", p2.Offset)
	}
	got := waitN(t, rb, id, 3)
	if got[1].Kind != hub.PubEphemeral || string(got[1].Data) != "e1" || got[1].Pos.Offset != 0 {
		t.Fatalf("ephemeral delivery %+v", got[1])
	}
	h, err := a.History(ctx(t), id, hub.StreamPosition{Epoch: p2.Epoch})
	if err != nil || len(h) != 2 || string(h[0].Data) != "c1" || string(h[1].Data) != "c2" {
		t.Fatalf("History %+v, %v: want c1, c2 only", h, err)
	}
}

// testDeleted: a PubDeleted notice reaches the subscribers, and the
// document's log is gone: History from any earlier position is lost and
// the next publication starts a new epoch at offset 1.
func testDeleted(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	b, rb := nb()
	id, other := NewDocID(), NewDocID()
	mustSub(t, b, id)
	mustPub(t, a, id, hub.PubChanges, "c1")
	p2 := mustPub(t, a, id, hub.PubChanges, "c2")
	o1 := mustPub(t, a, other, hub.PubChanges, "o1")
	if _, err := a.Publish(ctx(t), id, hub.Publication{Kind: hub.PubDeleted, Origin: "node-test"}); err != nil {
		t.Fatalf("Publish deleted: %v", err)
	}
	got := waitN(t, rb, id, 3)
	if got[2].Kind != hub.PubDeleted || got[2].Origin != "node-test" || got[2].Pos.Offset != 0 || len(got[2].Data) != 0 {
		t.Fatalf("deleted delivery %+v", got[2])
	}
	if h, err := b.History(ctx(t), id, hub.StreamPosition{Epoch: p2.Epoch}); !errors.Is(err, hub.ErrHistoryLost) {
		t.Fatalf("History of a deleted stream: %+v, %v; want ErrHistoryLost", h, err)
	}
	p3 := mustPub(t, a, id, hub.PubChanges, "c3")
	if p3.Offset != 1 || p3.Epoch == p2.Epoch {
		t.Fatalf("first publication after the delete at %+v, want offset 1 in a new epoch (was %+v)", p3, p2)
	}
	if h, err := b.History(ctx(t), other, hub.StreamPosition{Epoch: o1.Epoch}); err != nil || len(h) != 1 || string(h[0].Data) != "o1" {
		t.Fatalf("another document's log: %+v, %v", h, err)
	}
}

func testHistory(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	b, _ := nb()
	id := NewDocID()
	var pos []hub.StreamPosition
	for i := 1; i <= 5; i++ {
		pos = append(pos, mustPub(t, a, id, hub.PubChanges, fmt.Sprint(i)))
	}
	last := pos[4]
	h, err := b.History(ctx(t), id, pos[1])
	if err != nil || len(h) != 3 {
		t.Fatalf("History after 2: %d, %v", len(h), err)
	}
	for i, p := range h {
		if p.Pos != pos[i+2] || p.Prev != pos[i+1].Tag || string(p.Data) != fmt.Sprint(i+3) || p.Kind != hub.PubChanges || p.Origin != "node-test" {
			t.Fatalf("History[%d] = %+v, want position %+v after tag %q", i, p, pos[i+2], pos[i+1].Tag)
		}
	}
	if h, err := b.History(ctx(t), id, hub.StreamPosition{Epoch: last.Epoch}); err != nil || len(h) != 5 || h[0].Prev != "" {
		t.Fatalf("History from the start: %d, %v", len(h), err)
	}
	// The same offset with another tag: the stream was rolled back and
	// written again since that position (a failover).
	if _, err := b.History(ctx(t), id, hub.StreamPosition{Epoch: last.Epoch, Offset: 2, Tag: "not-" + pos[1].Tag}); !errors.Is(err, hub.ErrHistoryLost) {
		t.Fatalf("History after a position of another tag: %v, want ErrHistoryLost", err)
	}
	if h, err := b.History(ctx(t), id, last); err != nil || len(h) != 0 {
		t.Fatalf("History at the head: %d, %v", len(h), err)
	}
	if _, err := b.History(ctx(t), id, hub.StreamPosition{Epoch: last.Epoch, Offset: last.Offset, Tag: "not-" + last.Tag}); !errors.Is(err, hub.ErrHistoryLost) {
		t.Fatalf("History at the head's offset with another tag: %v, want ErrHistoryLost", err)
	}
	if h, err := b.History(ctx(t), NewDocID(), hub.StreamPosition{}); err != nil || len(h) != 0 {
		t.Fatalf("History of an empty stream: %d, %v", len(h), err)
	}
	if _, err := b.History(ctx(t), id, hub.StreamPosition{Epoch: last.Epoch, Offset: 99}); !errors.Is(err, hub.ErrHistoryLost) {
		t.Fatalf("History after a position the stream never reached: %v, want ErrHistoryLost", err)
	}
}

func testHistoryEpoch(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	id := NewDocID()
	mustPub(t, a, id, hub.PubChanges, "1")
	if _, err := a.History(ctx(t), id, hub.StreamPosition{Epoch: "another-epoch", Offset: 0}); !errors.Is(err, hub.ErrHistoryLost) {
		t.Fatalf("History in another epoch: %v, want ErrHistoryLost", err)
	}
}

func testHistoryTrimmed(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	id := NewDocID()
	var pos []hub.StreamPosition
	for i := 1; i <= 40; i++ {
		pos = append(pos, mustPub(t, a, id, hub.PubChanges, fmt.Sprint(i)))
	}
	if _, err := a.History(ctx(t), id, pos[0]); !errors.Is(err, hub.ErrHistoryLost) {
		t.Fatalf("History from offset 1 of a log capped at 5 (40 published): %v, want ErrHistoryLost", err)
	}
	h, err := a.History(ctx(t), id, pos[36])
	if err != nil || len(h) != 3 || string(h[2].Data) != "40" {
		t.Fatalf("History of the last 3: %d, %v", len(h), err)
	}
}

func testConcurrent(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, ra := nb()
	b, rb := nb()
	id := NewDocID()
	mustSub(t, a, id)
	mustSub(t, b, id)
	const writers, each = 4, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			br := a
			if w%2 == 1 {
				br = b
			}
			for i := 0; i < each; i++ {
				if _, err := br.Publish(ctx(t), id, hub.Publication{Kind: hub.PubChanges, Origin: "w", Data: []byte(fmt.Sprintf("%d-%d", w, i))}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
		got := waitN(t, r, id, writers*each)
		seen := map[string]bool{}
		for i, p := range got {
			if p.Pos.Offset != uint64(i+1) {
				t.Fatalf("%s: delivery %d has offset %d (in order, none lost on a healthy broker)", name, i, p.Pos.Offset)
			}
			seen[string(p.Data)] = true
		}
		if len(seen) != writers*each {
			t.Fatalf("%s: %d distinct publications, want %d", name, len(seen), writers*each)
		}
	}
}

func testCancelled(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	c, cancel := context.WithCancel(context.Background())
	cancel()
	id := NewDocID()
	if _, err := a.Publish(c, id, hub.Publication{Kind: hub.PubChanges, Data: []byte("x")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled context: %v", err)
	}
	if _, err := a.Subscribe(c, id); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe with a cancelled context: %v", err)
	}
	if h, err := a.History(ctx(t), id, hub.StreamPosition{}); err != nil || len(h) != 0 {
		t.Fatalf("a cancelled Publish left %d publications (%v)", len(h), err)
	}
}

func testClosed(t *testing.T, nb func() (hub.Broker, *Recorder)) {
	a, _ := nb()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx(t), NewDocID(), hub.Publication{Kind: hub.PubChanges}); err == nil {
		t.Fatal("Publish after Close succeeded")
	}
	if _, err := a.Subscribe(ctx(t), NewDocID()); err == nil {
		t.Fatal("Subscribe after Close succeeded")
	}
}
