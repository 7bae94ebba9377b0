package node

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"path"
	"strings"
	"sync"

	"github.com/gofiber/fiber/v2"
)

// The web app (webclient/dist, embedded in the binary) is served at /:
// index.html, the service worker and the manifest at the root scope,
// content-hashed files under /assets/.
//
// Caching: hashed assets are immutable for a year; index.html and sw.js
// are never stored by HTTP caches (a new version must reach the service
// worker's update check at once); other root files revalidate by ETag.
// Compressible files are gzipped once, on first request, and kept.

// webCSP is the Content-Security-Policy of every page and file: scripts,
// styles and connections only from this node, the Automerge wasm allowed
// to compile, no inline script or style attribute, no framing.
const webCSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type staticFile struct {
	name  string
	ctype string
	cache string
	etag  string
	body  []byte

	gzOnce sync.Once
	gz     []byte // nil: not worth compressing
}

// staticSite is the embedded app, indexed on first use (most nodes in
// tests never serve it). Safe for concurrent use.
type staticSite struct {
	fsys  fs.FS
	once  sync.Once
	err   error
	files map[string]*staticFile // by path without the leading slash
}

func newStaticSite(fsys fs.FS) *staticSite { return &staticSite{fsys: fsys} }

// load reads and indexes every file once.
func (s *staticSite) load() error {
	s.once.Do(func() { s.files, s.err = readSite(s.fsys) })
	return s.err
}

func readSite(fsys fs.FS) (map[string]*staticFile, error) {
	files := map[string]*staticFile{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		f := &staticFile{name: p, body: b, ctype: contentType(p), etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		switch {
		case strings.HasPrefix(p, "assets/"):
			f.cache = "public, max-age=31536000, immutable"
		case p == "index.html" || p == "sw.js":
			f.cache = "no-store"
		default:
			f.cache = "no-cache"
		}
		files[p] = f
		return nil
	})
	return files, err
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".wasm":
		return "application/wasm"
	case ".webmanifest":
		return "application/manifest+json"
	case ".json":
		return "application/json"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	case ".ico":
		return "image/x-icon"
	case ".txt":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

// gzipped returns the gzip form of f, or nil when it does not pay.
func (f *staticFile) gzipped() []byte {
	f.gzOnce.Do(func() {
		if strings.HasPrefix(f.ctype, "image/png") || len(f.body) < 512 {
			return
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(f.body)
		_ = zw.Close()
		if buf.Len() < len(f.body)*9/10 {
			f.gz = buf.Bytes()
		}
	})
	return f.gz
}

// handle serves GET and HEAD of the app's files; anything else under /
// that is not a file of the app is 404.
func (s *staticSite) handle(c *fiber.Ctx) error {
	if err := s.load(); err != nil {
		return fiber.NewError(fiber.StatusInternalServerError, "the web app is missing from this build")
	}
	p := strings.TrimPrefix(c.Path(), "/")
	if p == "" {
		p = "index.html"
	}
	f, ok := s.files[p]
	if !ok {
		return fiber.NewError(fiber.StatusNotFound, "not found")
	}
	c.Set(fiber.HeaderContentSecurityPolicy, webCSP)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderReferrerPolicy, "same-origin")
	c.Set(fiber.HeaderXFrameOptions, "DENY")
	c.Set("Cross-Origin-Opener-Policy", "same-origin")
	c.Set(fiber.HeaderCacheControl, f.cache)
	c.Set(fiber.HeaderETag, f.etag)
	c.Set(fiber.HeaderVary, fiber.HeaderAcceptEncoding)
	c.Set(fiber.HeaderContentType, f.ctype)
	if inm := c.Get(fiber.HeaderIfNoneMatch); inm != "" && f.cache != "no-store" && etagMatch(inm, f.etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	body := f.body
	if strings.Contains(c.Get(fiber.HeaderAcceptEncoding), "gzip") {
		if gz := f.gzipped(); gz != nil {
			body = gz
			c.Set(fiber.HeaderContentEncoding, "gzip")
		}
	}
	return c.Send(body) // HEAD: fasthttp sends the headers only
}

func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(t), "W/"))
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}
