// claim.mjs: an app creates a document before it may (login mode: nobody has claimed it yet),
// prints its URL, and waits until the server has it: the Go test claims the document through
// the REST API meanwhile, and the server then lets the client's open session in.
//
// usage: node claim.mjs <wsURL>
//   wsURL  the sync endpoint, with the creator's access token (?access_token=...)
//
// stderr: a line "CREATED <automergeURL>" once the document exists locally.
// stdout (one line): {"ok":true,"url","heads","content","wire","elapsedMs"}
// exit: 0 the server has the document, 1 check failed, 2 usage,
//       124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).

import {
  run, step, makeClient, waitServer, requireStorageId, waitServerSynced, content, requireWsUrl,
  closeAll, DEFAULT_CONTENT,
} from "./lib.mjs"

run("claim", { usage: "<wsURL>", positionals: ["wsUrl"], required: 1 }, async args => {
  const wsUrl = requireWsUrl(args.wsUrl)
  const W = await makeClient({ name: "creator", wsUrl })
  const server = await waitServer(W)
  const serverStorageId = requireStorageId(server)
  step("creator: create document")
  const h = W.repo.create(structuredClone(DEFAULT_CONTENT))
  console.error(`CREATED ${h.url}`)
  await waitServerSynced(W, h, serverStorageId)
  const out = { url: h.url, heads: h.heads(), content: content(h), wire: W.stats }
  await closeAll(W)
  return out
})
