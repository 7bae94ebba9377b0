package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// metricRelay is Plait's histogram of the time from reading a peer's
// changes to releasing them to the other peers, stored: the node's own
// share of the edit-to-peer latency the harness measures end to end.
const metricRelay = "plait_relay_seconds"

// histogram is a Prometheus histogram's cumulative bucket counts by upper
// bound (le; +Inf included), summed over the nodes.
type histogram map[float64]float64

// serverHistogram reads the buckets of the unlabelled histogram name
// ("name_bucket{le=...} count" lines) from a Prometheus text endpoint.
func serverHistogram(ctx context.Context, metricsURL, name string) (histogram, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to read metrics: %w", err)
	}
	defer resp.Body.Close()
	h := histogram{}
	prefix := name + `_bucket{le="`
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("malformed bucket line %q in %s", sc.Text(), metricsURL)
		}
		bound, err := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
		if err != nil {
			return nil, fmt.Errorf("malformed bucket bound %q in %s", le, metricsURL)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(count), 64)
		if err != nil {
			return nil, fmt.Errorf("malformed bucket count %q in %s", count, metricsURL)
		}
		h[bound] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read metrics: %w", err)
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

// RelayStats is the servers' plait_relay_seconds over the measured phase:
// the node's part of the edit-to-peer latency (read, applied, stored,
// released), one observation per store write of peers' changes.
type RelayStats struct {
	P50Ms  float64 `json:"p50"`
	P99Ms  float64 `json:"p99"`
	Writes int64   `json:"writes"`
}

// relayStats fills s.Relay from the histograms read at the start and the
// end of the measured phase; RelayUnavailable says why it is null.
func (s *ServerStats) relayStats(start, end window, measured bool) {
	switch {
	case !measured:
		s.RelayUnavailable = "no measured phase"
		return
	case start.relayErr != nil:
		s.RelayUnavailable = start.relayErr.Error()
		return
	case end.relayErr != nil:
		s.RelayUnavailable = end.relayErr.Error()
		return
	}
	d := end.relay.since(start.relay)
	if d.count() <= 0 {
		s.RelayUnavailable = "no store writes of peers' changes in the measured phase"
		return
	}
	ms := func(v float64) float64 { return math.Round(v*1e6) / 1e3 }
	s.Relay = &RelayStats{P50Ms: ms(d.quantile(0.5)), P99Ms: ms(d.quantile(0.99)), Writes: int64(d.count())}
}

// relayLine formats the relay figures for the summaries.
func (s ServerStats) relayLine() string {
	if s.Relay == nil {
		return "n/a (" + s.RelayUnavailable + ")"
	}
	return fmt.Sprintf("p50 %.2fms p99 %.2fms (%d store writes; read -> stored -> released, the node's part of the latency)",
		s.Relay.P50Ms, s.Relay.P99Ms, s.Relay.Writes)
}
