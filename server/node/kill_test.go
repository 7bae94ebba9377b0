package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plaithub/plait/hub/redisstore"
	"github.com/plaithub/plait/hub/redistest"
)

// TestClusterNodeSIGKILL runs three node processes on one Redis behind
// haproxy, streams edits from real automerge-repo clients through haproxy,
// and SIGKILLs the busiest node mid-stream: no drain, no goodbye. Its clients
// must reconnect through haproxy to the survivors, every client must end with
// every edit, and Redis must hold exactly the heads the clients reached.
func TestClusterNodeSIGKILL(t *testing.T) {
	requireJS(t)
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatalf("haproxy is not installed (make deps installs it, or: apt-get install haproxy): %v", err)
	}
	bin := buildPlait(t)
	start := time.Now()
	srv := redistest.Start(t, redistest.Options{Persist: true})

	var nodes []*procNode
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startReadyProcNode(t, bin, fmt.Sprintf("node%d", i), srv.URL()))
	}
	lb := startHAProxy(t, nodes)
	t.Logf("redis, 3 nodes and haproxy up in %s", time.Since(start).Round(time.Millisecond))

	ws := lb + "/ws"
	run := startClusterJS(t, strings.Join([]string{ws, ws, ws}, ","),
		"--clients", "2", "--docs", "2", "--edits", "40", "--interval-ms", "100")
	select {
	case <-run.editing:
	case <-time.After(60 * time.Second):
		t.Fatal("cluster.mjs did not start editing within 60s")
	}
	select {
	case <-run.done: // it failed before the stream; wait reports why
		run.wait(t)
		t.Fatal("cluster.mjs ended before the node was killed")
	case <-time.After(1500 * time.Millisecond):
	}

	victim, counts := busiestNode(t, nodes)
	if counts[victim] == 0 {
		t.Fatalf("no node holds a client connection: %v", counts)
	}
	t.Logf("connections per node %v: SIGKILL %s", counts, nodes[victim].name)
	nodes[victim].kill(t)

	res := run.wait(t)
	t.Logf("edits %vms, converged %vms after; reconnects %v", res["editMs"], res["convergeMs"], res["reconnects"])
	reconnects := 0.0
	if m, ok := res["reconnects"].(map[string]any); ok {
		for _, v := range m {
			f, _ := v.(float64)
			reconnects += f
		}
	}
	if reconnects < counts[victim] {
		t.Errorf("%v client reconnects, but the killed node held %v connections", reconnects, counts[victim])
	}

	client := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	store, err := redisstore.New(ctx, client, redisstore.Options{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	checkStoredHeads(t, store, res)

	var alive []string
	for i, n := range nodes {
		if i != victim {
			alive = append(alive, n.http)
		}
	}
	if got := metricSumURLs(t, alive, "plait_changes_remote_total"); got == 0 {
		t.Error("no surviving node applied another node's changes")
	}
	t.Logf("total (build excluded) %s", time.Since(start).Round(time.Millisecond))
}

// buildPlait builds the node binary into a temporary directory (cached by
// the go build cache after `make build` or an earlier run).
func buildPlait(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "plait")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./server")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./server: %v\n%s", err, out)
	}
	t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// procNode is a node running as its own process.
type procNode struct {
	name string
	http string // http://127.0.0.1:port
	addr string // 127.0.0.1:port
	log  string // its stderr
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// startProcNode starts a node process; t.Cleanup stops it (SIGTERM, then
// SIGKILL) and, if the test failed, shows the end of its log.
func startProcNode(t *testing.T, bin, name, redisURL string) *procNode {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	n := &procNode{name: name, addr: addr, http: "http://" + addr, log: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	f, err := os.Create(n.log)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, "--addr", addr, "--redis-url", redisURL, "--idle-doc-timeout", "5s", "--shutdown-timeout", "5s", "--log-level", "debug")
	n.cmd.Env = cleanPlaitEnv()
	n.cmd.Stdout, n.cmd.Stderr = f, f
	if err := n.cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = n.cmd.Wait(); _ = f.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(n.log)
			t.Logf("%s log (last lines):\n%s", name, lastLines(string(b), 25))
		}
	})
	return n
}

