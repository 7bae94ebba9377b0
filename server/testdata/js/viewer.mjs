// viewer.mjs: a client that may only read a document opens it, checks it reads it, then edits it
// and waits for the server's refusal: an error message and close code 4403.
//
// usage: node viewer.mjs <wsURL> <automergeURL> <tag>
//   wsURL  the sync endpoint, with the viewer's access token (?access_token=...)
//   tag    names the refused edit (item "tag-0", marks["tag-0"]); [A-Za-z0-9_]+
//
// stdout (one line): {"ok":true,"contentBefore","errors":[...],"closes":[codes],"elapsedMs"}
// exit: 0 refused as documented, 1 check failed (never refused, wrong code, cannot read),
//       2 usage, 124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).

import {
  run, step, waitFor, makeClient, waitServer, findOrFail, content, editOnce, checkTag, requireWsUrl,
  requireDocUrl, closeAll, CheckError,
} from "./lib.mjs"

const CLOSE_READ_ONLY = 4403

run(
  "viewer",
  { usage: "<wsURL> <automergeURL> <tag>", positionals: ["wsUrl", "docUrl", "tag"], required: 3 },
  async args => {
    const wsUrl = requireWsUrl(args.wsUrl)
    const docUrl = requireDocUrl(args.docUrl)
    const tag = checkTag(args.tag)

    const V = await makeClient({ name: "viewer", wsUrl })
    await waitServer(V)
    const { handle: h } = await findOrFail(V, docUrl)
    const contentBefore = content(h)

    // Record the close code of every socket the adapter opens (it reconnects after a close).
    const closes = []
    const watched = new WeakSet()
    const watch = () => {
      const s = V.adapter.socket
      if (s && !watched.has(s)) {
        watched.add(s)
        s.addEventListener("close", e => closes.push(e.code))
      }
    }
    watch()
    const timer = setInterval(watch, 5)

    step("viewer: edit")
    editOnce(h, tag, 0)
    await waitFor("the server's refusal (error message and close 4403)", () =>
      closes.includes(CLOSE_READ_ONLY) && V.stats.errors.some(e => /read-only/.test(e))
    )
    clearInterval(timer)
    const wrong = closes.filter(c => c !== CLOSE_READ_ONLY)
    if (wrong.length > 0) throw new CheckError(`unexpected close codes ${wrong}`)
    const out = { contentBefore, errors: V.stats.errors, closes, wire: V.stats }
    await closeAll(V)
    return out
  }
)
