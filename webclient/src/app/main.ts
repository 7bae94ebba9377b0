// The reference app: a list of documents, each a text with a checklist
// beside it, edited together live and offline. Built only on the library
// in ../plait (what an app developer would use) and the DOM.
import wasmURL from "@automerge/automerge/automerge.wasm?url"
import * as A from "@automerge/automerge/slim"
import type { DocHandle } from "@automerge/automerge-repo/slim"
import { Api, Plait, PlaitError, Presence, Session, connect, type ConnectionState, type Peer, type Role } from "../plait/index.js"
import "./style.css"

interface Item {
  id: string
  text: string
  done: boolean
}
interface Note {
  text: string
  checklist: Item[]
}

/** What the app remembers about a document, for the list and offline use. */
interface Known {
  url: string
  title: string
  role: Role
  claimed: boolean
  opened: number
}

const $ = <T extends HTMLElement>(sel: string): T => {
  const el = document.querySelector<T>(sel)
  if (!el) throw new Error(`missing ${sel}`)
  return el
}
const h = <K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...kids: (Node | string)[]) => {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v)
  el.append(...kids)
  return el
}

// ---- local memory (localStorage: small, synchronous, per origin) ----
const store = {
  get<T>(k: string, d: T): T {
    try {
      const v = localStorage.getItem(k)
      return v === null ? d : (JSON.parse(v) as T)
    } catch {
      return d
    }
  },
  set(k: string, v: unknown) {
    localStorage.setItem(k, JSON.stringify(v))
  },
}
const knownDocs = (): Known[] => store.get<Known[]>("plait.docs", [])
function remember(k: Partial<Known> & { url: string }) {
  const list = knownDocs()
  const i = list.findIndex(d => d.url === k.url)
  const merged: Known = { title: "", role: "owner", claimed: true, opened: 0, ...(i >= 0 ? list[i] : {}), ...k }
  if (i >= 0) list[i] = merged
  else list.push(merged)
  store.set("plait.docs", list)
}

const palette = ["#d9480f", "#2b8a3e", "#1971c2", "#9c36b5", "#c2255c", "#0c8599", "#5c940d", "#e67700"]
function colorOf(s: string) {
  let n = 0
  for (const c of s) n = (n * 31 + c.charCodeAt(0)) >>> 0
  return palette[n % palette.length]
}

// ---- state ----
let plait: Plait | null = null
let mode: "auth" | "anonymous" = store.get("plait.mode", "anonymous")
let me: string = store.get("plait.me", "")
let closeDoc: (() => void) | null = null
let currentPending = 0
/** The document on screen. */
let openHandle: DocHandle<Note> | null = null

const session = new Session(location.origin)
const api = new Api(location.origin)

function show(view: "login" | "home" | "doc") {
  for (const v of ["login", "home", "doc"]) $(`#view-${v}`).hidden = v !== view
  $("#signout").hidden = mode !== "auth" || view === "login"
  document.querySelector<HTMLElement>("footer.status")!.hidden = view === "login"
}

function toast(msg: string, kind: "info" | "error" = "info") {
  const t = $("#toast")
  t.textContent = msg
  t.dataset.kind = kind
  t.hidden = false
  clearTimeout((t as unknown as { timer?: number }).timer)
  ;(t as unknown as { timer?: number }).timer = window.setTimeout(() => (t.hidden = true), 5000)
}

// ---- start ----
async function start() {
  registerWorker()
  void navigator.storage?.persist?.().catch(() => false)
  window.addEventListener("beforeunload", e => {
    if (currentPending > 0) {
      e.preventDefault()
      e.returnValue = ""
    }
  })
  let providers: string[] | null = null
  try {
    providers = await api.providers()
    mode = api.enabled ? "auth" : "anonymous"
    store.set("plait.mode", mode)
  } catch {
    // Offline: go on as last time (offline login with the remembered user).
    api.enabled = mode === "auth"
  }
  if (mode === "auth") {
    let who: string | null = null
    try {
      const m = await session.load()
      who = m?.user ?? null
      if (!who) {
        store.set("plait.me", "")
        return showLogin(providers ?? [])
      }
    } catch {
      who = me || null // offline: the user who signed in last on this device
      if (!who) return showLogin(providers ?? [], "You are offline. Sign in once online.")
    }
    me = who
    store.set("plait.me", me)
    $("#who").textContent = me
  } else {
    if (!me) {
      me = "guest-" + Math.random().toString(36).slice(2, 7)
      store.set("plait.me", me)
    }
    $("#who").textContent = me
  }
  performance.mark("plait:session")
  plait = await connect({ wasm: wasmURL, session, api })
  performance.mark("plait:wasm")
  // For tests and the browser console: the library the app runs on.
  ;(window as unknown as { plait: Plait }).plait = plait
  plait.onStatus(renderStatus)
  plait.onStatus(s => s === "online" && performance.mark("plait:online"))
  renderStatus(plait.state)
  plait.onStatus(s => {
    if (s === "online") void claimPending()
  })
  plait.onError(e => {
    if (e.kind === "denied") toast("This document is read-only for you: your change was refused.", "error")
  })
  session.on("end", e => {
    store.set("plait.me", "")
    closeDoc?.()
    showLogin(providers ?? [], e.kind === "revoked" ? "Your session was ended. Sign in again." : "Signed out.")
  })
  window.addEventListener("hashchange", route)
  route()
}

