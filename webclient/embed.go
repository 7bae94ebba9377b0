// Package webclient holds Plait's browser library and reference PWA
// (TypeScript sources under src/) and embeds their built output, dist/,
// so the node serves the app with no npm step: `go run ./server` on a
// fresh clone serves it at /. `make webclient` rebuilds dist/ from the
// sources; CI fails when the committed dist/ differs from a fresh build.
package webclient

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

// Files returns the built app: index.html, sw.js and
// manifest.webmanifest at the root, hashed files under assets/. It is
// read-only and safe for concurrent use.
func Files() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic("webclient: dist missing from the embedded files: " + err.Error()) // cannot happen: checked at compile time
	}
	return sub
}
