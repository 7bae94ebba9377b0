package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Report is the JSON report of a run (-out PREFIX writes PREFIX.json).
// Other tools read it: keep the field names.
type Report struct {
	Scenario      string          `json:"scenario"`
	Target        []string        `json:"target"`
	Params        map[string]any  `json:"params"`
	StartedAt     time.Time       `json:"startedAt"`
	DurationSec   float64         `json:"durationSec"`
	Clients       int             `json:"clients"`
	Docs          int             `json:"docs"`
	Connect       ConnectStats    `json:"connect"`
	Edits         EditStats       `json:"edits"`
	Deliveries    DeliveryStats   `json:"deliveries"`
	LatencyMs     LatencySummary  `json:"latencyMs"`
	Timeline      []TimelinePoint `json:"timeline"`
	Errors        Counts          `json:"errors"`
	Disconnects   Counts          `json:"disconnects"`
	Converged     bool            `json:"converged"`
	NotConverged  []NotConverged  `json:"notConverged"`
	Server        ServerStats     `json:"server"`
	Generator     GeneratorStats  `json:"generator"`
	ScenarioExtra map[string]any  `json:"scenarioExtra"`
	OK            bool            `json:"ok"`
}

type ConnectStats struct {
	Count    int     `json:"count"`
	Failures int     `json:"failures"`
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
}

type EditStats struct {
	Sent   int64   `json:"sent"`
	PerSec float64 `json:"perSec"`
}

type DeliveryStats struct {
	Count  int64   `json:"count"`
	PerSec float64 `json:"perSec"`
}

// Counts are events by (normalised) reason.
type Counts struct {
	Count    int            `json:"count"`
	ByReason map[string]int `json:"byReason"`
}

// NotConverged is a document whose clients did not reach the same heads:
// Clients are the peers that differ from the most common heads.
type NotConverged struct {
	Doc     string   `json:"doc"`
	Clients []string `json:"clients"`
}

// ServerStats is what the servers' metrics say, summed over the nodes.
// The CPU figures cover the measured phase only; they are null (and
// CPUUnavailable says why) when a server does not report
// process_cpu_seconds_total or the scenario has no measured phase.
type ServerStats struct {
	RSSBeforeBytes float64 `json:"rssBeforeBytes"`
	RSSAfterBytes  float64 `json:"rssAfterBytes"`
	RSSPeakBytes   float64 `json:"rssPeakBytes"`
	// CPUSeconds is the servers' user+system CPU over the measured phase.
	CPUSeconds *float64 `json:"cpuSeconds"`
	// CPUMsPerEdit and CPUMsPerDelivery divide it by the edits sent and the
	// deliveries counted in the same window (null if there were none).
	CPUMsPerEdit        *float64 `json:"cpuMsPerEdit"`
	CPUMsPerDelivery    *float64 `json:"cpuMsPerDelivery"`
	CPUWindowEdits      int64    `json:"cpuWindowEdits"`
	CPUWindowDeliveries int64    `json:"cpuWindowDeliveries"`
	CPUUnavailable      string   `json:"cpuUnavailable,omitempty"`
	// Relay and Send are the node's own parts of the latency over the
	// measured phase: from reading a peer's changes to releasing them,
	// stored (plait_relay_seconds), and from queuing messages for a
	// connection to the end of their socket write (plait_send_seconds).
	// Null for a server without them; *Unavailable says why.
	Relay            *NodeLatency `json:"relayMs"`
	RelayUnavailable string       `json:"relayUnavailable,omitempty"`
	Send             *NodeLatency `json:"sendMs"`
	SendUnavailable  string       `json:"sendUnavailable,omitempty"`
}

// cpuStats fills the CPU figures of s from the values read at the start
// and the end of the measured phase (measured false: there was none).
func (s *ServerStats) cpuStats(start, end window, measured bool) {
	switch {
	case !measured:
		s.CPUUnavailable = "no measured phase"
		return
	case start.cpuErr != nil:
		s.CPUUnavailable = start.cpuErr.Error()
		return
	case end.cpuErr != nil:
		s.CPUUnavailable = end.cpuErr.Error()
		return
	}
	round := func(v float64) *float64 { v = math.Round(v*1000) / 1000; return &v }
	sec := end.cpu - start.cpu
	s.CPUSeconds = round(sec)
	s.CPUWindowEdits, s.CPUWindowDeliveries = end.edits-start.edits, end.deliveries-start.deliveries
	if s.CPUWindowEdits > 0 {
		s.CPUMsPerEdit = round(sec * 1000 / float64(s.CPUWindowEdits))
	}
	if s.CPUWindowDeliveries > 0 {
		s.CPUMsPerDelivery = round(sec * 1000 / float64(s.CPUWindowDeliveries))
	}
}

// cpuLine formats the CPU figures for the summaries: "n/a (why)" if the
// servers do not report CPU.
func (s ServerStats) cpuLine() string {
	if s.CPUSeconds == nil {
		return "n/a (" + s.CPUUnavailable + ")"
	}
	per := func(v *float64, what string) string {
		if v == nil {
			return "n/a per " + what
		}
		return fmt.Sprintf("%.3f ms per %s", *v, what)
	}
	return fmt.Sprintf("%.2f s in the measured phase: %s (%d), %s (%d)", *s.CPUSeconds,
		per(s.CPUMsPerEdit, "edit"), s.CPUWindowEdits, per(s.CPUMsPerDelivery, "delivery"), s.CPUWindowDeliveries)
}