const providerNames: Record<string, string> = { github: "GitHub", google: "Google", oidc: "single sign-on" }

function showLogin(providers: string[], note = "") {
  const box = $("#providers")
  box.replaceChildren()
  for (const p of providers) {
    const a = h("a", { class: "button primary", "data-testid": `login-${p}`, href: session.loginURL(p, "/" + location.hash) }, `Sign in with ${providerNames[p] ?? p}`)
    box.append(a)
  }
  $("#login-note").textContent = note
  show("login")
}

function route() {
  closeDoc?.()
  closeDoc = null
  const id = decodeURIComponent(location.hash.slice(1))
  if (id.startsWith("automerge:")) void openDoc(id)
  else void showHome()
}

// ---- home: the list ----
async function showHome() {
  show("home")
  document.title = "Plait"
  renderList()
  if (mode === "auth" && api.enabled) {
    try {
      for (const d of await api.list()) remember({ url: d.url, role: d.role, claimed: true })
      renderList()
    } catch (e) {
      if (e instanceof PlaitError && e.kind !== "unavailable") toast(e.message, "error")
    }
  }
}

function renderList() {
  const ul = $("#doc-list")
  const docs = knownDocs().sort((a, b) => b.opened - a.opened)
  ul.replaceChildren(
    ...docs.map(d =>
      h(
        "li",
        {},
        h("a", { "data-testid": "doc-link", href: "#" + d.url }, d.title || "Untitled " + d.url.slice(10, 16)),
        h("span", { class: `role role-${d.role}` }, d.role === "owner" ? "mine" : `shared · ${d.role}`),
      ),
    ),
  )
  $("#empty").hidden = docs.length > 0
}

async function newDoc() {
  if (!plait) return
  const handle = plait.repo.create<Note>({ text: "", checklist: [] })
  remember({ url: handle.url, role: "owner", claimed: mode === "anonymous", opened: Date.now() })
  if (mode === "auth") await claim(handle.url)
  location.hash = handle.url
}

async function claim(url: string) {
  try {
    await api.claim(url)
    remember({ url, claimed: true })
  } catch (e) {
    if (e instanceof PlaitError && e.kind === "conflict") remember({ url, claimed: true })
    // unavailable: claimed when back online (claimPending)
  }
}

async function claimPending() {
  if (mode !== "auth") return
  for (const d of knownDocs()) if (!d.claimed) await claim(d.url)
}

