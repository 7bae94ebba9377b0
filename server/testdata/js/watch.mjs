// watch.mjs: a client opens a document, says it is ready, and waits until its content equals
// a wanted JSON value (a change made elsewhere, e.g. through the REST API, reached it live);
// then it may make an edit of its own and wait until the server has it.
//
// usage: node watch.mjs <wsURL> <automergeURL> --want JSON [--set KEY=VALUE]
//   --want JSON       the content to wait for (compared as JSON, deep-equal)
//   --set KEY=VALUE   after that, set the root key KEY to the string VALUE (a text, as
//                     Automerge does with JS strings) and wait until the server has it
//
// stderr: a line ending in "ready" once the client has the document and the server's heads.
// stdout (one line): {"ok":true,"url","before","content","heads","elapsedMs"}
//   before: the content when it was ready
// exit: 0 ok, 1 check failed, 2 usage, 124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).

import {
  run, step, waitFor, makeClient, waitServer, requireStorageId, findOrFail, waitServerSynced,
  content, deepEqual, requireWsUrl, requireDocUrl, UsageError, closeAll,
} from "./lib.mjs"

run(
  "watch",
  {
    usage: "<wsURL> <automergeURL> --want JSON [--set KEY=VALUE]",
    positionals: ["wsUrl", "docUrl"],
    required: 2,
    options: { want: { type: "string" }, set: { type: "string" } },
  },
  async (args, opts) => {
    const wsUrl = requireWsUrl(args.wsUrl)
    const docUrl = requireDocUrl(args.docUrl)
    let want
    try {
      want = JSON.parse(opts.want ?? "")
    } catch (e) {
      throw new UsageError(`--want is not JSON: ${e.message}`)
    }
    let set
    if (opts.set !== undefined) {
      const i = opts.set.indexOf("=")
      if (i <= 0) throw new UsageError("--set wants KEY=VALUE")
      set = [opts.set.slice(0, i), opts.set.slice(i + 1)]
    }
    const W = await makeClient({ name: "watcher", wsUrl })
    const server = await waitServer(W)
    const serverStorageId = requireStorageId(server)
    const { handle: h } = await findOrFail(W, docUrl)
    await waitServerSynced(W, h, serverStorageId)
    const before = content(h)
    step("ready")
    await waitFor(`content == ${JSON.stringify(want)}`, () => deepEqual(content(h), want))
    if (set) {
      step(`set ${set[0]}`)
      h.change(d => {
        d[set[0]] = set[1]
      })
      await waitServerSynced(W, h, serverStorageId)
    }
    const out = { url: docUrl, before, content: content(h), heads: h.heads() }
    await closeAll(W)
    return out
  }
)
