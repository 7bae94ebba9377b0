package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests drive the node with the real npm packages
// (@automerge/automerge-repo 2.5.6 + network-websocket, run by Node) through
// the scripts in testdata/js. `make deps` (part of `make test`) installs them.

const jsDir = "../testdata/js"

func requireJS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: the end-to-end tests need Node >= 20 (CI installs it)")
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "@automerge", "automerge-repo")); err != nil {
		t.Fatalf("JS test clients are not installed: run `make deps` (npm ci in server/testdata/js): %v", err)
	}
}

// runJS runs a script and returns its JSON result; it fails the test if the
// script fails.
func runJS(t *testing.T, script string, args ...string) map[string]any {
	t.Helper()
	res, err := tryJS(t, nil, script, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func tryJS(t *testing.T, stdin []byte, script string, args ...string) (map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "PLAIT_E2E_TIMEOUT_MS=40000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	start := time.Now()
	err := cmd.Run()
	var res map[string]any
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &res); jerr != nil && err == nil {
		err = fmt.Errorf("no JSON result: %v", jerr)
	}
	t.Logf("node %s %s: %s", script, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		return res, fmt.Errorf("node %s %q failed: %v\nstdout: %s\nstderr: %s", script, args, err, stdout.String(), lastLines(stderr.String(), 30))
	}
	return res, nil
}

func lastLines(s string, n int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func str(t *testing.T, m map[string]any, key string) string {
	t.Helper()
	v, ok := m[key].(string)
	if !ok {
		t.Fatalf("result has no string %q: %v", key, m)
	}
	return v
}

func heads(t *testing.T, m map[string]any) []string {
	t.Helper()
	raw, ok := m["heads"].([]any)
	if !ok || len(raw) == 0 {
		t.Fatalf("result has no heads: %v", m)
	}
	out := make([]string, len(raw))
	for i, h := range raw {
		out[i] = h.(string)
	}
	slices.Sort(out)
	return out
}

func headsJSON(t *testing.T, hs []string) string {
	b, err := json.Marshal(hs)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestJSClientsConverge: two automerge-repo clients edit one document
// concurrently and converge; a third finds it by URL; ephemeral messages
// reach the other peers.
func TestJSClientsConverge(t *testing.T) {
	requireJS(t)
	n := startNode(t, t.TempDir())
	res := runJS(t, "converge.mjs", n.URL, "--edits", "20")
	if res["ephemeralReceived"] != true {
		t.Fatalf("ephemeral not received: %v", res)
	}
	srv, _ := res["server"].(map[string]any)
	if srv["storageId"] != n.Hub().StorageID() || srv["peerId"] != n.Hub().PeerID() {
		t.Fatalf("clients saw server %v, want peer %s storage %s", srv, n.Hub().PeerID(), n.Hub().StorageID())
	}
	if len(heads(t, res)) == 0 {
		t.Fatal("no heads")
	}
}

// TestJSRestartLoadsFromStorage: a document created by one client is served
// to a fresh client by a restarted node from its store.
func TestJSRestartLoadsFromStorage(t *testing.T) {
	requireJS(t)
	dir := t.TempDir()
	n := startNode(t, dir)
	created := runJS(t, "create.mjs", n.URL)
	url, hs := str(t, created, "url"), heads(t, created)
	n.stop()

	n2 := startNode(t, dir)
	loaded := runJS(t, "load.mjs", n2.URL, url, headsJSON(t, hs))
	if got := heads(t, loaded); !slices.Equal(got, hs) {
		t.Fatalf("after restart heads %v, want %v", got, hs)
	}
	if fmt.Sprint(loaded["content"]) != fmt.Sprint(created["content"]) {
		t.Fatalf("after restart content %v, want %v", loaded["content"], created["content"])
	}
	// An unknown document is unavailable, not an error and not a hang.
	missing := runJS(t, "load.mjs", n2.URL, "automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu", "--expect-unavailable")
	if missing["unavailable"] != true {
		t.Fatalf("unknown document: %v", missing)
	}
}

// TestJSOfflineEditsConvergeBothWays: a client with storage edits while
// disconnected, another client edits online meanwhile; after the first
// reconnects both edits are everywhere.
func TestJSOfflineEditsConvergeBothWays(t *testing.T) {
	requireJS(t)
	n := startNode(t, t.TempDir())
	created := runJS(t, "create.mjs", n.URL)
	url := str(t, created, "url")
	dirO := t.TempDir()
	fetched := runJS(t, "offline.mjs", n.URL, dirO, "fetch", url)
	if fetched["syncStatePersisted"] != true {
		t.Fatalf("client did not persist its sync state with the server: %v", fetched)
	}
	runJS(t, "offline.mjs", "-", dirO, "edit-offline", url, "--tag", "O")
	runJS(t, "edit.mjs", n.URL, url, "X")
	synced := runJS(t, "offline.mjs", n.URL, dirO, "sync", url, "--expect-tags", "O,X")
	hs := heads(t, synced)
	// A fresh client sees both the offline and the online edits.
	loaded := runJS(t, "load.mjs", n.URL, url, headsJSON(t, hs))
	content := fmt.Sprint(loaded["content"])
	for _, tag := range []string{"O-0", "O-2", "X-0", "X-2"} {
		if !strings.Contains(content, tag) {
			t.Fatalf("fresh client misses %s: %s", tag, content)
		}
	}
	if resume, ok := synced["resume"].(map[string]any); ok {
		t.Logf("resume traffic: %v", resume)
	}
}

// TestJSReconnectAcrossRestart: one running client goes offline and edits;
// meanwhile another client edits online and the node restarts on the same
// address; the first client reconnects with the same peer id and both
// edits end up on both sides and in storage.
func TestJSReconnectAcrossRestart(t *testing.T) {
	requireJS(t)
	dir := t.TempDir()
	n := startNode(t, dir)
	addr := strings.TrimSuffix(strings.TrimPrefix(n.URL, "ws://"), "/ws")
	url := str(t, runJS(t, "create.mjs", n.URL), "url")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "offline.mjs", n.URL, t.TempDir(), "cycle", url, "--tag", "O", "--wait-stdin", "--expect-tags", "O,X")
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "PLAIT_E2E_TIMEOUT_MS=45000")
	stdin, _ := cmd.StdinPipe()
	stderr, _ := cmd.StderrPipe()
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var errLog strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		errLog.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "PHASE offline-edited") {
			break
		}
	}
	go func() {
		for sc.Scan() {
			errLog.WriteString(sc.Text() + "\n")
		}
	}()
	runJS(t, "edit.mjs", n.URL, url, "X")
	n.stop()
	startNode(t, dir, func(c *Config) { c.Addr = addr })
	stdin.Write([]byte("go\n"))
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("cycle client failed: %v\nstdout: %s\nstderr: %s", err, stdout.String(), lastLines(errLog.String(), 30))
	}
	var res map[string]any
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatal(err)
	}
	hs := heads(t, res)
	loaded := runJS(t, "load.mjs", "ws://"+addr+"/ws", url, headsJSON(t, hs))
	for _, tag := range []string{"O-0", "X-0"} {
		if !strings.Contains(fmt.Sprint(loaded["content"]), tag) {
			t.Fatalf("fresh client misses %s: %v", tag, loaded["content"])
		}
	}
}
