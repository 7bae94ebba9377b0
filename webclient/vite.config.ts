import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { defineConfig, type Plugin } from "vite"

// serviceWorker emits /sw.js with the list of every built file to
// precache and a version that is a hash of their contents: the same
// sources always give the same bytes (CI compares a fresh build with the
// committed one).
function serviceWorker(): Plugin {
  return {
    name: "plait-service-worker",
    apply: "build",
    generateBundle(_opts, bundle) {
      const files = Object.keys(bundle)
        .filter(f => !f.endsWith(".map"))
        .sort()
      const publicFiles = ["manifest.webmanifest", "icon.svg", "icon-192.png", "icon-512.png"]
      const h = createHash("sha256")
      for (const f of files) {
        const item = bundle[f]
        h.update(f)
        h.update(item.type === "chunk" ? item.code : item.source)
      }
      for (const f of publicFiles) {
        h.update(f)
        h.update(readFileSync(new URL("./public/" + f, import.meta.url)))
      }
      const precache = ["/", "/index.html", ...[...files, ...publicFiles].filter(f => f !== "index.html").map(f => "/" + f)]
      const src = readFileSync(new URL("./src/sw.js", import.meta.url), "utf8")
        .replace("__PLAIT_VERSION__", h.digest("hex").slice(0, 16))
        .replace("__PLAIT_PRECACHE__", JSON.stringify(precache))
      this.emitFile({ type: "asset", fileName: "sw.js", source: src })
    },
  }
}

export default defineConfig({
  base: "/",
  plugins: [serviceWorker()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
})
