package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The relay histogram: read from every node, summed, windowed, and its
// quantiles interpolated as Prometheus does.
func TestRelayHistogram(t *testing.T) {
	page := func(b1, b2, inf int) string {
		return fmt.Sprintf("# TYPE plait_relay_seconds histogram\n"+
			"plait_relay_seconds_bucket{le=\"0.001\"} %d\nplait_relay_seconds_bucket{le=\"0.002\"} %d\n"+
			"plait_relay_seconds_bucket{le=\"+Inf\"} %d\nplait_relay_seconds_sum 1\nplait_relay_seconds_count %d\n"+
			"plait_store_seconds_bucket{op=\"append\",le=\"0.001\"} 7\n", b1, b2, inf, inf)
	}
	bodies := map[string]string{"/a": page(10, 20, 20), "/b": page(0, 0, 0)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, bodies[r.URL.Path])
	}))
	defer srv.Close()
	ctx := context.Background()
	tg := &target{metrics: srv.URL + "/a," + srv.URL + "/b"}
	start, err := tg.histogram(ctx, metricRelay)
	if err != nil || start.count() != 20 || start[0.001] != 10 || len(start) != 3 {
		t.Fatalf("start %v %v", start, err)
	}
	// Over the window: 100 more on a, 100 on b, all in (0.001, 0.002].
	bodies["/a"], bodies["/b"] = page(10, 120, 120), page(0, 100, 100)
	end, err := tg.histogram(ctx, metricRelay)
	if err != nil {
		t.Fatal(err)
	}
	var s ServerStats
	s.latencyStats(window{relay: start, send: start}, window{relay: end, send: start}, true)
	if s.Relay == nil || s.Relay.Count != 200 || s.Relay.P50Ms != 1.5 || s.Relay.P99Ms != 1.99 {
		t.Fatalf("relay %+v (%s)", s.Relay, s.RelayUnavailable)
	}
	if line := s.relayLine(); !strings.Contains(line, "p99 1.99ms (200 store writes") {
		t.Fatalf("line %q", line)
	}
	// Nothing sent in the window (the same histogram at both ends).
	if s.Send != nil || !strings.Contains(s.sendLine(), "nothing observed") {
		t.Fatalf("empty send window gave %+v %q", s.Send, s.sendLine())
	}

	// Observations past the last finite bound: the quantile is that bound.
	h := histogram{0.001: 1, 0.002: 1, math.Inf(1): 100}
	if q := h.quantile(0.99); q != 0.002 {
		t.Fatalf("quantile in +Inf = %v", q)
	}
	if q := (histogram{math.Inf(1): 0}).quantile(0.5); !math.IsNaN(q) {
		t.Fatalf("empty quantile = %v", q)
	}

	// A server without the histogram (the official sync server): n/a.
	bodies["/b"] = "process_cpu_seconds_total 1\n"
	if _, err := tg.histogram(ctx, metricRelay); !errors.Is(err, errNoMetric) {
		t.Fatalf("missing histogram: %v", err)
	}
	var none ServerStats
	none.latencyStats(window{relayErr: fmt.Errorf("x: %w", errNoMetric), sendErr: errNoMetric}, window{}, true)
	if none.Relay != nil || none.Send != nil || !strings.HasPrefix(none.relayLine(), "n/a") || !strings.HasPrefix(none.sendLine(), "n/a") {
		t.Fatalf("unreported latencies gave %+v %q %q", none, none.relayLine(), none.sendLine())
	}
	var unmeasured ServerStats
	unmeasured.latencyStats(window{relay: start}, window{relay: end}, false)
	if unmeasured.Relay != nil || !strings.Contains(unmeasured.relayLine(), "no measured phase") {
		t.Fatalf("no measured phase gave %+v", unmeasured)
	}
}