// startReadyProcNode starts a node process and waits until it is ready.
// The free port it picks can be taken by another test's server before the
// node binds it (tests of other packages run at the same time): then it
// starts again on another port, up to three times.
func startReadyProcNode(t *testing.T, bin, name, redisURL string) *procNode {
	t.Helper()
	for attempt := 1; ; attempt++ {
		n := startProcNode(t, bin, name, redisURL)
		deadline := time.Now().Add(15 * time.Second)
		for !n.exited() && time.Now().Before(deadline) && !n.ready() {
			time.Sleep(50 * time.Millisecond)
		}
		if n.exited() && attempt < 3 {
			if b, _ := os.ReadFile(n.log); strings.Contains(string(b), "address already in use") {
				t.Logf("%s: %s was taken before the node bound it; another port", name, n.addr)
				continue
			}
		}
		n.waitReady(t, time.Until(deadline)+time.Second)
		return n
	}
}

func (n *procNode) ready() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(n.http + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// cleanPlaitEnv is the test's environment without PLAIT_* variables, so the
// developer's settings cannot change the nodes.
func cleanPlaitEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PLAIT_") {
			env = append(env, kv)
		}
	}
	return env
}

func (n *procNode) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func (n *procNode) waitReady(t *testing.T, d time.Duration) {
	t.Helper()
	c := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(d)
	for {
		if n.exited() {
			b, _ := os.ReadFile(n.log)
			t.Fatalf("%s exited at start (%v):\n%s", n.name, n.cmd.ProcessState, lastLines(string(b), 25))
		}
		resp, err := c.Get(n.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %s: %v", n.name, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *procNode) kill(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s: %v", n.name, err)
	}
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after SIGKILL", n.name)
	}
}

// stop ends the process (if still running): SIGTERM, then SIGKILL after 10s.
func (n *procNode) stop(t *testing.T) {
	if n.exited() {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
		return
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not exit within 10s of SIGTERM; killing it", n.name)
	}
	_ = n.cmd.Process.Kill()
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		t.Errorf("%s did not exit after SIGKILL", n.name)
	}
}

// startHAProxy starts haproxy in front of nodes on a free loopback port and
// returns its ws://host:port base URL once it routes /readyz to a node.
func startHAProxy(t *testing.T, nodes []*procNode) string {
	t.Helper()
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	var b strings.Builder
	fmt.Fprintf(&b, `global
    log stderr format raw local0 info
    maxconn 1000

defaults
    mode http
    log global
    option httplog
    option redispatch
    retries 3
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    timeout client-fin 5s

frontend plait
    bind %s
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1
`, addr)
	for _, n := range nodes {
		fmt.Fprintf(&b, "    server %s %s check\n", n.name, n.addr)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-q", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, b.String())
	}
	logPath := filepath.Join(dir, "haproxy.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("haproxy", "-f", cfg, "-db")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					t.Errorf("haproxy did not exit after SIGKILL")
				}
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("haproxy log (last lines):\n%s", lastLines(string(b), 40))
		}
	})

	c := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("haproxy exited at start:\n%s", b)
		default:
		}
		resp, err := c.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return "ws://" + addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy on %s does not reach a node: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeLoopbackPort returns a loopback TCP port that was free a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// busiestNode returns the index of the node with the most open client
// connections (plait_connections), and every node's count.
func busiestNode(t *testing.T, nodes []*procNode) (int, []float64) {
	t.Helper()
	counts := make([]float64, len(nodes))
	best := 0
	for i, n := range nodes {
		counts[i] = metricSumURLs(t, []string{n.http}, "plait_connections")
		if counts[i] > counts[best] {
			best = i
		}
	}
	return best, counts
}

// metricSumURLs sums the samples of metric name (any labels) on the
// /metrics of every base URL. A name with a '{' matches as a line prefix, as
// in metricSum; otherwise the name must match exactly (plait_connections is
// not plait_connections_total).
func metricSumURLs(t *testing.T, urls []string, name string) float64 {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	var sum float64
	for _, u := range urls {
		resp, err := c.Get(u + "/metrics")
		if err != nil {
			t.Fatalf("GET %s/metrics: %v", u, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s/metrics: %d %v", u, resp.StatusCode, err)
		}
		for _, line := range strings.Split(string(body), "\n") {
			if !strings.HasPrefix(line, name) {
				continue
			}
			if rest := line[len(name):]; !strings.Contains(name, "{") && !strings.HasPrefix(rest, " ") && !strings.HasPrefix(rest, "{") {
				continue // another metric whose name starts with name
			}
			f := strings.Fields(line)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}
