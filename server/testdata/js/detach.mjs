// detach.mjs: a client has a document open when the server deletes it; it is told the
// document is unavailable (and nothing more of it arrives), while the same client keeps
// working with its other documents.
//
// usage: node detach.mjs <wsURL> <automergeURL>
//   wsURL         the sync endpoint (with ?access_token=... on a login node)
//   automergeURL  the document the test deletes while this client has it open
//
// stderr: a line "READY" once the client has the document, in sync with the server; the Go
// test then deletes it.
// stdout (one line): {"ok":true,"url","contentBefore","unavailable","syncAfter","wire","elapsedMs"}
//   unavailable  doc-unavailable messages for the document received after READY (>= 1)
//   syncAfter    sync messages for the document received after the first doc-unavailable
// exit: 0 detached, 1 check failed, 2 usage, 124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).

import {
  run, step, waitFor, sleep, makeClient, waitServer, requireStorageId, findOrFail,
  waitServerSynced, content, requireWsUrl, requireDocUrl, closeAll, editOnce,
} from "./lib.mjs"

run("detach", { usage: "<wsURL> <automergeURL>", positionals: ["wsUrl", "docUrl"], required: 2 }, async args => {
  const wsUrl = requireWsUrl(args.wsUrl)
  const docUrl = requireDocUrl(args.docUrl)
  const C = await makeClient({ name: "holder", wsUrl })
  const serverStorageId = requireStorageId(await waitServer(C))
  const { handle: h } = await findOrFail(C, docUrl)
  await waitServerSynced(C, h, serverStorageId)
  const contentBefore = content(h)
  const docId = h.documentId
  // Count the messages about this document from now on.
  let unavailable = 0
  let syncAfter = 0
  C.adapter.on("message", m => {
    if (m.documentId !== docId) return
    if (m.type === "doc-unavailable") unavailable++
    else if (m.type === "sync" && unavailable > 0) syncAfter++
  })
  console.error("READY")
  step("holder: wait to be told the document is unavailable")
  await waitFor("doc-unavailable after the delete", () => unavailable > 0)
  // Still editing locally: the server does not take the change back to anyone.
  editOnce(h, "after-delete", 0)
  await sleep(500)
  const wire = C.stats
  await closeAll(C)
  return { url: docUrl, contentBefore, unavailable, syncAfter, wire }
})
