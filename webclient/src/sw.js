// Plait's service worker: precaches the app shell so the app opens with
// the network off. The build (vite.config.ts) replaces the two constants
// below with the list of built files and a hash of their contents.
/* global self, caches */
const VERSION = "__PLAIT_VERSION__"
const PRECACHE = __PLAIT_PRECACHE__
const CACHE = "plait-shell-" + VERSION

self.addEventListener("install", event => {
  // Hashed assets may come from the HTTP cache (the page just loaded
  // them: immutable); the rest is fetched fresh.
  const req = p => new Request(p, { cache: p.startsWith("/assets/") ? "default" : "reload" })
  event.waitUntil(caches.open(CACHE).then(c => c.addAll(PRECACHE.map(req))))
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