// ---- a document ----
async function openDoc(url: string) {
  if (!plait) return
  show("doc")
  const editor = $<HTMLTextAreaElement>("#editor")
  editor.value = ""
  editor.readOnly = true
  $("#doc-error").hidden = true
  $("#doc-body").hidden = false
  remember({ url, opened: Date.now() })
  let role: Role = knownDocs().find(d => d.url === url)?.role ?? "editor"
  let handle: DocHandle<Note>
  try {
    handle = await plait.repo.find<Note>(url as never)
  } catch (e) {
    $("#doc-body").hidden = true
    const err = $("#doc-error")
    err.hidden = false
    err.textContent = navigator.onLine
      ? "This document does not exist, or you may not open it. Ask its owner to share it with you."
      : "This document is not on this device yet, and you are offline. Open it once online."
    void e
    return
  }
  performance.mark("plait:doc")
  if (location.hash.slice(1) !== url) return // navigated away meanwhile
  const stops: (() => void)[] = []
  openHandle = handle
  stops.push(() => (openHandle = null))
  const presence = new Presence(handle as DocHandle<unknown>, me, colorOf(me))
  stops.push(() => presence.close())
  // Say goodbye when the tab goes away, so others do not wait 7 s.
  const bye = () => presence.close()
  window.addEventListener("pagehide", bye)
  stops.push(() => window.removeEventListener("pagehide", bye))

  const setRole = (r: Role) => {
    role = r
    const ro = r === "viewer"
    editor.readOnly = ro
    $("#readonly").hidden = !ro
    $<HTMLButtonElement>("#checklist-add").disabled = ro
    $("#share-open").hidden = r !== "owner" || mode !== "auth"
    renderChecklist()
  }
  setRole(role)
  if (mode === "auth" && api.enabled) {
    api.get(url).then(
      d => {
        remember({ url, role: d.role })
        setRole(d.role)
      },
      () => {},
    )
  }

  // The text: the textarea mirrors doc.text; typing becomes updateText.
  let shown = handle.doc()
  editor.value = shown?.text ?? ""
  const titleOf = (d: Note | undefined) => (d?.text ?? "").split("\n")[0].trim().slice(0, 60)
  const retitle = () => {
    const t = titleOf(handle.doc())
    document.title = (t || "Untitled") + " · Plait"
    remember({ url, title: t })
  }
  retitle()
  const onInput = () => {
    if (role === "viewer") return
    const value = editor.value
    handle.change(d => A.updateText(d, ["text"], value), { message: me })
    shown = handle.doc()
  }
  editor.addEventListener("input", onInput)
  stops.push(() => editor.removeEventListener("input", onInput))
  const onSelect = () => presence.update(editor.selectionStart, "text")
  for (const ev of ["keyup", "click", "select", "focus"]) {
    editor.addEventListener(ev, onSelect)
    stops.push(() => editor.removeEventListener(ev, onSelect))
  }
  document.addEventListener("selectionchange", onSelect)
  stops.push(() => document.removeEventListener("selectionchange", onSelect))

  const onChange = () => {
    const doc = handle.doc()
    if (!doc) return
    if (doc.text !== editor.value) {
      // Keep the caret where it was relative to the text around it.
      let s = editor.selectionStart
      let e = editor.selectionEnd
      if (shown && document.activeElement === editor) {
        try {
          const len = shown.text.length
          const cs = A.getCursor(shown, ["text"], s >= len ? "end" : s)
          const ce = A.getCursor(shown, ["text"], e >= len ? "end" : e)
          s = A.getCursorPosition(doc, ["text"], cs)
          e = A.getCursorPosition(doc, ["text"], ce)
        } catch {
          /* a cursor at the very end: keep the offsets */
        }
      }
      editor.value = doc.text ?? ""
      if (document.activeElement === editor) editor.setSelectionRange(s, e)
    }
    shown = doc
    renderChecklist()
    renderPresence([...presence.peers.values()])
    retitle()
  }
  handle.on("change", onChange)
  stops.push(() => handle.off("change", onChange))

  // The checklist.
  function renderChecklist() {
    const list = $("#checklist")
    const items = handle.doc()?.checklist ?? []
    const focused = document.activeElement as HTMLElement | null
    const focusId = focused?.closest("li")?.dataset.id
    const focusKind = focused?.dataset.kind
    list.replaceChildren(
      ...items.map((it, i) => {
        const box = h("input", { type: "checkbox", "aria-label": `Done: ${it.text || "item " + (i + 1)}`, "data-kind": "done" }) as HTMLInputElement
        box.checked = it.done
        box.disabled = role === "viewer"
        box.addEventListener("change", () =>
          handle.change(d => {
            const x = d.checklist.find(c => c.id === it.id)
            if (x) x.done = box.checked
          }, { message: me }),
        )
        const text = h("input", { type: "text", "aria-label": `Item ${i + 1}`, "data-kind": "text", "data-testid": "checklist-text" }) as HTMLInputElement
        text.value = it.text
        text.readOnly = role === "viewer"
        text.addEventListener("input", () =>
          handle.change(d => {
            const j = d.checklist.findIndex(c => c.id === it.id)
            if (j >= 0) A.updateText(d, ["checklist", j, "text"], text.value)
          }, { message: me }),
        )
        text.addEventListener("focus", () => presence.update(i, "checklist"))
        const del = h("button", { class: "icon", "aria-label": `Remove item ${i + 1}`, "data-kind": "del" }, "×") as HTMLButtonElement
        del.disabled = role === "viewer"
        del.addEventListener("click", () =>
          handle.change(d => {
            const j = d.checklist.findIndex(c => c.id === it.id)
            if (j >= 0) d.checklist.splice(j, 1)
          }, { message: me }),
        )
        const li = h("li", { "data-id": it.id, class: it.done ? "done" : "" }, box, text, del)
        return li
      }),
    )
    if (focusId && focusKind) list.querySelector<HTMLElement>(`li[data-id="${CSS.escape(focusId)}"] [data-kind="${focusKind}"]`)?.focus()
  }
  renderChecklist()

  // Presence.
  function renderPresence(peers: Peer[]) {
    const text = handle.doc()?.text ?? ""
    // One entry per person (a person may have several tabs open): the
    // most recently heard tab's cursor.
    const byName = new Map<string, Peer>()
    for (const p of peers) {
      const seen = byName.get(p.name)
      if (p.name !== me && (!seen || seen.seen < p.seen)) byName.set(p.name, p)
    }
    $("#presence").replaceChildren(
      ...[...byName.values()].map(p => {
        let where = "here"
        if (p.field === "checklist" && p.cursor !== null) where = `checklist item ${p.cursor + 1}`
        else if (p.cursor !== null) {
          const before = text.slice(0, p.cursor).split("\n")
          where = `line ${before.length}, col ${before[before.length - 1].length + 1}`
        }
        return h(
          "li",
          { "data-testid": "presence-peer", title: `${p.name}: ${where}` },
          dot(p.color),
          h("span", { class: "name" }, p.name),
          h("span", { class: "where" }, where),
        )
      }),
    )
  }
  stops.push(presence.on(renderPresence))
  renderPresence([])

  // Saved / pending.
  $("#saved").dataset.saved = "false"
  stops.push(
    plait.watchSaved(handle as DocHandle<unknown>, s => {
      currentPending = s.pending
      const saved = $("#saved")
      saved.dataset.saved = String(s.saved)
      saved.textContent = s.saved ? "Saved" : "Not saved yet"
      $("#pending").textContent = String(s.pending)
      $("#pending-label").textContent = s.pending === 1 ? "change waiting" : "changes waiting"
    }),
  )

  // Share and history.
  const openShare = () => void shareDialog(url)
  const openHistory = () => historyDialog(handle)
  $("#share-open").onclick = openShare
  $("#history-open").onclick = openHistory

  closeDoc = () => {
    for (const s of stops) s()
    currentPending = 0
    $("#saved").dataset.saved = "true"
    $("#saved").textContent = ""
    $("#pending").textContent = "0"
  }
}

