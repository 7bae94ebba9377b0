// edit.mjs: a fresh online client (no storage) opens a document, edits it and waits until the
// server has the edits.
//
// usage: node edit.mjs <wsURL> <automergeURL> <tag> [--edits N]
//   tag        names the edits: item "tag-i" is pushed into items and marks["tag-i"] = i
//              ([A-Za-z0-9_]+; the document needs items and marks, as create.mjs makes it)
//   --edits N  number of edits, each its own change (default 3)
//
// stdout (one line): {"ok":true,"url","heads","content","tags":{tag:count},"server":{...},
//   "wire":{...},"elapsedMs"}
// exit: 0 ok, 1 check failed (unavailable, no storageId, ...), 2 usage,
//       124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).

import {
  run, step, makeClient, waitServer, requireStorageId, findOrFail, waitServerSynced, content,
  edits, tagCounts, intOpt, checkTag, requireWsUrl, requireDocUrl, closeAll,
} from "./lib.mjs"

run(
  "edit",
  {
    usage: "<wsURL> <automergeURL> <tag> [--edits N]",
    positionals: ["wsUrl", "docUrl", "tag"],
    required: 3,
    options: { edits: { type: "string" } },
  },
  async (args, opts) => {
    const wsUrl = requireWsUrl(args.wsUrl)
    const docUrl = requireDocUrl(args.docUrl)
    const tag = checkTag(args.tag)
    const n = intOpt(opts, "edits", 3)

    const E = await makeClient({ name: `editor ${tag}`, wsUrl })
    const server = await waitServer(E)
    const serverStorageId = requireStorageId(server)
    const { handle: h } = await findOrFail(E, docUrl)
    await waitServerSynced(E, h, serverStorageId)
    step(`${n} edits tagged ${tag}`)
    edits(h, tag, n)
    await waitServerSynced(E, h, serverStorageId)
    const c = content(h)
    const out = { url: docUrl, heads: h.heads(), content: c, tags: tagCounts(c), server, wire: E.stats }
    await closeAll(E)
    return out
  }
)
