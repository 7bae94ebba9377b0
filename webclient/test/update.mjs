// A new version of the app takes over without losing unsynced edits: the
// page has edits the node has not stored (its WebSocket is held shut), a
// new service worker appears (sw.js with another version), the page
// flushes to IndexedDB, lets the new worker take over and reloads; the
// edits are still there and reach the node once the socket may open.
// Usage: node test/update.mjs <base-url of the Go test's proxy>
import { main, newPage, sel, state, swActive, until } from "./lib.mjs"

const base = process.argv[2]
main(async browser => {
  const errors = []
  const a = await newPage(browser, base, { errors })
  let blockSocket = false
  await a.ctx.routeWebSocket(/\/ws$/, ws => {
    if (blockSocket) ws.close({ code: 1001, reason: "held shut by the test" })
    else ws.connectToServer()
  })
  await a.page.goto("/")
  await a.page.click(sel("new-doc"))
  await until("a doc url", () => a.page.url().includes("#automerge:"))
  const docId = decodeURIComponent(a.page.url().split("#")[1])
  await a.page.locator(sel("editor")).focus()
  await a.page.keyboard.type("saved part\n")
  await until("saved", async () => (await state(a.page)).saved === "true")
  await swActive(a.page)
  await until("controlled", () => a.page.evaluate(() => !!navigator.serviceWorker.controller))
  const oldWorker = await a.page.evaluate(() => navigator.serviceWorker.controller.scriptURL)

  // Hold the socket shut and edit: these changes are not on the node.
  blockSocket = true
  await a.page.evaluate(() => window.plait.repo.networkSubsystem.adapters[0].socket?.close())
  await until("not online", async () => (await state(a.page)).status !== "online")
  await a.page.keyboard.type("unsynced part\n")
  await until("pending", async () => (await state(a.page)).pending > 0)

  // A new version appears; the page hands over and reloads by itself.
  // The test's proxy in front of the node serves sw.js with another version from now on.
  const r = await fetch(base + "/__plait_test/next-version", { method: "POST" })
  if (!r.ok) throw new Error(`the test proxy did not switch versions: ${r.status}`)
  const reloaded = a.page.waitForEvent("load", { timeout: 30000 })
  await a.page.evaluate(() => navigator.serviceWorker.getRegistration().then(r => r.update()))
  await reloaded
  await until("the edit survived the update", async () => (await state(a.page)).text === "saved part\nunsynced part\n")
  const version = await a.page.evaluate(async () => {
    const keys = await caches.keys()
    return keys.filter(k => k.startsWith("plait-shell-"))
  })
  if (version.length !== 1 || version[0] !== "plait-shell-test-next-version") throw new Error(`caches after the update: ${version}`)
  const s = await until("still pending after the update", async () => {
    const s = await state(a.page)
    return s.saved === "false" && s.pending > 0 ? s : null
  })

  // The socket may open again: the edit reaches the node.
  blockSocket = false
  await until("saved after the update", async () => (await state(a.page)).saved === "true")
  const b = await newPage(browser, base, { errors })
  await b.page.goto("/#" + docId)
  await until("another browser sees it", async () => (await state(b.page)).text === "saved part\nunsynced part\n")
  const real = errors.filter(e => !/WebSocket|held shut/.test(e))
  if (real.length) throw new Error("console errors:\n" + real.join("\n"))
  return { docId, oldWorker, caches: version, pendingAfterUpdate: s.pending }
})
