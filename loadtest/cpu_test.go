package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The CPU window: deltas divided by the window's edits and deliveries, and
// "n/a" (never a number) when a server does not report its CPU.
func TestCPUStats(t *testing.T) {
	var s ServerStats
	s.cpuStats(window{cpu: 10, edits: 100, deliveries: 300}, window{cpu: 12, edits: 1100, deliveries: 3300}, true)
	if s.CPUSeconds == nil || *s.CPUSeconds != 2 || *s.CPUMsPerEdit != 2 || *s.CPUMsPerDelivery != 0.667 {
		t.Fatalf("got %+v", s)
	}
	if s.CPUWindowEdits != 1000 || s.CPUWindowDeliveries != 3000 {
		t.Fatalf("window counts %d %d", s.CPUWindowEdits, s.CPUWindowDeliveries)
	}
	if got := s.cpuLine(); !strings.Contains(got, "2.000 ms per edit") || !strings.Contains(got, "0.667 ms per delivery") {
		t.Fatalf("line %q", got)
	}

	var none ServerStats
	none.cpuStats(window{cpuErr: fmt.Errorf("x: %w", errNoMetric)}, window{cpu: 3}, true)
	if none.CPUSeconds != nil || none.CPUMsPerEdit != nil || !strings.HasPrefix(none.cpuLine(), "n/a") {
		t.Fatalf("unreported CPU gave %+v %q", none, none.cpuLine())
	}
	var idle ServerStats
	idle.cpuStats(window{cpu: 1}, window{cpu: 2}, true) // no edits: no per-edit figure
	if idle.CPUSeconds == nil || idle.CPUMsPerEdit != nil || !strings.Contains(idle.cpuLine(), "n/a per edit") {
		t.Fatalf("no edits gave %+v %q", idle, idle.cpuLine())
	}
}

// target.cpu sums the nodes, and fails if one does not report CPU.
func TestTargetCPU(t *testing.T) {
	serve := func(body string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) }))
	}
	a := serve("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\nprocess_resident_memory_bytes 100\n")
	defer a.Close()
	b := serve("process_cpu_seconds_total 2.25\nprocess_resident_memory_bytes 50\n")
	defer b.Close()
	c := serve("process_resident_memory_bytes 10\n")
	defer c.Close()
	ctx := context.Background()
	tg := &target{metrics: a.URL + "," + b.URL}
	if v, err := tg.cpu(ctx); err != nil || v != 3.75 {
		t.Fatalf("cpu %v %v", v, err)
	}
	if v, err := tg.rss(ctx); err != nil || v != 150 {
		t.Fatalf("rss %v %v", v, err)
	}
	tg.metrics += "," + c.URL
	if _, err := tg.cpu(ctx); !errors.Is(err, errNoMetric) {
		t.Fatalf("a node without CPU: %v", err)
	}
}