/** dot is a coloured dot (a style property, not an attribute: the CSP forbids inline style attributes). */
function dot(color: string) {
  const d = h("span", { class: "dot" })
  d.style.backgroundColor = color
  return d
}

function renderStatus(s: ConnectionState) {
  const el = $("#status")
  el.dataset.state = s
  el.textContent = { connecting: "Connecting…", online: "Online", offline: "Offline", reconnecting: "Reconnecting…" }[s]
}

// ---- share dialog ----
async function shareDialog(url: string) {
  const dlg = $<HTMLDialogElement>("#share")
  const users = $("#share-users")
  const err = $("#share-error")
  err.textContent = ""
  const refresh = async () => {
    try {
      const d = await api.get(url)
      users.replaceChildren(
        ...Object.entries(d.users ?? {}).map(([u, r]) => {
          const rm = h("button", { class: "link", "aria-label": `Remove ${u}` }, "Remove") as HTMLButtonElement
          rm.disabled = u === me
          rm.onclick = async () => {
            try {
              await api.unshare(url, u)
              await refresh()
            } catch (e) {
              err.textContent = (e as Error).message
            }
          }
          return h("li", {}, h("span", { class: "name" }, u), h("span", { class: `role role-${r}` }, r), rm)
        }),
      )
      $<HTMLSelectElement>("#share-link").value = d.link ?? "none"
    } catch (e) {
      err.textContent = (e as Error).message
    }
  }
  await refresh()
  $<HTMLInputElement>("#share-url").value = location.href
  $("#share-form").onsubmit = async ev => {
    ev.preventDefault()
    const user = $<HTMLInputElement>("#share-user").value.trim()
    const role = $<HTMLSelectElement>("#share-role").value as Role
    if (!user) {
      err.textContent = "Enter the user id to share with (for example oidc:alice)."
      return
    }
    try {
      await api.share(url, user, role)
      $<HTMLInputElement>("#share-user").value = ""
      err.textContent = ""
      await refresh()
    } catch (e) {
      err.textContent = (e as Error).message
    }
  }
  $<HTMLSelectElement>("#share-link").onchange = async () => {
    try {
      await api.setLink(url, $<HTMLSelectElement>("#share-link").value as "viewer" | "editor" | "none")
    } catch (e) {
      err.textContent = (e as Error).message
    }
  }
  dlg.showModal()
}

