package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/client"
	"github.com/plaithub/plait/server/node"
)

// dashboard is the part of Grafana's dashboard model the checks read.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ X, Y, W, H int } `json:"gridPos"`
		Targets []struct {
			RefID        string `json:"refId"`
			Expr         string `json:"expr"`
			LegendFormat string `json:"legendFormat"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/plait.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("plait.json: %v", err)
	}
	return d
}

// metricRe finds the metric names in a PromQL expression.
var metricRe = regexp.MustCompile(`\bplait_[a-z0-9_]+`)

// eventOnly are vectors whose series appear only when their event happens
// (a failed store or broker call, a recovery after a lost delivery): the
// test cannot make them happen on a healthy node, so it checks that the
// node's code registers them under that name instead.
var eventOnly = map[string]bool{
	"plait_store_errors_total":      true,
	"plait_broker_errors_total":     true,
	"plait_broker_recoveries_total": true,
}

// TestDashboard checks the Grafana dashboard's form, and that every metric
// its panels query is one a real node (on Redis, after edits, a malformed
// frame and a block) exports under that name and type.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 36 {
		t.Errorf("title %q uid %q schemaVersion %d", d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] || !vars["job"] {
		t.Errorf("template variables %v, want datasource and job", vars)
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]int{}
	want := map[string]bool{} // metric names the panels query
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Fatalf("panel %q overlaps panel %d at %d,%d", p.Title, other, x, y)
				}
				used[cell{x, y}] = p.ID
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Type != "timeseries" && p.Type != "stat" {
			t.Errorf("panel %q: type %q", p.Title, p.Type)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.RefID == "" || tg.Expr == "" {
				t.Errorf("panel %q: target %+v", p.Title, tg)
			}
			if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") || strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") {
				t.Errorf("panel %q: unbalanced %s", p.Title, tg.Expr)
			}
			names := metricRe.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: %s queries no Plait metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !strings.Contains(tg.Expr, n+`{job=~"$job"`) {
					t.Errorf("panel %q: %s is not filtered by the job variable", p.Title, n)
				}
				want[n] = true
			}
		}
	}

	types := scrapeBusyNode(t)
	for n := range want {
		base, typ := n, "counter"
		switch {
		case strings.HasSuffix(n, "_bucket"):
			base, typ = strings.TrimSuffix(n, "_bucket"), "histogram"
		case !strings.HasSuffix(n, "_total"):
			typ = "gauge"
		}
		if got, ok := types[base]; ok {
			if got != typ {
				t.Errorf("%s is a %s, the dashboard reads it as a %s", base, got, typ)
			}
			continue
		}
		if !eventOnly[base] {
			t.Errorf("the dashboard queries %s, which the node does not export", n)
			continue
		}
		if !registered(t, base) {
			t.Errorf("the dashboard queries %s, which no code registers", n)
		}
	}
}

// registered reports whether a Go file of the hub or the server (tests
// aside) declares a metric named name.
func registered(t *testing.T, name string) bool {
	t.Helper()
	found := false
	for _, dir := range []string{"../../hub", "../../server"} {
		_ = filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
			if err != nil || found || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			b, _ := os.ReadFile(path)
			found = strings.Contains(string(b), `Name: "`+name+`"`)
			return nil
		})
	}
	return found
}

// scrapeBusyNode runs a real node on a real redis-server, edits a document
// through the Go client, sends a malformed frame (which gets the address
// blocked: block-threshold 1), and returns the metric families of its
// /metrics by name, with their types. It also checks the probe paths the
// Kubernetes manifests use.
func scrapeBusyNode(t *testing.T) map[string]string {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	cfg, err := node.ParseConfig([]string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--redis-url", srv.URL(),
		"--block-threshold", "1", "--audit-log", filepath.Join(t.TempDir(), "audit.log")}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return")
		}
	})
	base := "http://" + ln.Addr().String()
	m := loadManifests(t)
	c := m.dep.Spec.Template.Spec.Containers[0]
	for _, path := range []string{c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path, c.StartupProbe.HTTPGet.Path, m.monitor.Spec.Endpoints[0].Path} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cl, err := client.New(ctx, client.Options{URLs: []string{"ws://" + ln.Addr().String() + "/ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	h, err := cl.Create(func(d *automerge.Doc) error { return d.RootMap().Set("title", "dashboard") })
	if err != nil {
		t.Fatal(err)
	}
	const edits = 5
	for i := range edits {
		if err := h.Change(func(d *automerge.Doc) error { return d.RootMap().Set("n", int64(i)) }); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(ctx, t, base, "plait_changes_accepted_total", edits+1)

	// A malformed frame: closed, audited, and (threshold 1) blocked.
	ws, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws.Write(ctx, websocket.MessageBinary, []byte{0xff, 0x00, 0x13})
	_, _, _ = ws.Read(ctx)
	ws.CloseNow()
	waitMetric(ctx, t, base, "plait_blocked_sources_total", 1)

	types, _ := scrape(t, base)
	return types
}

// scrape reads /metrics: the type of every family, and the value of every
// series without labels.
func scrape(t *testing.T, base string) (map[string]string, map[string]float64) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	types, values := map[string]string{}, map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "#" && f[1] == "TYPE":
			types[f[2]] = f[3]
		case len(f) == 2 && !strings.HasPrefix(f[0], "#"):
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				values[f[0]] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return types, values
}

// waitMetric polls /metrics until name reaches at least min.
func waitMetric(ctx context.Context, t *testing.T, base, name string, min float64) {
	t.Helper()
	for {
		_, values := scrape(t, base)
		if values[name] >= min {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s = %v, waited for %v: %v", name, values[name], min, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
