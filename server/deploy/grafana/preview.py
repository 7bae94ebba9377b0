#!/usr/bin/env python3
"""preview.py: renders the panels of a Grafana dashboard (plait.json) from a real
Prometheus, without Grafana: every panel's queries go to Prometheus's query_range
API over the given window, and the results are drawn as SVG charts (time series)
and numbers (stats) on the dashboard's 24-column grid, in one HTML page.

usage: preview.py DASHBOARD.json PROMETHEUS_URL START END OUT.html [STEP_SECONDS]
  START, END  Unix seconds of the window; $__rate_interval becomes 4 x STEP
              (at least 10s), $job matches every job. A panel with more than six
              series draws only those that are not zero throughout.

preview.sh runs a small cluster under load, scrapes it with Prometheus and calls this;
docs/operations.md ("Dashboard") shows the screenshot it makes.
"""
import html
import json
import math
import sys
import urllib.parse
import urllib.request

COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a", "#37872d", "#c4162a"]


def query_range(prom, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    out = fmt or "{{__name__}}"
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    while "{{" in out:
        a = out.index("{{")
        b = out.index("}}", a)
        out = out[:a] + out[b + 2:]
    return out.strip() or "value"


def fmt_value(v, unit):
    if v is None or math.isnan(v):
        return "–"
    if unit == "Bps":
        for div, suffix in ((1 << 20, "MiB/s"), (1 << 10, "KiB/s")):
            if abs(v) >= div:
                return f"{v / div:.1f} {suffix}"
        return f"{v:.0f} B/s"
    if unit == "s":
        if v == 0:
            return "0 s"
        if v < 1e-3:
            return f"{v * 1e6:.0f} µs"
        if v < 1:
            return f"{v * 1e3:.1f} ms"
        return f"{v:.2f} s"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e3:
        return f"{v / 1e3:.1f}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.2f}"


def series_of(prom, panel, start, end, step):
    out = []
    rate = f"{max(4 * step, 10)}s"
    for t in panel.get("targets", []):
        expr = t["expr"].replace("$__rate_interval", rate).replace('job=~"$job"', 'job=~".*"')
        for r in query_range(prom, expr, start, end, step):
            pts = [(float(ts), float(v)) for ts, v in r["values"]]
            out.append((legend(t.get("legendFormat", ""), r["metric"]), pts))
    return out


def svg_chart(series, w, h, start, end, unit):
    pad_l, pad_r, pad_t, pad_b = 70, 10, 8, 22
    cw, ch = w - pad_l - pad_r, h - pad_t - pad_b
    vals = [v for _, pts in series for _, v in pts if not math.isnan(v)]
    vmax = max(vals) if vals else 1.0
    vmax = vmax * 1.1 if vmax > 0 else 1.0
    x = lambda ts: pad_l + (ts - start) / max(end - start, 1) * cw
    y = lambda v: pad_t + ch - v / vmax * ch
    parts = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        v = vmax * i / 4
        yy = y(v)
        parts.append(f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#2c3235"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{yy + 4:.1f}" fill="#9fa7b3" font-size="10" text-anchor="end">{html.escape(fmt_value(v, unit))}</text>')
    for i in range(5):
        ts = start + (end - start) * i / 4
        parts.append(f'<text x="{x(ts):.1f}" y="{h - 6}" fill="#9fa7b3" font-size="10" text-anchor="middle">{int((ts - start) // 60)}:{int((ts - start) % 60):02d}</text>')
    for i, (_, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        path, pen = [], "M"
        for ts, v in pts:
            if math.isnan(v):
                pen = "M"
                continue
            path.append(f"{pen}{x(ts):.1f},{y(v):.1f}")
            pen = "L"
        if path:
            parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def main():
    dash_file, prom, start, end, out = sys.argv[1:6]
    step = int(sys.argv[6]) if len(sys.argv) > 6 else 5
    start, end = float(start), float(end)
    dash = json.load(open(dash_file))
    unit_px, row_px, gap = 52, 34, 6
    body = []
    height = 0
    for p in dash["panels"]:
        g = p["gridPos"]
        left, top = g["x"] * unit_px, g["y"] * row_px
        w, h = g["w"] * unit_px - gap, g["h"] * row_px - gap
        height = max(height, top + h)
        if p["type"] == "row":
            body.append(f'<div class="row" style="left:{left}px;top:{top}px;width:{w}px">{html.escape(p["title"])}</div>')
            continue
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        series = series_of(prom, p, start, end, step)
        inner = ""
        if p["type"] == "stat":
            last = None
            for _, pts in series:
                for _, v in pts:
                    if not math.isnan(v):
                        last = v
            inner = f'<div class="stat">{html.escape(fmt_value(last, unit))}</div>'
        else:
            if len(series) > 6:
                # Many series (a label with many values, such as limit): draw
                # the ones that moved, so each keeps a color of its own.
                moved = [s for s in series if any(v != 0 and not math.isnan(v) for _, v in s[1])]
                series = moved or series[:1]
            inner = svg_chart(series, w - 12, h - 58, start, end, unit)
            leg = "".join(f'<span><i style="background:{COLORS[i % len(COLORS)]}"></i>{html.escape(n)}</span>' for i, (n, _) in enumerate(series))
            if not series:
                leg = '<span class="none">no data</span>'
            inner += f'<div class="legend">{leg}</div>'
        body.append(f'<div class="panel" style="left:{left}px;top:{top}px;width:{w}px;height:{h}px"><div class="title">{html.escape(p["title"])}</div>{inner}</div>')
    page = f"""<!doctype html><meta charset="utf-8"><title>{html.escape(dash["title"])}</title>
<style>
body{{margin:0;background:#111217;font-family:Inter,Helvetica,Arial,sans-serif;color:#ccccdc}}
h1{{font-size:16px;font-weight:500;margin:12px 16px}} h1 small{{color:#8e8e8e;font-weight:400}}
.grid{{position:relative;margin:0 16px;height:{height + 10}px}}
.panel{{position:absolute;background:#181b1f;border:1px solid #24292e;border-radius:2px;padding:4px 6px;box-sizing:border-box;overflow:hidden}}
.title{{font-size:12px;font-weight:500;margin:2px 0 4px}}
.row{{position:absolute;font-size:14px;font-weight:500;padding-top:8px}}
.stat{{font-size:34px;color:#73bf69;text-align:center;margin-top:14px}}
.legend{{font-size:10px;color:#ccccdc;line-height:14px}} .legend span{{margin-right:10px;white-space:nowrap}}
.legend i{{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}} .none{{color:#8e8e8e}}
</style>
<h1>{html.escape(dash["title"])} <small>rendered from Prometheus by server/deploy/grafana/preview.py (not Grafana); window {int(end - start)} s</small></h1>
<div class="grid">{"".join(body)}</div>"""
    with open(out, "w") as f:
        f.write(page)


if __name__ == "__main__":
    main()
