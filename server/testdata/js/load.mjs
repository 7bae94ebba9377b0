// load.mjs: a fresh client (no storage) finds a document by URL through the server.
//
// usage: node load.mjs <wsURL> <automergeURL> [expectedHeadsJSON] [--expect-unavailable]
//   wsURL                ws://host:port/path of the sync endpoint
//   automergeURL         automerge:<documentId>
//   expectedHeadsJSON    optional JSON array of heads (bs58check as printed by these scripts,
//                        or 64-char hex); the client waits until its heads equal them
//   --expect-unavailable succeed only if find() rejects as unavailable (the server answered
//                        doc-unavailable); used for missing or denied documents
//
// Without expectedHeadsJSON the client waits, after find() resolves, until the server's
// advertised heads equal its own (when the server announced a storageId), so the content
// printed is everything the server had.
//
// stdout (one line), found: {"ok":true,"url","heads","content","findMs",
//   "server":{...},"wire":{...},"elapsedMs"}
// with --expect-unavailable: {"ok":true,"unavailable":true,"gotDocUnavailable":bool,"findMs",...}
// exit: 0 ok; 1 unavailable (or found despite --expect-unavailable) or heads mismatch;
//       2 usage; 124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000; the client itself gives
//       up on a document after 60 s, so a server that never answers ends here).

import {
  run, step, waitFor, makeClient, waitServer, find, waitServerSynced, sameHeads, normHeads,
  content, requireWsUrl, requireDocUrl, UsageError, CheckError, closeAll,
} from "./lib.mjs"

run(
  "load",
  {
    usage: "<wsURL> <automergeURL> [expectedHeadsJSON] [--expect-unavailable]",
    positionals: ["wsUrl", "docUrl", "expectedHeads"],
    required: 2,
    options: { "expect-unavailable": { type: "boolean" } },
  },
  async (args, opts) => {
    const wsUrl = requireWsUrl(args.wsUrl)
    const docUrl = requireDocUrl(args.docUrl)
    let expected = null
    if (args.expectedHeads !== undefined && args.expectedHeads !== "") {
      try {
        expected = normHeads(JSON.parse(args.expectedHeads))
      } catch (e) {
        throw new UsageError(`expectedHeadsJSON: ${e.message}`)
      }
    }

    const L = await makeClient({ name: "loader", wsUrl })
    // Wait for the server first: find() only waits 1 s for the socket before it gives up.
    const server = await waitServer(L)
    const r = await find(L, docUrl)

    if (opts["expect-unavailable"]) {
      if (r.handle) {
        throw new CheckError(`document was found (heads ${JSON.stringify(r.handle.heads())}), expected unavailable`)
      }
      if (!r.unavailable) throw new CheckError(`find failed, but not as unavailable: ${r.error}`)
      const wire = L.stats
      await closeAll(L)
      return { url: docUrl, unavailable: true, gotDocUnavailable: r.gotDocUnavailable, findMs: r.findMs, server, wire }
    }

    if (!r.handle) {
      throw new CheckError(
        `document unavailable after ${r.findMs} ms: ${r.error}` +
          (r.gotDocUnavailable ? " (server sent doc-unavailable)" : " (no doc-unavailable message received)")
      )
    }
    const h = r.handle
    if (expected) {
      await waitFor(`heads == ${JSON.stringify(expected)}`, () => sameHeads(h.heads(), expected))
    } else if (server.storageId) {
      await waitServerSynced(L, h, server.storageId)
    }
    step("loaded")
    const out = { url: docUrl, heads: h.heads(), content: content(h), findMs: r.findMs, server, wire: L.stats }
    await closeAll(L)
    return out
  }
)
