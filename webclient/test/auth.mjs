// Login through the real flow (the node's /auth/oidc/login against a
// local OpenID Connect provider), sharing, a read-only viewer whose forced
// edit the node refuses, revocation signing a tab out, and two tabs of
// one user refreshing at once.
// Usage: node test/auth.mjs <base-url> <admin-access-token>
// The Go test queues the provider's users: first "owner", then "viewer".
import { main, newPage, sel, state, until } from "./lib.mjs"

const [base, adminToken] = process.argv.slice(2)

const shots = process.env.PLAIT_SHOTS // a directory: screenshots of the sign-in page, share dialog, viewer
async function shot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png` })
}

async function signIn(page, path = "/") {
  await page.goto(path)
  await page.locator(sel("login-oidc")).waitFor()
  await shot(page, "webclient-login")
  await page.locator(sel("login-oidc")).click()
  await until("signed in", async () => ((await page.locator("#who").textContent()) || "").startsWith("oidc:"))
  return page.locator("#who").textContent()
}

main(async browser => {
  const errors = []
  const owner = await newPage(browser, base, { errors })
  const who = await signIn(owner.page)
  if (who !== "oidc:owner") throw new Error(`signed in as ${who}`)

  await owner.page.click(sel("new-doc"))
  await until("a doc url", () => owner.page.url().includes("#automerge:"))
  const docId = decodeURIComponent(owner.page.url().split("#")[1])
  await owner.page.locator(sel("editor")).focus()
  await owner.page.keyboard.type("Owner's plan\n")
  await owner.page.click(sel("checklist-add"))
  await owner.page.keyboard.type("first")
  await until("owner saved", async () => (await state(owner.page)).saved === "true")

  // Share with the viewer, through the dialog.
  await owner.page.click(sel("share-open"))
  await owner.page.fill(sel("share-user"), "oidc:viewer")
  await owner.page.selectOption(sel("share-role"), "viewer")
  await owner.page.click(sel("share-submit"))
  await until("viewer listed", async () => (await owner.page.locator("#share-users").textContent()).includes("oidc:viewer"))
  await shot(owner.page, "webclient-share")
  await owner.page.keyboard.press("Escape")

  // The viewer signs in from the shared link and lands on the document.
  const viewer = await newPage(browser, base, { errors })
  const vwho = await signIn(viewer.page, "/#" + docId)
  if (vwho !== "oidc:viewer") throw new Error(`viewer signed in as ${vwho}`)
  await until("viewer sees the text", async () => (await state(viewer.page)).text === "Owner's plan\n")
  await until("viewer editor read-only", async () => (await viewer.page.locator(sel("editor")).getAttribute("readonly")) !== null)
  if (await viewer.page.locator(sel("checklist-add")).isEnabled()) throw new Error("viewer may add checklist items")
  if (await viewer.page.locator(sel("share-open")).isVisible()) throw new Error("viewer sees the share button")
  await shot(viewer.page, "webclient-viewer")

  // An edit forced through the library is refused by the node (4403) and
  // never reaches the owner.
  const refused = await viewer.page.evaluate(async id => {
    const kinds = []
    window.plait.onError(e => kinds.push(e.kind))
    const h = await window.plait.repo.find(id)
    h.change(d => {
      d.checklist.push({ id: "forced", text: "forced by a viewer", done: false })
    })
    const end = Date.now() + 20000
    while (!kinds.includes("denied") && Date.now() < end) await new Promise(r => setTimeout(r, 100))
    return kinds
  }, docId)
  if (!refused.includes("denied")) throw new Error(`the node did not refuse the viewer's change: ${JSON.stringify(refused)}`)
  // The owner keeps editing and never gets the forced item.
  await owner.page.locator(sel("editor")).focus()
  await owner.page.keyboard.press("Control+End")
  await owner.page.keyboard.type("more")
  await until("owner saved again", async () => (await state(owner.page)).saved === "true")
  await new Promise(r => setTimeout(r, 2000)) // the viewer's client resends on every reconnect
  const os = await state(owner.page)
  if (os.checklist.some(i => i.text.includes("forced"))) throw new Error("the forced edit reached the owner")

  // Two tabs of the owner refresh at the same moment: both stay signed in.
  const tab2 = await owner.ctx.newPage()
  tab2.on("console", m => m.type() === "error" && errors.push(`tab2: ${m.text()}`))
  await tab2.goto("/")
  await until("tab2 signed in", async () => (await tab2.locator("#who").textContent()) === "oidc:owner")
  await until("tab2 ready", () => tab2.evaluate(() => !!window.plait))
  const refreshes = await Promise.all(
    [owner.page, tab2].map(p => p.evaluate(() => window.plait.session.refresh().then(m => m.user, e => "error: " + e.kind))),
  )
  if (refreshes.some(r => r !== "oidc:owner")) throw new Error(`refresh at once: ${JSON.stringify(refreshes)}`)
  for (const p of [owner.page, tab2]) {
    const me = await p.evaluate(() => fetch("/api/me").then(r => r.status))
    if (me !== 200) throw new Error(`after two refreshes at once, /api/me is ${me}`)
  }
  // A third refresh from either tab still works: the session was not revoked as a reuse.
  const again = await tab2.evaluate(() => window.plait.session.refresh(true).then(m => m.user, e => "error: " + e.kind))
  if (again !== "oidc:owner") throw new Error(`refresh after the concurrent ones: ${again}`)
  await tab2.close()

  // Revoking the viewer signs that tab out.
  const res = await fetch(base + "/api/admin/revoke-user", {
    method: "POST",
    headers: { Authorization: "Bearer " + adminToken, "Content-Type": "application/json" },
    body: JSON.stringify({ user: "oidc:viewer" }),
  })
  if (res.status !== 204) throw new Error(`revoke-user: ${res.status} ${await res.text()}`)
  await until("viewer signed out", () => viewer.page.locator(sel("login-oidc")).isVisible())
  const note = await viewer.page.locator("#login-note").textContent()
  // The owner is unaffected.
  await owner.page.keyboard.type("!")
  await until("owner still saves", async () => (await state(owner.page)).saved === "true" && (await state(owner.page)).status === "online")

  // Console errors: a refused upgrade or a 401 while signing out is logged
  // by Chromium for the failed request itself; anything else is a bug.
  const real = errors.filter(e => !/status of 401|WebSocket connection to .* failed/.test(e))
  if (real.length) throw new Error("console errors:\n" + real.join("\n"))
  return { docId, owner: who, viewer: vwho, refused, refreshes, note }
})
