package main

import (
	"math"
	"math/bits"
	"slices"
	"sync"
	"time"
)

// hist is a histogram of microsecond values that keeps 7 significant bits
// (under 1% error), so its memory stays small however many samples a run
// records.
type hist struct {
	counts map[int32]uint64
	n      uint64
	max    int64
}

const histSub = 1 << 7

// histBucket returns the bucket of v: exact below 128, then 64 buckets per
// power of two.
func histBucket(v int64) int32 {
	if v < histSub {
		return int32(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - 7
	return int32(histSub + (shift-1)*histSub/2 + int(v>>shift) - histSub/2)
}

// histValue returns the middle of bucket b.
func histValue(b int32) int64 {
	if b < histSub {
		return int64(b)
	}
	k := int64(b - histSub)
	shift := k/(histSub/2) + 1
	low := (k%(histSub/2) + histSub/2) << shift
	return low + (int64(1)<<shift-1)/2
}

func (h *hist) add(v int64) {
	if h.counts == nil {
		h.counts = map[int32]uint64{}
	}
	h.counts[histBucket(v)]++
	h.n++
	h.max = max(h.max, v)
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100).
func (h *hist) percentile(p float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := max(uint64(math.Ceil(p/100*float64(h.n))), 1)
	keys := make([]int32, 0, len(h.counts))
	for k := range h.counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var seen uint64
	for _, k := range keys {
		seen += h.counts[k]
		if seen >= rank {
			return min(histValue(k), h.max)
		}
	}
	return h.max
}

// LatencySummary is the latencyMs section of the report.
type LatencySummary struct {
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	Count uint64  `json:"count"`
}

// TimelinePoint is the latency of the deliveries of one second of the run.
type TimelinePoint struct {
	T     int     `json:"t"`
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
}

func (h *hist) summary() LatencySummary {
	return LatencySummary{P50: usToMs(h.percentile(50)), P90: usToMs(h.percentile(90)), P99: usToMs(h.percentile(99)), Max: usToMs(h.max), Count: h.n}
}

func usToMs(us int64) float64 { return float64(us) / 1000 }

// latency records edit-to-peer delays, overall and per second since start.
type latency struct {
	start time.Time

	mu   sync.Mutex
	all  hist
	secs []hist
}

func newLatency(start time.Time) *latency { return &latency{start: start} }

// add records a delivery at time at that took d.
func (l *latency) add(at time.Time, d time.Duration) {
	us := max(d.Microseconds(), 0)
	l.mu.Lock()
	defer l.mu.Unlock()
	sec := max(int(at.Sub(l.start)/time.Second), 0)
	for len(l.secs) <= sec {
		l.secs = append(l.secs, hist{})
	}
	l.all.add(us)
	l.secs[sec].add(us)
}

// restart forgets every sample and counts seconds from start.
func (l *latency) restart(start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.start, l.all, l.secs = start, hist{}, nil
}

// elapsed returns the seconds since start.
func (l *latency) elapsed(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(now.Sub(l.start) / time.Second)
}

func (l *latency) summary() LatencySummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.summary()
}

// second returns the summary of second i (zero if nothing was recorded).
func (l *latency) second(i int) LatencySummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < 0 || i >= len(l.secs) {
		return LatencySummary{}
	}
	return l.secs[i].summary()
}

// timeline returns one point per second, at least n of them.
func (l *latency) timeline(n int) []TimelinePoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]TimelinePoint, max(n, len(l.secs)))
	for i := range out {
		out[i].T = i
		if i < len(l.secs) {
			s := l.secs[i].summary()
			out[i] = TimelinePoint{T: i, Count: s.Count, P50: s.P50, P90: s.P90, P99: s.P99}
		}
	}
	return out
}

// durations summarises exact samples (connection set-ups, resumes: few
// enough to keep) as p50/p99 in milliseconds.
type durations struct {
	mu sync.Mutex
	ds []time.Duration
}

func (d *durations) add(v time.Duration) {
	d.mu.Lock()
	d.ds = append(d.ds, v)
	d.mu.Unlock()
}

func (d *durations) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.ds)
}

// percentileMs returns the nearest-rank p-th percentile in milliseconds.
func (d *durations) percentileMs(p float64) float64 {
	d.mu.Lock()
	s := slices.Clone(d.ds)
	d.mu.Unlock()
	return percentileMs(s, p)
}

// summary returns count, p50, p99 and max, for scenarioExtra.
func (d *durations) summary() map[string]float64 {
	return map[string]float64{"count": float64(d.count()), "p50": d.percentileMs(50), "p99": d.percentileMs(99), "max": d.percentileMs(100)}
}

func percentileMs(s []time.Duration, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	rank := max(int(math.Ceil(p/100*float64(len(s)))), 1)
	return roundMs(s[min(rank, len(s))-1])
}

func roundMs(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
