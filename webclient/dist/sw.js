// Plait's service worker: precaches the app shell so the app opens with
// the network off. The build (vite.config.ts) replaces the two constants
// below with the list of built files and a hash of their contents.
/* global self, caches */
const VERSION = "fd839955efe3dee6"
const PRECACHE = ["/","/index.html","/assets/automerge-LjMxZKTS.wasm","/assets/index-8E9MMx2L.js","/assets/index-B0B3mrDp.css","/manifest.webmanifest","/icon.svg","/icon-192.png","/icon-512.png"]
const CACHE = "plait-shell-" + VERSION

self.addEventListener("install", event => {
  event.waitUntil(caches.open(CACHE).then(c => c.addAll(PRECACHE.map(p => new Request(p, { cache: "reload" })))))
})

self.addEventListener("activate", event => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith("plait-shell-") && name !== CACHE) await caches.delete(name)
      }
      await self.clients.claim()
    })(),
  )
})

// The page tells a waiting new version to take over once its unsynced
// edits are flushed to IndexedDB.
self.addEventListener("message", event => {
  if (event.data === "skip-waiting") self.skipWaiting()
})

self.addEventListener("fetch", event => {
  const req = event.request
  if (req.method !== "GET") return
  const url = new URL(req.url)
  if (url.origin !== self.location.origin) return
  // The node's API, login, WebSocket and probes always go to the network.
  if (/^\/(api|auth|ws|metrics|healthz|readyz)(\/|$)/.test(url.pathname)) return
  if (req.mode === "navigate") {
    // The shell: the network when it answers, else the cached copy.
    event.respondWith(
      (async () => {
        try {
          const res = await fetch(req)
          if (res.ok) return res
          return (await caches.match("/index.html", { cacheName: CACHE })) ?? res
        } catch {
          const cached = await caches.match("/index.html", { cacheName: CACHE })
          if (cached) return cached
          throw new Error("offline and no cached shell")
        }
      })(),
    )
    return
  }
  // Hashed assets never change: the cache first.
  event.respondWith(
    (async () => {
      const cached = await caches.match(req, { cacheName: CACHE })
      return cached ?? fetch(req)
    })(),
  )
})