// report builds the report; rssAfter is the server's RSS at the end.
func (r *run) report(rssAfter float64) *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := time.Now()
	start, stop := r.started, end
	if !r.phaseStart.IsZero() {
		start = r.phaseStart
	}
	if !r.phaseEnd.IsZero() {
		stop = r.phaseEnd
	}
	dur := stop.Sub(start).Seconds()
	perSec := func(n int64) float64 {
		if dur <= 0 {
			return 0
		}
		return math.Round(float64(n)/dur*10) / 10
	}
	params := map[string]any{}
	r.fs.VisitAll(func(f *flag.Flag) {
		v := f.Value.(flag.Getter).Get()
		if d, ok := v.(time.Duration); ok {
			v = d.String()
		}
		params[f.Name] = v
	})
	rep := &Report{
		Scenario: r.name, Target: r.tg.urls(), Params: params, StartedAt: r.started.UTC(),
		DurationSec: math.Round(dur*1000) / 1000, Clients: r.clients, Docs: r.docs,
		Connect: ConnectStats{Count: r.connects.count(), Failures: r.connectFails,
			P50Ms: r.connects.percentileMs(50), P99Ms: r.connects.percentileMs(99)},
		Edits:       EditStats{Sent: r.edits.Load(), PerSec: perSec(r.edits.Load())},
		Deliveries:  DeliveryStats{Count: r.deliveries.Load(), PerSec: perSec(r.deliveries.Load())},
		LatencyMs:   r.lat.summary(),
		Timeline:    r.lat.timeline(int(dur)),
		Errors:      counts(r.errs),
		Disconnects: counts(r.discs),
		Converged:   len(r.notConverged) == 0, NotConverged: append([]NotConverged{}, r.notConverged...),
		Server:        ServerStats{RSSBeforeBytes: r.rssBefore, RSSAfterBytes: rssAfter, RSSPeakBytes: max(r.rssPeak, rssAfter)},
		ScenarioExtra: r.extra,
	}
	measured := !r.phaseStart.IsZero() && !r.phaseEnd.IsZero()
	rep.Server.cpuStats(r.cpuStart, r.cpuEnd, measured)
	rep.Server.latencyStats(r.cpuStart, r.cpuEnd, measured)
	var profile string
	if r.cpuProfile != "" && !r.phaseStart.IsZero() {
		profile = r.cpuProfile
	}
	rep.Generator = generatorStats(r.cpuStart, r.cpuEnd, r.phaseEnd.Sub(r.phaseStart), measured, profile)
	rep.OK = rep.Errors.Count == 0 && rep.Converged
	return rep
}

func counts(m map[string]int) Counts {
	c := Counts{ByReason: map[string]int{}}
	for k, v := range m {
		c.Count += v
		c.ByReason[k] = v
	}
	return c
}

// writeFiles writes prefix.json and prefix.html.
func (r *Report) writeFiles(prefix string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(prefix+".json", append(b, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(prefix + ".html")
	if err != nil {
		return err
	}
	if err := writeHTML(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printSummary writes the human summary.
func (r *Report) printSummary(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("%s: %d clients, %d docs, %.1fs against %s", r.Scenario, r.Clients, r.Docs, r.DurationSec, strings.Join(r.Target, ","))
	p("  connect      %d ok, %d failed; set-up p50 %.1fms p99 %.1fms", r.Connect.Count, r.Connect.Failures, r.Connect.P50Ms, r.Connect.P99Ms)
	p("  edits        %d sent (%.1f/s); %d deliveries (%.1f/s)", r.Edits.Sent, r.Edits.PerSec, r.Deliveries.Count, r.Deliveries.PerSec)
	l := r.LatencyMs
	p("  latency      p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms (%d samples)", l.P50, l.P90, l.P99, l.Max, l.Count)
	s := r.Server
	p("  server RSS   %.1f MiB -> %.1f MiB (peak %.1f MiB)", s.RSSBeforeBytes/(1<<20), s.RSSAfterBytes/(1<<20), s.RSSPeakBytes/(1<<20))
	p("  server CPU   %s", s.cpuLine())
	p("  server relay %s", s.relayLine())
	p("  server send  %s", s.sendLine())
	p("  generator    CPU %s", r.Generator.line())
	p("  errors       %d%s", r.Errors.Count, reasons(r.Errors.ByReason))
	p("  disconnects  %d%s", r.Disconnects.Count, reasons(r.Disconnects.ByReason))
	conv := "yes"
	if !r.Converged {
		conv = fmt.Sprintf("NO: %d documents differ", len(r.NotConverged))
		for i, nc := range r.NotConverged {
			if i == 5 {
				conv += "\n               ..."
				break
			}
			conv += fmt.Sprintf("\n               %s: %s", nc.Doc, strings.Join(nc.Clients, " "))
		}
	}
	p("  converged    %s", conv)
	r.eachExtra(func(k, v string) { p("  %-12s %s", k, v) })
	if r.OK {
		p("  OK")
	} else {
		p("  NOT OK")
	}
}

// eachExtra calls fn with each scenarioExtra entry, by key, its value as
// JSON.
func (r *Report) eachExtra(fn func(k, v string)) {
	for _, k := range slices.Sorted(maps.Keys(r.ScenarioExtra)) {
		b, _ := json.Marshal(r.ScenarioExtra[k])
		fn(k, string(b))
	}
}

// reasons formats byReason, most frequent first.
func reasons(m map[string]int) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "\n               %6d  %s", m[k], k)
	}
	return sb.String()
}
