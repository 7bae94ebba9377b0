package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	return &Report{
		Scenario: "fanout", Target: []string{"ws://127.0.0.1:8080/ws"}, Params: map[string]any{"docs": 2, "rate": 1.5, "duration": "3s"},
		StartedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), DurationSec: 3, Clients: 6, Docs: 2,
		Connect:    ConnectStats{Count: 6, P50Ms: 1.5, P99Ms: 3},
		Edits:      EditStats{Sent: 27, PerSec: 9},
		Deliveries: DeliveryStats{Count: 54, PerSec: 18},
		LatencyMs:  LatencySummary{P50: 1, P90: 2, P99: 3, Max: 4, Count: 54},
		Timeline:   []TimelinePoint{{T: 0, Count: 20, P50: 1, P90: 2, P99: 3}, {T: 1}, {T: 2, Count: 34, P50: 1.5, P90: 2.5, P99: 4}},
		Errors:     Counts{ByReason: map[string]int{}}, Disconnects: Counts{Count: 1, ByReason: map[string]int{"connection to URL ended: EOF": 1}},
		Converged: false, NotConverged: []NotConverged{{Doc: "automerge:abc", Clients: []string{"fanout-d1-c2"}}},
		Server:        ServerStats{RSSBeforeBytes: 1 << 20, RSSAfterBytes: 2 << 20, RSSPeakBytes: 3 << 20, CPUUnavailable: "no process_cpu_seconds_total"},
		ScenarioExtra: map[string]any{"stormMs": []float64{1, 2}}, OK: false,
	}
}

// The JSON field names are read by other tools: this pins them.
func TestReportJSONNames(t *testing.T) {
	b, err := json.Marshal(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := func(v any) []string {
		var ks []string
		for k := range v.(map[string]any) {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	want := map[string][]string{
		"":            {"clients", "connect", "converged", "deliveries", "disconnects", "docs", "durationSec", "edits", "errors", "generator", "latencyMs", "notConverged", "ok", "params", "scenario", "scenarioExtra", "server", "startedAt", "target", "timeline"},
		"connect":     {"count", "failures", "p50Ms", "p99Ms"},
		"edits":       {"perSec", "sent"},
		"deliveries":  {"count", "perSec"},
		"latencyMs":   {"count", "max", "p50", "p90", "p99"},
		"errors":      {"byReason", "count"},
		"disconnects": {"byReason", "count"},
		"server":      {"cpuMsPerDelivery", "cpuMsPerEdit", "cpuSeconds", "cpuUnavailable", "cpuWindowDeliveries", "cpuWindowEdits", "relayMs", "rssAfterBytes", "rssBeforeBytes", "rssPeakBytes", "sendMs"},
	}
	for k, w := range want {
		v := any(m)
		if k != "" {
			v = m[k]
		}
		if got := keys(v); !slices.Equal(got, w) {
			t.Errorf("%q keys %v, want %v", k, got, w)
		}
	}
	if got := keys(m["timeline"].([]any)[0]); !slices.Equal(got, []string{"count", "p50", "p90", "p99", "t"}) {
		t.Errorf("timeline keys %v", got)
	}
	if got := keys(m["notConverged"].([]any)[0]); !slices.Equal(got, []string{"clients", "doc"}) {
		t.Errorf("notConverged keys %v", got)
	}
}

func TestWriteFiles(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "run")
	r := sampleReport()
	if err := r.writeFiles(prefix); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(prefix + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Scenario != "fanout" || back.OK || back.Converged || len(back.Timeline) != 3 || back.Timeline[2].P99 != 4 || back.Disconnects.ByReason["connection to URL ended: EOF"] != 1 {
		t.Errorf("read back %+v", back)
	}
	h, err := os.ReadFile(prefix + ".html")
	if err != nil {
		t.Fatal(err)
	}
	page := string(h)
	for _, want := range []string{"<!doctype html>", "<svg", "</svg>", "p50", "p90", "p99", "ws://127.0.0.1:8080/ws", "stormMs", "server CPU", "n/a (no process_cpu_seconds_total)"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"src=", "href=", "<script", "<link", "http://", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("page is not self-contained: has %q", bad)
		}
	}
	// Three series; the empty second 1 breaks each line into two pieces.
	if n := strings.Count(page, "<path "); n != 3 {
		t.Errorf("%d paths, want 3", n)
	}
	if n := strings.Count(page, `d="M`); n != 3 || strings.Count(page, " M") < 3 {
		t.Errorf("lines do not restart after the empty second:\n%s", page)
	}
}

func TestHTMLEscapes(t *testing.T) {
	r := sampleReport()
	r.Scenario = "<b>x</b>"
	var buf bytes.Buffer
	if err := writeHTML(&buf, r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "<b>x</b>") {
		t.Error("scenario name not escaped")
	}
}

func TestChartEmpty(t *testing.T) {
	if s := chartSVG(nil); !strings.HasPrefix(s, "<svg") || strings.Contains(s, "<path") || strings.Contains(s, "NaN") {
		t.Errorf("empty chart: %s", s)
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 0.3: 0.5, 1: 1, 1.1: 2, 3: 5, 7: 10, 12: 20, 450: 500} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

func TestReason(t *testing.T) {
	for in, want := range map[string]string{
		"connection to ws://127.0.0.1:8080/ws ended: failed to get reader: EOF":               "connection to URL ended: failed to get reader: EOF",
		"failed to connect to ws://h:1/ws: dial tcp 127.0.0.3:41234->127.0.0.1:8080: refused": "failed to connect to URL: dial tcp ADDR->ADDR: refused",
		"failed to find 2fTYqBbTu6hKRE3KrRwDNUN5MAcs: context deadline exceeded":              "failed to find ID: context deadline exceeded",
		"":                         "unknown",
		strings.Repeat("ab ", 100): strings.Repeat("ab ", 100)[:160],
	} {
		if got := reason(in); got != want {
			t.Errorf("reason(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitList(t *testing.T) {
	if got := splitList(" ws://a/ws, ,ws://b/ws,"); !slices.Equal(got, []string{"ws://a/ws", "ws://b/ws"}) {
		t.Errorf("got %q", got)
	}
	tg := &target{url: "ws://a:1/ws,wss://b/ws"}
	if got := tg.metricsURLs(); !slices.Equal(got, []string{"http://a:1/metrics", "https://b/metrics"}) {
		t.Errorf("metrics %q", got)
	}
}

func TestIntStats(t *testing.T) {
	s := intStats([]int64{5, 1, 9, 3})
	if s["count"] != 4 || s["mean"] != 4 || s["p50"] != 3 || s["max"] != 9 {
		t.Errorf("got %v", s)
	}
	if intStats(nil)["count"] != 0 {
		t.Error("empty")
	}
}
