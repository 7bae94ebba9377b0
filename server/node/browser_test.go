package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/plaithub/plait/hub/redistest"
)

// The browser suite: the reference web app (webclient/), served by a real
// node, driven in Debian's headless Chromium by playwright-core through
// the scripts in webclient/test. `make deps` installs both (apt chromium,
// npm ci in webclient).

const webDir = "../../webclient"

func requireBrowser(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: the browser tests need Node >= 20 (CI installs it)")
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("Chromium is not installed at %s: run `make deps` (apt-get install chromium): %v", chromium, err)
	}
	if _, err := os.Stat(filepath.Join(webDir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("the browser test driver is not installed: run `make deps` (npm ci in webclient): %v", err)
	}
	return chromium
}

// runBrowser runs a browser script against base and returns its JSON
// result (the last line of its output).
func runBrowser(t *testing.T, script string, args ...string) map[string]any {
	t.Helper()
	chromium := requireBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join("test", script)}, args...)...)
	cmd.Dir = webDir
	cmd.Env = append(os.Environ(), "PLAIT_E2E_TIMEOUT_MS=30000", "CHROMIUM="+chromium)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.Output()
	t.Logf("node %s: %s", script, time.Since(start).Round(time.Millisecond))
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	if err != nil {
		t.Fatalf("node %s failed: %v\nstdout: %s\nstderr: %s", script, err, out, lastLines(stderr, 40))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("node %s: no JSON result: %v\n%s", script, err, out)
	}
	return res
}

// TestBrowserConverge: two people type into one document at once in two
// Chromium contexts; both end with the same text and checklist and each
// sees the other in presence; no console errors; the service worker runs.
func TestBrowserConverge(t *testing.T) {
	requireBrowser(t)
	n := startNode(t, t.TempDir())
	res := runBrowser(t, "converge.mjs", n.HTTP)
	if p, _ := res["presenceA"].(float64); p < 1 {
		t.Fatalf("A saw nobody in presence: %v", res)
	}
	if !strings.Contains(fmt.Sprint(res["text"]), "alpha") {
		t.Fatalf("result: %v", res)
	}
}

// TestBrowserOffline: one context edits offline and reloads offline (the
// service worker serves the shell, IndexedDB the document); the other
// edits meanwhile; back online both converge and are saved; closing a tab
// with unsaved changes asks first.
func TestBrowserOffline(t *testing.T) {
	requireBrowser(t)
	n := startNode(t, t.TempDir())
	res := runBrowser(t, "offline.mjs", n.HTTP)
	final, _ := res["final"].(map[string]any)
	if final["saved"] != "true" || !strings.Contains(fmt.Sprint(final["text"]), "offline edit from A") {
		t.Fatalf("final state: %v", res)
	}
	off, _ := res["afterReload"].(map[string]any)
	if off["saved"] != "false" || off["status"] != "offline" {
		t.Fatalf("after an offline reload: %v", off)
	}
}

// TestBrowserAuth: the real login flow against a local OpenID Connect
// provider in Chromium; an owner shares with a viewer through the share
// dialog; the viewer's editor is read-only and an edit forced through the
// library is refused by the node and never reaches the owner; two tabs of
// one user refreshing at once both stay signed in; revoking the viewer
// signs that tab out.
func TestBrowserAuth(t *testing.T) {
	requireBrowser(t)
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""), func(c *Config) { c.AdminUsers = []string{"oidc:admin"} })
	_, admin, _ := login(t, e, n, n, "admin")
	// The browser signs in as these, in this order.
	e.m.QueueUser(&mockoidc.MockUser{Subject: "owner", Email: "owner@example.com"})
	e.m.QueueUser(&mockoidc.MockUser{Subject: "viewer", Email: "viewer@example.com"})
	res := runBrowser(t, "auth.mjs", n.HTTP, admin)
	if res["owner"] != "oidc:owner" || res["viewer"] != "oidc:viewer" {
		t.Fatalf("result: %v", res)
	}
}

// TestBrowserCluster: two people on different nodes of a cluster (three
// nodes on one redis-server, behind haproxy) type into one document and
// converge.
func TestBrowserCluster(t *testing.T) {
	requireBrowser(t)
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("haproxy is not installed: run `make deps`")
	}
	srv := redistest.Start(t, redistest.Options{})
	nodes := startClusterNodes(t, srv.URL(), 3)
	var backends []*procNode
	for i, n := range nodes {
		addr := strings.TrimPrefix(n.HTTP, "http://")
		backends = append(backends, &procNode{name: fmt.Sprintf("n%d", i), addr: addr, http: n.HTTP})
	}
	front := strings.Replace(startHAProxy(t, backends), "ws://", "http://", 1)
	res := runBrowser(t, "converge.mjs", front, "--distinct-nodes")
	if res["nodeA"] == nil || res["nodeA"] == res["nodeB"] {
		t.Fatalf("the two browsers are not on different nodes: %v / %v", res["nodeA"], res["nodeB"])
	}
	t.Logf("browsers on nodes %v and %v converged", res["nodeA"], res["nodeB"])
}

// TestBrowserUpdate: a new version of the app (a service worker with
// another version, served by a proxy in front of the node once the script
// asks for it) takes over a page with edits the node has not stored; the
// edits survive the reload and reach the node afterwards.
func TestBrowserUpdate(t *testing.T) {
	requireBrowser(t)
	n := startNode(t, t.TempDir())
	target, err := url.Parse(n.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(res *http.Response) error {
		if res.Request.URL.Path != "/sw.js" || !next.Load() {
			return nil
		}
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil {
			return err
		}
		body = regexp.MustCompile(`const VERSION = "[^"]+"`).ReplaceAll(body, []byte(`const VERSION = "test-next-version"`))
		res.Body = io.NopCloser(bytes.NewReader(body))
		res.ContentLength = int64(len(body))
		res.Header.Set("Content-Length", strconv.Itoa(len(body)))
		res.Header.Del("Content-Encoding")
		res.Header.Del("Etag")
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /__plait_test/next-version", func(w http.ResponseWriter, _ *http.Request) {
		next.Store(true)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Accept-Encoding") // sw.js is rewritten as plain text
		proxy.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	res := runBrowser(t, "update.mjs", srv.URL)
	if fmt.Sprint(res["caches"]) != "[plait-shell-test-next-version]" {
		t.Fatalf("result: %v", res)
	}
}
