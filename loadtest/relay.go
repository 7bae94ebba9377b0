package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Plait's histograms of its own part of the edit-to-peer latency the
// harness measures end to end: metricRelay from reading a peer's changes to
// releasing them, stored, to the other peers; metricSend from queuing
// messages for a connection to the end of their socket write.
const (
	metricRelay = "plait_relay_seconds"
	metricSend  = "plait_send_seconds"
)

// histogram is a Prometheus histogram's cumulative bucket counts by upper
// bound (le; +Inf included), summed over the nodes.
type histogram map[float64]float64

// serverHistogram reads the buckets of the unlabelled histogram name
// ("name_bucket{le=...} count" lines) from a Prometheus text endpoint.
func serverHistogram(ctx context.Context, metricsURL, name string) (histogram, error) {
	h := histogram{}
	prefix := name + `_bucket{le="`
	var bad error
	err := scanMetrics(ctx, metricsURL, func(line string) bool {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			return true
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok {
			bad = fmt.Errorf("malformed bucket line %q in %s", line, metricsURL)
			return false
		}
		bound, err := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
		if err != nil {
			bad = fmt.Errorf("malformed bucket bound %q in %s", le, metricsURL)
			return false
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(count), 64)
		if err != nil {
			bad = fmt.Errorf("malformed bucket count %q in %s", count, metricsURL)
			return false
		}
		h[bound] = v
		return true
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, err
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("no %s in %s: %w", name, metricsURL, errNoMetric)
	}
	return h, nil
}

// histogram returns the histogram name summed over every server of the
// target; a server without it is an error (wrapping errNoMetric).
func (t *target) histogram(ctx context.Context, name string) (histogram, error) {
	sum := histogram{}
	for _, u := range t.metricsURLs() {
		h, err := serverHistogram(ctx, u, name)
		if err != nil {
			return nil, err
		}
		for le, v := range h {
			sum[le] += v
		}
	}
	return sum, nil
}

// since returns the observations made between before and h (every bucket's
// count minus before's).
func (h histogram) since(before histogram) histogram {
	d := histogram{}
	for le, v := range h {
		d[le] = v - before[le]
	}
	return d
}

// count is the number of observations (the +Inf bucket).
func (h histogram) count() float64 { return h[math.Inf(1)] }

// quantile estimates the q-quantile as Prometheus's histogram_quantile
// does: linear within the bucket that holds it, from 0 for the first; in
// the +Inf bucket it is the largest finite bound. NaN without observations.
func (h histogram) quantile(q float64) float64 {
	total := h.count()
	if total <= 0 {
		return math.NaN()
	}
	bounds := make([]float64, 0, len(h))
	for le := range h {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	rank := q * total
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		c := h[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return lower
			}
			if c == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(c-below)
		}
		lower, below = le, c
	}
	return lower
}

// NodeLatency is one of a node's latency histograms over the measured
// phase, summed over the nodes: plait_relay_seconds (one observation per
// store write of peers' changes) or plait_send_seconds (one per run of a
// connection's writer).
type NodeLatency struct {
	P50Ms float64 `json:"p50"`
	P99Ms float64 `json:"p99"`
	Count int64   `json:"count"`
}

// sampled is a histogram read at both ends of the measured phase.
type sampled struct {
	start, end       histogram
	startErr, endErr error
}

// nodeLatency returns the quantiles of the observations h made in the
// measured phase, or nil and why there are none.
func nodeLatency(h sampled, measured bool) (*NodeLatency, string) {
	switch {
	case !measured:
		return nil, "no measured phase"
	case h.startErr != nil:
		return nil, h.startErr.Error()
	case h.endErr != nil:
		return nil, h.endErr.Error()
	}
	d := h.end.since(h.start)
	if d.count() <= 0 {
		return nil, "nothing observed in the measured phase"
	}
	ms := func(v float64) float64 { return math.Round(v*1e6) / 1e3 }
	return &NodeLatency{P50Ms: ms(d.quantile(0.5)), P99Ms: ms(d.quantile(0.99)), Count: int64(d.count())}, ""
}

// latencyStats fills the node's latency figures from the windows read at
// the start and the end of the measured phase.
func (s *ServerStats) latencyStats(start, end window, measured bool) {
	s.Relay, s.RelayUnavailable = nodeLatency(sampled{start.relay, end.relay, start.relayErr, end.relayErr}, measured)
	s.Send, s.SendUnavailable = nodeLatency(sampled{start.send, end.send, start.sendErr, end.sendErr}, measured)
}

// latencyLine formats one node latency for the summaries; what says what
// one observation is.
func latencyLine(l *NodeLatency, unavailable, what string) string {
	if l == nil {
		return "n/a (" + unavailable + ")"
	}
	return fmt.Sprintf("p50 %.2fms p99 %.2fms (%d %s)", l.P50Ms, l.P99Ms, l.Count, what)
}

// relayLine and sendLine format the node's own latencies.
func (s ServerStats) relayLine() string {
	return latencyLine(s.Relay, s.RelayUnavailable, "store writes; read -> stored -> released")
}

func (s ServerStats) sendLine() string {
	return latencyLine(s.Send, s.SendUnavailable, "socket writes; queued -> written")
}
