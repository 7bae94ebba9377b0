// Two people (two browser contexts) type into one document at once and
// add checklist items; both end with the same text and checklist, each
// sees the other in presence, and nothing logs a console error.
// Usage: node test/converge.mjs <base-url> [--distinct-nodes]
import { main, newPage, sel, state, swActive, until } from "./lib.mjs"

const base = process.argv[2]
main(async browser => {
  const errors = []
  const a = await newPage(browser, base, { errors })
  const b = await newPage(browser, base, { errors })
  await a.page.goto("/")
  await until("home shown", () => a.page.locator(sel("new-doc")).isVisible())
  // Keyboard only: Tab to "New document", Enter, Tab to the editor.
  const focusedTestId = () => a.page.evaluate(() => document.activeElement?.dataset?.testid ?? document.activeElement?.id ?? "")
  for (let i = 0; i < 8 && (await focusedTestId()) !== "new-doc"; i++) await a.page.keyboard.press("Tab")
  if ((await focusedTestId()) !== "new-doc") throw new Error("Tab does not reach the new-doc button")
  await a.page.keyboard.press("Enter")
  await until("a doc url", () => a.page.url().includes("#automerge:"))
  await until("editor editable", () => a.page.locator(sel("editor")).isEditable())
  for (let i = 0; i < 8 && (await focusedTestId()) !== "editor"; i++) await a.page.keyboard.press("Tab")
  if ((await focusedTestId()) !== "editor") throw new Error("Tab does not reach the editor")
  const url = a.page.url()
  const docId = url.slice(url.indexOf("#") + 1)
  await b.page.goto("/#" + docId)
  await until("both online", async () => (await state(a.page)).status === "online" && (await state(b.page)).status === "online")
  await until("b has the doc", async () => (await b.page.locator(sel("editor")).isEditable()))
  if (process.argv.includes("--distinct-nodes")) {
    // Behind a load balancer: make sure the two browsers use different nodes.
    const nodeOf = p => p.evaluate(() => window.plait.nodePeerId)
    for (let i = 0; i < 10 && (await nodeOf(a.page)) === (await nodeOf(b.page)); i++) {
      await b.page.reload()
      await until("b online again", async () => (await state(b.page)).status === "online" && (await b.page.locator(sel("editor")).isEditable()))
    }
  }

  // Both type at once, with the caret at the end.
  const wordsA = ["alpha", "bravo", "charlie", "delta", "echo"]
  const wordsB = ["one", "two", "three", "four", "five"]
  // A writes at the top, B at the bottom, of a shared first line.
  await a.page.locator(sel("editor")).focus()
  await a.page.keyboard.type("Shared notes\n")
  await until("b sees the first line", async () => (await state(b.page)).text === "Shared notes\n")
  await b.page.locator(sel("editor")).focus()
  await b.page.keyboard.press("Control+End")
  await a.page.keyboard.press("Control+Home")
  await Promise.all([
    (async () => {
      for (const w of wordsA) await a.page.keyboard.type(w + " ", { delay: 15 })
    })(),
    (async () => {
      for (const w of wordsB) await b.page.keyboard.type(w + " ", { delay: 15 })
    })(),
  ])
  // Checklist items from both sides.
  await a.page.click(sel("checklist-add"))
  await a.page.keyboard.type("buy milk")
  await b.page.click(sel("checklist-add"))
  await b.page.keyboard.type("call bob")

  const final = await until("both converge", async () => {
    const sa = await state(a.page)
    const sb = await state(b.page)
    const same = sa.text === sb.text && JSON.stringify(sa.checklist) === JSON.stringify(sb.checklist)
    globalThis.__last = [sa, sb]
    return same && sa.checklist.length === 2 && sa.saved === "true" && sb.saved === "true" && sa.presence >= 1 && sb.presence >= 1 ? [sa, sb] : null
  })
  const [sa, sb] = final
  const want = wordsA.map(w => w + " ").join("") + "Shared notes\n" + wordsB.map(w => w + " ").join("")
  if (sa.text !== want) throw new Error(`text ${JSON.stringify(sa.text)}, want ${JSON.stringify(want)}`)
  const items = sa.checklist.map(i => i.text).sort()
  if (items.join("|") !== "buy milk|call bob") throw new Error(`checklist wrong: ${JSON.stringify(sa.checklist)}`)
  if (sa.pending !== 0 || sb.pending !== 0) throw new Error(`pending not 0 after saved: ${sa.pending} ${sb.pending}`)
  // History: every change with its author; the document as it was.
  await a.page.click(sel("history-open"))
  const history = a.page.locator(sel("history-item"))
  await until("history items", async () => (await history.count()) >= 3)
  const authors = new Set(await history.locator(".name").allTextContents())
  if (authors.size < 2) throw new Error(`history shows authors ${[...authors]}, want both people`)
  await history.last().click()
  const oldest = await a.page.locator("#history-preview").textContent()
  if (oldest.length >= sa.text.length || oldest.includes("alpha")) throw new Error(`oldest version ${JSON.stringify(oldest)}`)
  await history.first().click()
  const newest = await a.page.locator("#history-preview").textContent()
  if (!newest.startsWith(sa.text)) throw new Error(`newest version ${JSON.stringify(newest)}`)
  await a.page.keyboard.press("Escape")
  await swActive(a.page)
  // The document list shows it.
  await a.page.goto("/#")
  await until("doc in list", async () => (await a.page.locator(sel("doc-link")).count()) >= 1)
  const href = await a.page.locator(sel("doc-link")).first().getAttribute("href")
  if (!href.includes(docId)) throw new Error(`doc-link ${href} is not ${docId}`)
  if (errors.length) throw new Error("console errors:\n" + errors.join("\n"))
  const [nodeA, nodeB] = await Promise.all([a.page, b.page].map(p => p.evaluate(() => window.plait.nodePeerId)))
  return { docId, nodeA, nodeB, text: sa.text, checklist: sa.checklist, presenceA: sa.presence, presenceB: sb.presence }
})
