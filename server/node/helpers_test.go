package node

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
)

type testNode struct {
	*Node
	URL  string // ws://127.0.0.1:port/ws
	HTTP string // http://127.0.0.1:port
	done chan error
	t    *testing.T
}

// startNode starts a real node on a random loopback port with its store in
// dir; it is stopped at the end of the test unless stopped before.
func startNode(t *testing.T, dir string, mod ...func(*Config)) *testNode {
	t.Helper()
	cfg, err := ParseConfig([]string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--idle-doc-timeout", "2s",
		"--audit-log", filepath.Join(t.TempDir(), "audit.log")}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String() // the mods may need the port (public-url)
	for _, f := range mod {
		f(&cfg)
	}
	if cfg.Addr != ln.Addr().String() { // a mod chose the address
		_ = ln.Close()
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			t.Fatal(err)
		}
	}
	var logw io.Writer = io.Discard
	if os.Getenv("PLAIT_TEST_LOG") != "" {
		logw = os.Stderr
	}
	n, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	ln = wrapProxyListener(ln, cfg.TrustedProxies) // as listen does, under TLS
	if cfg.TLSCert != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln = tls.NewListener(ln, tc)
	}
	tn := &testNode{Node: n, URL: "ws://" + ln.Addr().String() + "/ws", HTTP: "http://" + ln.Addr().String(), done: make(chan error, 1), t: t}
	go func() { tn.done <- n.Serve(ln) }()
	t.Cleanup(tn.stop)
	return tn
}

func (tn *testNode) stop() {
	if tn.Node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := tn.Shutdown(ctx); err != nil {
		tn.t.Errorf("shutdown: %v", err)
	}
	select {
	case <-tn.done:
	case <-ctx.Done():
		tn.t.Errorf("serve did not return after shutdown")
	}
	tn.Node = nil
}

// newDoc makes an automerge document with one committed key.
func newDoc(t *testing.T, key, value string) *automerge.Doc {
	t.Helper()
	doc := automerge.New()
	if err := doc.RootMap().Set(key, value); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit("set " + key); err != nil {
		t.Fatal(err)
	}
	return doc
}

func getString(t *testing.T, doc *automerge.Doc, key string) string {
	t.Helper()
	v, err := doc.RootMap().Get(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := automerge.As[string](v)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return s
}

func httpGet(t *testing.T, url string, hdr map[string]string) (string, int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
