package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistBucketsRoundTrip(t *testing.T) {
	prev := int32(-1)
	for v := int64(0); v < 1<<22; v += 1 + v/97 {
		b := histBucket(v)
		if b < prev {
			t.Fatalf("bucket of %d is %d, below the bucket %d of a smaller value", v, b, prev)
		}
		prev = b
		got := histValue(b)
		if v < histSub && got != v {
			t.Fatalf("value %d comes back as %d, want exact below %d", v, got, histSub)
		}
		if err := math.Abs(float64(got-v)) / float64(max(v, 1)); err > 0.01 {
			t.Fatalf("value %d comes back as %d (%.2f%% off)", v, got, 100*err)
		}
	}
}

func TestHistPercentiles(t *testing.T) {
	var h hist
	if h.percentile(50) != 0 {
		t.Fatal("empty histogram: want 0")
	}
	r := rand.New(rand.NewPCG(1, 2))
	vs := make([]int64, 10000)
	for i := range vs {
		vs[i] = int64(r.ExpFloat64() * 5000) // µs, long tail
		h.add(vs[i])
	}
	slices.Sort(vs)
	for _, p := range []float64{1, 50, 90, 99, 99.9, 100} {
		want := vs[int(math.Ceil(p/100*float64(len(vs))))-1]
		got := h.percentile(p)
		if math.Abs(float64(got-want)) > 0.01*float64(want)+1 {
			t.Errorf("p%v = %d, want %d within 1%%", p, got, want)
		}
	}
	if h.percentile(100) != vs[len(vs)-1] || h.max != vs[len(vs)-1] {
		t.Errorf("p100 = %d, max %d, want the exact max %d", h.percentile(100), h.max, vs[len(vs)-1])
	}
}

func TestHistSmallExact(t *testing.T) {
	var h hist
	for _, v := range []int64{5, 1, 4, 2, 3} {
		h.add(v)
	}
	for p, want := range map[float64]int64{20: 1, 40: 2, 50: 3, 60: 3, 80: 4, 99: 5, 100: 5} {
		if got := h.percentile(p); got != want {
			t.Errorf("p%v = %d, want %d", p, got, want)
		}
	}
	s := h.summary()
	if s.Count != 5 || s.P50 != 0.003 || s.Max != 0.005 {
		t.Errorf("summary %+v", s)
	}
}

func TestTimelineBuckets(t *testing.T) {
	start := time.Unix(1000, 0)
	l := newLatency(start)
	// Below 128µs the histogram is exact.
	l.add(start.Add(-time.Second), 70*time.Microsecond) // before the start: second 0
	l.add(start.Add(300*time.Millisecond), 10*time.Microsecond)
	l.add(start.Add(999*time.Millisecond), 30*time.Microsecond)
	l.add(start.Add(2500*time.Millisecond), 20*time.Microsecond)
	l.add(start.Add(2600*time.Millisecond), -time.Millisecond) // clock step: 0
	tl := l.timeline(5)
	if len(tl) != 5 {
		t.Fatalf("got %d points, want 5", len(tl))
	}
	want := []TimelinePoint{
		{T: 0, Count: 3, P50: 0.03, P90: 0.07, P99: 0.07},
		{T: 1},
		{T: 2, Count: 2, P50: 0, P90: 0.02, P99: 0.02},
		{T: 3}, {T: 4},
	}
	if !slices.Equal(tl, want) {
		t.Errorf("timeline\n got %+v\nwant %+v", tl, want)
	}
	if got := len(l.timeline(1)); got != 3 {
		t.Errorf("timeline(1) has %d points, want 3 (every recorded second)", got)
	}
	if s := l.summary(); s.Count != 5 || s.Max != 0.07 {
		t.Errorf("summary %+v", s)
	}
	if s := l.second(2); s.Count != 2 || l.second(9).Count != 0 || l.second(-1).Count != 0 {
		t.Errorf("second(2) %+v", s)
	}
	l.restart(start.Add(time.Hour))
	if s := l.summary(); s.Count != 0 || len(l.timeline(0)) != 0 {
		t.Errorf("after restart: %+v", s)
	}
}

func TestDurations(t *testing.T) {
	var d durations
	if d.percentileMs(50) != 0 {
		t.Fatal("empty: want 0")
	}
	for i := 100; i >= 1; i-- {
		d.add(time.Duration(i) * time.Millisecond)
	}
	if d.count() != 100 || d.percentileMs(50) != 50 || d.percentileMs(99) != 99 || d.percentileMs(100) != 100 {
		t.Errorf("p50 %v p99 %v p100 %v", d.percentileMs(50), d.percentileMs(99), d.percentileMs(100))
	}
	s := d.summary()
	if s["count"] != 100 || s["max"] != 100 {
		t.Errorf("summary %v", s)
	}
}

func TestSentAt(t *testing.T) {
	now := time.Unix(0, 1763800000123456789)
	msg := fmt.Sprintf("%s%s %d %d", msgPrefix, "peer-1", 7, now.UnixNano())
	if got, ok := sentAt(msg); !ok || !got.Equal(now) {
		t.Fatalf("sentAt(%q) = %v, %v", msg, got, ok)
	}
	for _, bad := range []string{"", "hello", msgPrefix + "p 1", msgPrefix + "p 1 x", "plait-lt"} {
		if _, ok := sentAt(bad); ok {
			t.Errorf("sentAt(%q) accepted", bad)
		}
	}
}
