// Offline first: A goes offline, edits, reloads while still offline (the
// shell comes from the service worker, the document from IndexedDB, the
// edit is still there); B edits meanwhile; back online both converge with
// every edit. `saved` is false while offline and true after. Closing a tab
// with unsaved changes asks first (beforeunload).
// Usage: node test/offline.mjs <base-url>
import { main, newPage, sel, state, swActive, until } from "./lib.mjs"

const base = process.argv[2]
main(async browser => {
  const errors = []
  const a = await newPage(browser, base, { errors })
  const b = await newPage(browser, base, { errors })
  const dialogs = []
  a.page.on("dialog", d => {
    dialogs.push(d.type())
    d.accept().catch(() => {}) // the page may close first (beforeunload on close)
  })
  await a.page.goto("/")
  await a.page.click(sel("new-doc"))
  await until("a doc url", () => a.page.url().includes("#automerge:"))
  const docId = decodeURIComponent(a.page.url().split("#")[1])
  await a.page.locator(sel("editor")).focus()
  await a.page.keyboard.type("base line\n")
  await b.page.goto("/#" + docId)
  await until("both saved", async () => {
    const [sa, sb] = [await state(a.page), await state(b.page)]
    return sa.saved === "true" && sb.text === "base line\n" && sb.saved === "true"
  })
  await swActive(a.page)
  await until("page controlled by the worker", () => a.page.evaluate(() => !!navigator.serviceWorker.controller))

  // Offline edits on A, and a reload while offline.
  await a.ctx.setOffline(true)
  await until("a offline", async () => (await state(a.page)).status === "offline")
  await a.page.locator(sel("editor")).focus()
  await a.page.keyboard.press("Control+End")
  await a.page.keyboard.type("offline edit from A\n")
  await a.page.click(sel("checklist-add"))
  await a.page.keyboard.type("offline item")
  const whileOffline = await until("a unsaved", async () => {
    const s = await state(a.page)
    return s.saved === "false" && s.pending > 0 && s.checklist[0]?.text === "offline item" ? s : null
  })
  await new Promise(r => setTimeout(r, 600)) // past automerge-repo's save debounce (100 ms)
  await a.page.reload()
  const afterReload = await until("a reloaded offline with the edit", async () => {
    const s = await state(a.page)
    return s.text?.includes("offline edit from A") && s.checklist[0]?.text === "offline item" && s.pending > 0 ? s : null
  })
  if (afterReload.status !== "offline" || afterReload.saved !== "false") {
    throw new Error(`after an offline reload: ${JSON.stringify(afterReload)}`)
  }

  // B edits meanwhile.
  await b.page.locator(sel("editor")).focus()
  await b.page.keyboard.press("Control+Home")
  await b.page.keyboard.type("B was here. ")
  await until("b saved", async () => (await state(b.page)).saved === "true")

  // Back online: both converge with every edit.
  await a.ctx.setOffline(false)
  const [sa, sb] = await until("converged after reconnect", async () => {
    const [sa, sb] = [await state(a.page), await state(b.page)]
    globalThis.__last = [sa, sb]
    return sa.text === sb.text && sa.saved === "true" && sb.saved === "true" && JSON.stringify(sa.checklist) === JSON.stringify(sb.checklist) && sa.status === "online"
      ? [sa, sb]
      : null
  })
  const want = "B was here. base line\noffline edit from A\n"
  if (sa.text !== want) throw new Error(`text ${JSON.stringify(sa.text)}, want ${JSON.stringify(want)}`)
  if (sb.checklist[0]?.text !== "offline item") throw new Error(`b checklist ${JSON.stringify(sb.checklist)}`)

  // Unsaved changes: closing the tab asks first.
  await a.ctx.setOffline(true)
  await until("a offline again", async () => (await state(a.page)).status === "offline")
  await a.page.locator(sel("editor")).focus()
  await a.page.keyboard.type("x")
  await until("pending", async () => (await state(a.page)).pending > 0)
  await a.page.close({ runBeforeUnload: true })
  await until("beforeunload dialog", () => dialogs.includes("beforeunload"))
  // Going offline makes Chromium log failed requests; anything else is a bug.
  const real = errors.filter(e => !/ERR_INTERNET_DISCONNECTED|net::ERR_/.test(e))
  if (real.length) throw new Error("console errors:\n" + real.join("\n"))
  return { docId, offline: whileOffline, afterReload, final: sa, dialogs }
})
