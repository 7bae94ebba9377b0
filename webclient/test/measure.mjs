// Measurements for docs/webclient.md, and screenshots. Not part of
// `make test` (numbers, not pass/fail). Run against a node:
//   node test/measure.mjs http://127.0.0.1:8080 [--shots ../docs/img] [--changes 10000]
import { launch, newPage, sel, state, swActive, until } from "./lib.mjs"

const base = process.argv[2]
const arg = (name, d) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : d
}
const shots = arg("--shots", "")
const nChanges = Number(arg("--changes", "10000"))

// transferred records the bytes on the wire (headers + gzipped bodies) of
// the page's own requests, per kind; the service worker's precache
// requests are counted apart (sw).
function transferred(ctx) {
  const out = { js: 0, wasm: 0, css: 0, html: 0, other: 0, sw: 0, requests: 0 }
  const pending = []
  ctx.on("requestfinished", req => {
    pending.push(
      req.sizes().then(s => {
        const bytes = s.responseBodySize + s.responseHeadersSize
        const u = new URL(req.url())
        if (req.serviceWorker()) {
          out.sw += bytes
          return
        }
        const kind = u.pathname.endsWith(".js") ? "js" : u.pathname.endsWith(".wasm") ? "wasm" : u.pathname.endsWith(".css") ? "css" : req.resourceType() === "document" ? "html" : "other"
        out[kind] += bytes
        out.requests++
      }, () => {}),
    )
  })
  return { out, settle: () => Promise.all(pending).then(() => ({ ...out })) }
}

async function usableAt(page, wantText) {
  await until("editor usable", async () => {
    const s = await state(page)
    return s.text === wantText && (await page.locator(sel("editor")).getAttribute("readonly")) === null
  })
  return page.evaluate(() => Math.round(performance.now()))
}

const browser = await launch()
try {
  const result = {}
  // A document to open.
  const seed = await newPage(browser, base)
  await seed.page.goto("/")
  await seed.page.click(sel("new-doc"))
  await until("doc", () => seed.page.url().includes("#automerge:"))
  const docId = decodeURIComponent(seed.page.url().split("#")[1])
  await seed.page.locator(sel("editor")).focus()
  const text = "Trip to the coast\nPack light. Leave on Friday morning, back on Sunday.\n"
  await seed.page.keyboard.type(text)
  for (const item of ["Tickets", "Sunscreen", "Book the hostel"]) {
    await seed.page.click(sel("checklist-add"))
    await seed.page.keyboard.type(item)
  }
  await seed.page.locator('[data-testid="checklist"] input[type="checkbox"]').first().check()
  await until("seed saved", async () => (await state(seed.page)).saved === "true")

  // Cold load: a new browser context (empty cache, no service worker).
  const cold = await newPage(browser, base)
  const bytes = transferred(cold.ctx)
  await cold.page.goto("/#" + docId)
  result.coldUsableMs = await usableAt(cold.page, text)
  result.coldMarks = await cold.page.evaluate(() => Object.fromEntries(performance.getEntriesByType("mark").map(m => [m.name, Math.round(m.startTime)])))
  await swActive(cold.page)
  await new Promise(r => setTimeout(r, 500))
  result.coldBytes = await bytes.settle()
  cold.ctx.removeAllListeners("requestfinished")
  // Warm load: the same context, shell from the service worker.
  const warmBytes = transferred(cold.ctx)
  await cold.page.reload()
  result.warmUsableMs = await usableAt(cold.page, text)
  result.warmMarks = await cold.page.evaluate(() => Object.fromEntries(performance.getEntriesByType("mark").map(m => [m.name, Math.round(m.startTime)])))
  await new Promise(r => setTimeout(r, 500))
  result.warmBytes = await warmBytes.settle()

  // Screenshots: desktop and phone, with a second person present.
  if (shots) {
    await cold.page.locator(sel("editor")).focus()
    await cold.page.keyboard.press("Control+End")
    await until("presence", async () => (await state(seed.page)).presence >= 1 && (await state(cold.page)).presence >= 1)
    await seed.page.locator(sel("editor")).click({ position: { x: 60, y: 40 } })
    await new Promise(r => setTimeout(r, 2500))
    await seed.page.screenshot({ path: `${shots}/webclient-desktop.png` })
    const phone = await newPage(browser, base, { viewport: { width: 390, height: 844 } })
    await phone.page.goto("/#" + docId)
    await usableAt(phone.page, text)
    await new Promise(r => setTimeout(r, 2500))
    await phone.page.screenshot({ path: `${shots}/webclient-phone.png` })
    await phone.page.goto("/#")
    await until("list", async () => (await phone.page.locator(sel("doc-link")).count()) >= 1)
    await phone.page.screenshot({ path: `${shots}/webclient-phone-list.png` })
    await seed.page.click(sel("history-open"))
    await seed.page.locator(sel("history-item")).first().click()
    await seed.page.screenshot({ path: `${shots}/webclient-history.png` })
    await seed.page.keyboard.press("Escape")
    await phone.ctx.close()
  }

  // A document of nChanges changes, opened from IndexedDB while offline.
  const big = await newPage(browser, base)
  await big.page.goto("/")
  await big.page.click(sel("new-doc"))
  await until("big doc", () => big.page.url().includes("#automerge:"))
  const made = await big.page.evaluate(async n => {
    const id = decodeURIComponent(location.hash.slice(1))
    const h = await window.plait.repo.find(id)
    const t0 = performance.now()
    for (let i = 0; i < n; i++) {
      h.change(d => {
        d.checklist.push({ id: "i" + i, text: "item " + i, done: false })
        if (d.checklist.length > 20) d.checklist.splice(0, 1)
      })
    }
    await window.plait.flush()
    return { ms: Math.round(performance.now() - t0), changes: n }
  }, nChanges)
  result.bigMakeMs = made.ms
  await until("big saved", async () => (await state(big.page)).saved === "true", 120000)
  await swActive(big.page)
  await big.ctx.setOffline(true)
  await until("offline", async () => (await state(big.page)).status === "offline")
  await big.page.reload()
  await until("big doc open", async () => {
    const s = await state(big.page)
    return s.checklist.length === 20 && s.checklist[19].text === `item ${nChanges - 1}`
  }, 120000)
  result.bigOpenOfflineMs = await big.page.evaluate(() => Math.round(performance.now()))
  result.bigMarks = await big.page.evaluate(() => Object.fromEntries(performance.getEntriesByType("mark").map(m => [m.name, Math.round(m.startTime)])))
  result.bigChanges = await big.page.evaluate(async () => {
    const h = await window.plait.repo.find(decodeURIComponent(location.hash.slice(1)))
    return h.history()?.length ?? null
  })
  console.log(JSON.stringify(result))
} finally {
  await browser.close()
}