// ---- history ----
function historyDialog(handle: DocHandle<Note>) {
  const dlg = $<HTMLDialogElement>("#history")
  const doc = handle.doc()
  if (!doc) return
  const all = A.getAllChanges(doc)
  const recent = all.slice(-1000).map(c => A.decodeChange(c)).reverse()
  // One entry per burst of edits: the same author, less than a minute apart.
  const groups: { author: string; time: number; hash: string; count: number }[] = []
  for (const c of recent) {
    const author = c.message || (c.seq === 1 && c.deps.length === 0 ? "Created" : "device " + c.actor.slice(0, 8))
    const g = groups[groups.length - 1]
    if (g && g.author === author && Math.abs(g.time - c.time) < 60) g.count++
    else groups.push({ author, time: c.time, hash: c.hash, count: 1 })
  }
  $("#history-count").textContent = `${all.length} changes${all.length > recent.length ? `, the last ${recent.length} shown` : ""}`
  const preview = $("#history-preview")
  preview.textContent = "Choose a change to see the document as it was."
  $("#history-list").replaceChildren(
    ...groups.map(c => {
      const b = h(
        "button",
        { "data-testid": "history-item", class: "history-item" },
        h("span", { class: "name" }, c.author),
        h("time", {}, (c.time ? new Date(c.time * 1000).toLocaleString() : "unknown time") + ` · ${c.count} ${c.count === 1 ? "edit" : "edits"}`),
      )
      b.onclick = () => {
        const old = A.view(doc, [c.hash]) as A.Doc<Note>
        const items = (old.checklist ?? []).map(i => `${i.done ? "☑" : "☐"} ${i.text}`).join("\n")
        preview.textContent = (old.text ?? "") + (items ? "\n\n" + items : "") || "(empty)"
        for (const x of dlg.querySelectorAll(".history-item")) x.classList.toggle("active", x === b)
      }
      return h("li", {}, b)
    }),
  )
  dlg.showModal()
}

// ---- service worker: offline shell, and updates that keep unsynced edits ----
function registerWorker() {
  if (!("serviceWorker" in navigator)) return
  let reloading = false
  // The first worker's clients.claim() is no new version: reload only when
  // a controller replaces another.
  let controlled = !!navigator.serviceWorker.controller
  navigator.serviceWorker.addEventListener("controllerchange", async () => {
    if (!controlled) {
      controlled = true
      return
    }
    if (reloading) return
    reloading = true
    // Every edit is in IndexedDB before the new version loads.
    await plait?.flush().catch(() => {})
    location.reload()
  })
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).then(
    reg => {
      reg.addEventListener("updatefound", () => {
        const w = reg.installing
        w?.addEventListener("statechange", async () => {
          if (w.state === "installed" && navigator.serviceWorker.controller) {
            await plait?.flush().catch(() => {})
            w.postMessage("skip-waiting")
          }
        })
      })
    },
    () => {},
  )
}

// ---- wiring ----
$("#new-doc").addEventListener("click", () => void newDoc())
$("#open-form").addEventListener("submit", ev => {
  ev.preventDefault()
  const raw = $<HTMLInputElement>("#open-url").value.trim()
  const m = raw.match(/automerge:[1-9A-HJ-NP-Za-km-z]+/)
  if (m) location.hash = m[0]
  else toast("Paste a document link (it contains automerge:…).", "error")
})
$("#signout").addEventListener("click", () => void session.logout().catch(e => toast((e as Error).message, "error")))
for (const d of document.querySelectorAll<HTMLDialogElement>("dialog")) {
  d.querySelector(".close")?.addEventListener("click", () => d.close())
}
$("#checklist-add").addEventListener("click", () => {
  const handle = openHandle
  if (!handle) return
  handle.change(d => {
    d.checklist ??= []
    d.checklist.push({ id: Math.random().toString(36).slice(2, 10), text: "", done: false })
  }, { message: me })
  // The change event re-rendered the list synchronously: type into the new item.
  const inputs = document.querySelectorAll<HTMLInputElement>('#checklist [data-kind="text"]')
  inputs[inputs.length - 1]?.focus()
})
void start().catch(e => {
  console.warn("failed to start", e)
  toast("Plait could not start: " + (e as Error).message, "error")
})
