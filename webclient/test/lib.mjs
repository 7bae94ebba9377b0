// Shared helpers of the browser suite: Debian's Chromium driven by
// playwright-core (no browser download), bounded waits, console-error
// collection, and the JSON result the Go test reads (last stdout line).
import { chromium } from "playwright-core"

export const TIMEOUT = Number(process.env.PLAIT_E2E_TIMEOUT_MS || 40000)

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
    timeout: TIMEOUT,
  })
}

/** page opens a page in a new context and records its console errors. */
export async function newPage(browser, base, { viewport, errors } = {}) {
  const ctx = await browser.newContext({ baseURL: base, viewport: viewport ?? { width: 1200, height: 800 } })
  ctx.setDefaultTimeout(TIMEOUT)
  const page = await ctx.newPage()
  watch(page, errors)
  return { ctx, page }
}

export function watch(page, errors) {
  page.on("console", m => {
    if (m.type() === "error") errors?.push(`${page.url()}: ${m.text()}`)
  })
  page.on("pageerror", e => errors?.push(`${page.url()}: uncaught ${e.message}`))
}

/** until polls fn (bounded by TIMEOUT) until it returns a truthy value. */
export async function until(what, fn, timeout = TIMEOUT) {
  const end = Date.now() + timeout
  let last
  while (Date.now() < end) {
    try {
      last = await fn()
      if (last) return last
    } catch (e) {
      last = e
    }
    await new Promise(r => setTimeout(r, 100))
  }
  throw new Error(`timed out waiting for ${what} ${JSON.stringify(globalThis.__last ?? "")} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`)
}

export const sel = id => `[data-testid="${id}"]`

/** state reads what the status bar and editor show. */
export async function state(page) {
  return page.evaluate(() => {
    const q = id => document.querySelector(`[data-testid="${id}"]`)
    return {
      status: q("status")?.dataset.state,
      saved: q("saved")?.dataset.saved,
      pending: Number(q("pending")?.textContent ?? "NaN"),
      text: q("editor")?.value,
      checklist: [...document.querySelectorAll('[data-testid="checklist"] li')].map(li => ({
        text: li.querySelector('input[type="text"]').value,
        done: li.querySelector('input[type="checkbox"]').checked,
      })),
      presence: document.querySelectorAll('[data-testid="presence-peer"]').length,
    }
  })
}

/** swActive waits for the page's service worker to be active and controlling. */
export async function swActive(page) {
  await until("service worker active", () =>
    page.evaluate(async () => {
      const r = await navigator.serviceWorker.getRegistration()
      return !!(r && r.active && r.active.state === "activated")
    }),
  )
}

export function finish(result) {
  console.log(JSON.stringify(result))
}

export async function main(fn) {
  const browser = await launch()
  const timer = setTimeout(() => {
    console.error("browser test took too long")
    process.exit(3)
  }, 4 * TIMEOUT)
  try {
    finish(await fn(browser))
  } catch (e) {
    console.error(e?.stack || String(e))
    process.exitCode = 1
  } finally {
    clearTimeout(timer)
    await browser.close().catch(() => {})
  }
}
