// create.mjs: a client creates a document and waits until the server has stored it.
//
// usage: node create.mjs <wsURL> [--content JSON] [--no-verify]
//   wsURL        ws://host:port/path of the sync endpoint
//   --content    initial document as a JSON object (default {"title":"plait e2e","items":[],
//                "marks":{},"numbers":[1,2,3]}; edit.mjs and offline.mjs need items and marks)
//   --no-verify  skip the round trip through a second, fresh client
//
// "The server has it" means: the heads the server advertised in its sync messages (recorded
// by the client under the storageId from the server's peer message) equal the local heads;
// then, unless --no-verify, a fresh client with no storage finds the URL and reaches the same
// heads and content.
//
// stdout (one line): {"ok":true,"url","documentId","heads","content",
//   "server":{peerId,storageId,isEphemeral,selectedProtocolVersion,targetIdIsUs},
//   "verified":bool,"timings":{"connect","serverHasDoc","verify"},"wire":{...},"elapsedMs"}
// exit: 0 ok, 1 check failed, 2 usage, 124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).

import {
  run, step, waitFor, makeClient, waitServer, requireStorageId, findOrFail, waitServerSynced,
  sameHeads, content, deepEqual, DEFAULT_CONTENT, requireWsUrl, UsageError, CheckError,
  elapsed, closeAll,
} from "./lib.mjs"

run(
  "create",
  {
    usage: "<wsURL> [--content JSON] [--no-verify]",
    positionals: ["wsUrl"],
    required: 1,
    options: { content: { type: "string" }, "no-verify": { type: "boolean" } },
  },
  async (args, opts) => {
    const wsUrl = requireWsUrl(args.wsUrl)
    let initial = structuredClone(DEFAULT_CONTENT)
    if (opts.content !== undefined) {
      try {
        initial = JSON.parse(opts.content)
      } catch (e) {
        throw new UsageError(`--content is not JSON: ${e.message}`)
      }
      if (typeof initial !== "object" || initial === null || Array.isArray(initial)) {
        throw new UsageError("--content must be a JSON object")
      }
    }
    const timings = {}

    const W = await makeClient({ name: "writer", wsUrl })
    const server = await waitServer(W)
    const serverStorageId = requireStorageId(server)
    timings.connect = elapsed()

    step("writer: create document")
    const h = W.repo.create(initial)
    const heads = h.heads()
    const c = content(h)
    await waitServerSynced(W, h, serverStorageId)
    timings.serverHasDoc = elapsed()

    let verified = false
    if (!opts["no-verify"]) {
      const V = await makeClient({ name: "verifier", wsUrl })
      await waitServer(V)
      const { handle: hv } = await findOrFail(V, h.url)
      await waitFor("verifier has the writer's heads", () => sameHeads(hv.heads(), heads))
      if (!deepEqual(content(hv), c)) {
        throw new CheckError(`verifier's content differs: ${JSON.stringify(content(hv))}`)
      }
      verified = true
      timings.verify = elapsed()
      await closeAll(V)
    }

    const wire = W.stats
    await closeAll(W)
    return { url: h.url, documentId: h.documentId, heads, content: c, server, verified, timings, wire }
  }
)
