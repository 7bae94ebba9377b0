package client_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The test harness of this package: the tests run the real Plait node,
// built once from ../../server (cached by the go build cache) and run as
// a process, one per test (startNode). Helpers that make clients and wait
// on them are in helpers_test.go.

var plaitBin string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" { // a child process of a kill test: no node
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "plait-client-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	plaitBin = filepath.Join(dir, "plait")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", plaitBin, "./server")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		cancel()
		fmt.Fprintf(os.Stderr, "go build ./server: %v\n%s", err, out)
		os.Exit(1)
	}
	cancel()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a running plait process.
type node struct {
	t       *testing.T
	port    int
	dataDir string
	cmd     *exec.Cmd
	done    chan struct{}
}

func (n *node) URL() string { return "ws://127.0.0.1:" + strconv.Itoa(n.port) + "/ws" }

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNode runs a node on a free port with a fresh data dir.
func startNode(t *testing.T) *node {
	n := &node{t: t, port: freePort(t), dataDir: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *node) start() {
	n.t.Helper()
	cmd := exec.Command(plaitBin, "--addr", "127.0.0.1:"+strconv.Itoa(n.port), "--data-dir", n.dataDir, "--idle-doc-timeout", "5s")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	logf, err := os.Create(filepath.Join(n.dataDir, "node.log"))
	if err != nil {
		n.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	done := n.done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(n.port) + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(n.dataDir, "node.log"))
			n.t.Fatalf("node not ready: %v\n%s", err, b)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits (SIGKILL after 10 s).
func (n *node) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(os.Interrupt)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
}
