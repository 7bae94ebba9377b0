package node

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestStaticApp: the node serves the embedded web app at / with a strict
// CSP, immutable hashed assets, index.html and the service worker never
// cached, gzip, ETags, a valid manifest, and 404 for anything else.
func TestStaticApp(t *testing.T) {
	n := startNode(t, t.TempDir())
	get := func(path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, n.HTTP+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		tr := &http.Transport{DisableCompression: true}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}

	res, index := get("/")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", "object-src 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("index.html Cache-Control %q, want no-store", cc)
	}
	if res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no nosniff")
	}

	// Every asset index.html names is served, hashed and immutable.
	assets := regexp.MustCompile(`/assets/[^"]+`).FindAllString(string(index), -1)
	if len(assets) < 2 {
		t.Fatalf("index.html names %d assets: %s", len(assets), index)
	}
	for _, a := range assets {
		res, body := get(a, "Accept-Encoding", "gzip")
		if res.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("%s: %d", a, res.StatusCode)
		}
		if cc := res.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") || !strings.Contains(cc, "max-age=31536000") {
			t.Errorf("%s Cache-Control %q", a, cc)
		}
		if strings.HasSuffix(a, ".js") {
			if res.Header.Get("Content-Encoding") != "gzip" {
				t.Errorf("%s not gzipped", a)
			}
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil || len(plain) <= len(body) {
				t.Fatalf("%s: gunzip %d -> %d bytes: %v", a, len(body), len(plain), err)
			}
			if res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
				t.Errorf("%s type %q", a, res.Header.Get("Content-Type"))
			}
		}
		// Revalidation by ETag.
		if res2, _ := get(a, "If-None-Match", res.Header.Get("ETag")); res2.StatusCode != http.StatusNotModified {
			t.Errorf("%s with its ETag: %d, want 304", a, res2.StatusCode)
		}
	}

	res, sw := get("/sw.js")
	if res.StatusCode != 200 || res.Header.Get("Cache-Control") != "no-store" || !bytes.Contains(sw, []byte("PRECACHE")) {
		t.Fatalf("/sw.js: %d %q", res.StatusCode, res.Header.Get("Cache-Control"))
	}
	if bytes.Contains(sw, []byte("__PLAIT_PRECACHE__")) {
		t.Fatal("sw.js was not filled in by the build")
	}

	res, mb := get("/manifest.webmanifest")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/manifest+json" {
		t.Fatalf("manifest: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var m struct {
		Icons []struct{ Src, Sizes, Type string }
	}
	var raw map[string]any
	if err := json.Unmarshal(mb, &raw); err != nil {
		t.Fatalf("manifest is not JSON: %v", err)
	}
	_ = json.Unmarshal(mb, &m)
	if raw["name"] == "" || raw["start_url"] != "/" || raw["display"] != "standalone" {
		t.Fatalf("manifest fields: %v", raw)
	}
	has512 := false
	for _, ic := range m.Icons {
		r, body := get(ic.Src)
		if r.StatusCode != 200 || len(body) == 0 {
			t.Errorf("icon %s: %d", ic.Src, r.StatusCode)
		}
		if ic.Sizes == "512x512" && ic.Type == "image/png" {
			has512 = true
		}
	}
	if !has512 {
		t.Error("manifest has no 512x512 PNG icon")
	}

	for _, p := range []string{"/nope", "/assets/nope.js", "/../go.mod", "/%2e%2e/go.mod", "/assets/"} {
		if r, _ := get(p); r.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, r.StatusCode)
		}
	}
	// The node's own routes are not shadowed by the app.
	if r, _ := get("/healthz"); r.StatusCode != 200 {
		t.Errorf("/healthz: %d", r.StatusCode)
	}
	if r, body := get("/auth/providers"); r.StatusCode != 200 || !bytes.Contains(body, []byte(`"login":false`)) {
		t.Errorf("/auth/providers on an anonymous node: %d %s", r.StatusCode, body)
	}
}
