package hub_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// TestMessageRateLimit: a connection may send MessageBurst messages at
// once; the next one is answered with an error and close 4430, counted.
// Another connection is unaffected.
func TestMessageRateLimit(t *testing.T) {
	m := hub.NewMetrics(nil)
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.MessageRate, o.MessageBurst, o.Metrics = 0.5, 10, m })
	other := connect(t, h, "other", "")
	flood := connect(t, h, "flood", "")
	for range 9 {
		flood.send(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: "flood", TargetID: flood.hub, DocumentID: protocol.NewDocumentID()})
	}
	flood.alive() // the 10th message: within the burst
	flood.send(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: "flood", TargetID: flood.hub, DocumentID: protocol.NewDocumentID()})
	select {
	case <-flood.errc:
	case <-time.After(2 * time.Second):
		t.Fatal("flooding connection not closed")
	}
	if code, _ := flood.c.closeCode(); code != protocol.CloseRateLimited {
		t.Fatalf("closed with %v, want %v", code, protocol.CloseRateLimited)
	}
	if e := flood.recv(time.Second); e == nil || e.Type != protocol.TypeError || !strings.Contains(e.ErrorMessage, "rate limited") {
		t.Fatalf("expected an error message before the close, got %+v", e)
	}
	if got := testutil.ToFloat64(m.LimitHits.WithLabelValues(hub.LimitMessages)); got != 1 {
		t.Fatalf("plait_limit_hits_total{limit=messages} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Disconnects.WithLabelValues(protocol.CloseRateLimited.String())); got != 1 {
		t.Fatalf("plait_disconnects_total{code=rate limited} = %v, want 1", got)
	}
	other.alive()
}

// TestMessageRateRefills: a client that keeps to the rate is never cut off,
// though it sends far more than the burst; a negative rate is no limit.
func TestMessageRateRefills(t *testing.T) {
	h := newHub(t, memstore.New(), func(o *hub.Options) { o.MessageRate, o.MessageBurst = 50, 2 })
	cl := connect(t, h, "paced", "")
	for range 10 {
		cl.alive() // one message
		time.Sleep(40 * time.Millisecond)
	}

	h = newHub(t, memstore.New(), func(o *hub.Options) { o.MessageRate = -1 })
	cl = connect(t, h, "unlimited", "")
	id := protocol.NewDocumentID()
	for range 2000 {
		cl.send(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: "unlimited", TargetID: cl.hub, DocumentID: id})
	}
	cl.alive()
}
