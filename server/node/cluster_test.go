package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// These tests run three in-process nodes on one real redis-server (started
// by the test) and real automerge-repo clients spread over the nodes.

func startClusterNodes(t *testing.T, redisURL string, n int) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := 0; i < n; i++ {
		nodes = append(nodes, startNode(t, t.TempDir(), func(c *Config) {
			c.RedisURL = redisURL
			c.IdleDocTimeout = 5 * time.Second
		}))
	}
	return nodes
}

func wsURLs(nodes []*testNode) string {
	var us []string
	for _, n := range nodes {
		us = append(us, n.URL)
	}
	return strings.Join(us, ",")
}

// clusterRun is a cluster.mjs run in the background.
type clusterRun struct {
	editing chan struct{} // closed when the edit stream starts
	done    chan struct{}
	res     map[string]any
	err     error
}

func startClusterJS(t *testing.T, urls string, args ...string) *clusterRun {
	t.Helper()
	requireJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	cmd := exec.CommandContext(ctx, "node", append([]string{"cluster.mjs", urls}, args...)...)
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "PLAIT_E2E_TIMEOUT_MS=40000")
	var stdout, stderrAll bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &clusterRun{editing: make(chan struct{}), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer cancel()
		defer close(r.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		editing := false
		for sc.Scan() {
			stderrAll.WriteString(sc.Text() + "\n")
			if !editing && sc.Text() == "EDITING" {
				editing = true
				close(r.editing)
			}
		}
		err := cmd.Wait()
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &r.res); jerr != nil && err == nil {
			err = fmt.Errorf("no JSON result: %v", jerr)
		}
		if err != nil {
			r.err = fmt.Errorf("cluster.mjs failed: %v\nstdout: %s\nstderr: %s", err, stdout.String(), lastLines(stderrAll.String(), 40))
		}
		if !editing {
			close(r.editing)
		}
	}()
	return r
}

func (r *clusterRun) wait(t *testing.T) map[string]any {
	t.Helper()
	<-r.done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.res
}

// checkStoredHeads checks that st has, for every document of a
// cluster.mjs result, exactly the heads the clients reached.
func checkStoredHeads(t *testing.T, st hub.Store, res map[string]any) {
	t.Helper()
	docs, _ := res["docs"].([]any)
	if len(docs) == 0 {
		t.Fatalf("no documents in result %v", res)
	}
	for _, d := range docs {
		dm := d.(map[string]any)
		id, err := protocol.ParseDocumentID(str(t, dm, "url"))
		if err != nil {
			t.Fatal(err)
		}
		want := heads(t, dm)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sd, err := st.LoadDoc(ctx, id)
		cancel()
		if err != nil {
			t.Fatalf("stored %s: %v", id, err)
		}
		got := storedHeads(t, sd)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("document %s: stored heads %v, clients have %v: a change is missing from storage", id, got, want)
		}
	}
}

// storedHeads returns the heads of a stored document. The engine orders
// the changes: after Redis restarted empty a batch may hold changes whose
// dependencies were stored again later. A change whose dependencies are
// missing altogether fails the test.
func storedHeads(t *testing.T, sd hub.StoredDoc) []string {
	t.Helper()
	raws, err := sd.Changes()
	if err != nil {
		t.Fatalf("stored changes: %v", err)
	}
	eng := syncengine.New(syncengine.Options{})
	if _, err := eng.AddChanges(nil, raws...); err != nil {
		t.Fatalf("stored changes: %v", err)
	}
	if n := eng.Queued(); n > 0 {
		t.Fatalf("%d stored changes lack their dependencies in storage", n)
	}
	var got []string
	for _, h := range eng.Heads() {
		got = append(got, protocol.EncodeHead(h))
	}
	slices.Sort(got)
	return got
}

// metricSum sums the samples of every metric whose line starts with prefix
// on every node's /metrics.
func metricSum(t *testing.T, nodes []*testNode, prefix string) float64 {
	t.Helper()
	var sum float64
	for _, n := range nodes {
		body, code := httpGet(t, n.HTTP+"/metrics", nil)
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, prefix) {
				f := strings.Fields(line)
				v, err := strconv.ParseFloat(f[len(f)-1], 64)
				if err == nil {
					sum += v
				}
			}
		}
	}
	return sum
}

func TestClusterJSClientsOnThreeNodesConverge(t *testing.T) {
	requireJS(t)
	srv := redistest.Start(t, redistest.Options{})
	nodes := startClusterNodes(t, srv.URL(), 3)
	res := startClusterJS(t, wsURLs(nodes), "--docs", "3", "--clients", "2", "--edits", "20", "--interval-ms", "20").wait(t)
	t.Logf("6 clients on 3 nodes, 3 docs x 20 edits each: edits %vms, converged %vms after", res["editMs"], res["convergeMs"])
	checkStoredHeads(t, nodes[0].be.store, res)
	if got := metricSum(t, nodes, "plait_changes_remote_total"); got == 0 {
		t.Fatal("no node applied another node's changes")
	}
}

// TestClusterRedisFaults injects a Redis fault while clients on three nodes
// stream edits: every client and node converges, nothing is lost, and the
// recovery shows in the metrics.
func TestClusterRedisFaults(t *testing.T) {
	requireJS(t)
	for _, tc := range []struct {
		name    string
		persist bool
		fault   func(t *testing.T, srv *redistest.Server)
		metric  string
	}{
		{"ClientKillPubsub", false, func(t *testing.T, srv *redistest.Server) {
			n, err := srv.Client(t).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
			if err != nil || n == 0 {
				t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v", n, err)
			}
		}, "plait_broker_resubscribed_total"},
		{"Restart", true, func(t *testing.T, srv *redistest.Server) {
			srv.Restart(false)
		}, "plait_broker_reconnects_total"},
		{"DebugSleep", false, func(t *testing.T, srv *redistest.Server) {
			// A read timeout longer than the sleep: go-redis's default (3 s) would
			// give up on the reply.
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 15 * time.Second})
			defer c.Close()
			if err := c.Do(context.Background(), "DEBUG", "SLEEP", "5").Err(); err != nil {
				t.Fatalf("DEBUG SLEEP: %v", err)
			}
		}, "plait_broker_probe_failures_total"},
		{"RestartEmpty", false, func(t *testing.T, srv *redistest.Server) {
			srv.Restart(true)
		}, `plait_broker_recoveries_total{source="store"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{Persist: tc.persist})
			nodes := startClusterNodes(t, srv.URL(), 3)
			run := startClusterJS(t, wsURLs(nodes), "--docs", "2", "--clients", "1", "--edits", "40", "--interval-ms", "100")
			<-run.editing
			// Some edits are through before the fault (40 in all, 10/s per client).
			base := metricSum(t, nodes, "plait_changes_accepted_total")
			for deadline := time.Now().Add(20 * time.Second); metricSum(t, nodes, "plait_changes_accepted_total") < base+10; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("no edits reached the nodes before the fault")
				}
			}
			tc.fault(t, srv)
			res := run.wait(t)
			t.Logf("%s: edits %vms, converged %vms after; reconnects %v", tc.name, res["editMs"], res["convergeMs"], res["reconnects"])
			checkStoredHeads(t, nodes[0].be.store, res)
			if got := metricSum(t, nodes, strings.TrimSuffix(tc.metric, "")); got == 0 {
				t.Fatalf("%s is 0 on every node after the fault", tc.metric)
			}
			t.Logf("recoveries: %v from the log, %v from the store", metricSum(t, nodes, `plait_broker_recoveries_total{source="log"`), metricSum(t, nodes, `plait_broker_recoveries_total{source="store"`))
		})
	}
}
