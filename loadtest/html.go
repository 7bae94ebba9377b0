package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// writeHTML writes a self-contained page (inline SVG, no external assets):
// the run's key numbers and its p50/p90/p99 latency per second.
func writeHTML(w io.Writer, r *Report) error {
	var b strings.Builder
	title := html.EscapeString(fmt.Sprintf("plait loadtest: %s", r.Scenario))
	fmt.Fprintf(&b, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%s</title>\n", title)
	b.WriteString("<style>body{font:14px sans-serif;margin:2em}td{padding:2px 12px 2px 0}</style></head><body>\n")
	fmt.Fprintf(&b, "<h1>%s</h1>\n<table>\n", title)
	row := func(k, v string) {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td></tr>\n", html.EscapeString(k), html.EscapeString(v))
	}
	l := r.LatencyMs
	row("target", strings.Join(r.Target, ", "))
	row("started", r.StartedAt.Format("2006-01-02 15:04:05 MST"))
	row("size", fmt.Sprintf("%d clients, %d docs, %.1fs", r.Clients, r.Docs, r.DurationSec))
	row("connect", fmt.Sprintf("%d ok, %d failed, p50 %.1fms, p99 %.1fms", r.Connect.Count, r.Connect.Failures, r.Connect.P50Ms, r.Connect.P99Ms))
	row("edits", fmt.Sprintf("%d (%.1f/s), deliveries %d (%.1f/s)", r.Edits.Sent, r.Edits.PerSec, r.Deliveries.Count, r.Deliveries.PerSec))
	row("latency", fmt.Sprintf("p50 %.2fms, p90 %.2fms, p99 %.2fms, max %.2fms", l.P50, l.P90, l.P99, l.Max))
	row("server RSS", fmt.Sprintf("%.1f → %.1f MiB (peak %.1f)", r.Server.RSSBeforeBytes/(1<<20), r.Server.RSSAfterBytes/(1<<20), r.Server.RSSPeakBytes/(1<<20)))
	row("server CPU", r.Server.cpuLine())
	row("server relay", r.Server.relayLine())
	row("server send", r.Server.sendLine())
	row("generator CPU", r.Generator.line())
	row("errors / disconnects", fmt.Sprintf("%d / %d", r.Errors.Count, r.Disconnects.Count))
	row("converged / ok", fmt.Sprintf("%v / %v", r.Converged, r.OK))
	r.eachExtra(row) // the scenario's own figures (-history's upload, storms, ...)
	b.WriteString("</table>\n<h2>Edit-to-peer latency per second (ms)</h2>\n")
	b.WriteString(chartSVG(r.Timeline))
	b.WriteString("\n</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// chartSVG draws p50/p90/p99 against seconds; seconds without deliveries
// break the lines.
func chartSVG(tl []TimelinePoint) string {
	const w, h, left, right, top, bottom = 900.0, 370.0, 60.0, 20.0, 30.0, 40.0
	ymax := 0.0
	for _, p := range tl {
		ymax = max(ymax, p.P99)
	}
	ymax = niceCeil(ymax)
	n := max(len(tl)-1, 1)
	x := func(t int) float64 { return left + float64(t)/float64(n)*(w-left-right) }
	y := func(v float64) float64 { return h - bottom - v/ymax*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%g" height="%g" viewBox="0 0 %g %g" role="img" font-size="12">`+"\n", w, h, w, h)
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%.3g</text>`+"\n",
			left, y(v), w-right, y(v), left-6, y(v)+4, v)
	}
	step := max(1, int(math.Ceil(float64(n)/10)))
	for t := 0; t < len(tl); t += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%ds</text>`+"\n", x(t), h-bottom+18, t)
	}
	series := []struct {
		name, color string
		v           func(TimelinePoint) float64
	}{
		{"p50", "#1f77b4", func(p TimelinePoint) float64 { return p.P50 }},
		{"p90", "#ff7f0e", func(p TimelinePoint) float64 { return p.P90 }},
		{"p99", "#d62728", func(p TimelinePoint) float64 { return p.P99 }},
	}
	for i, s := range series {
		var d strings.Builder
		pen := "M"
		for _, p := range tl {
			if p.Count == 0 {
				pen = "M"
				continue
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", pen, x(p.T), y(s.v(p)))
			pen = "L"
		}
		if d.Len() > 0 {
			fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`+"\n", strings.TrimSpace(d.String()), s.color)
		}
		lx := w - right - 180 + float64(i)*60
		fmt.Fprintf(&b, `<rect x="%g" y="%g" width="12" height="3" fill="%s"/><text x="%g" y="%g">%s</text>`+"\n",
			lx, top-12, s.color, lx+16, top-7, s.name)
	}
	b.WriteString("</svg>")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
