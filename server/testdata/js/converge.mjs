// converge.mjs: three real automerge-repo clients converge through the server, and an
// ephemeral message is relayed.
//
// usage: node converge.mjs <wsURL> [--edits N] [--max-delay-ms M]
//   wsURL           ws://host:port/path of the sync endpoint
//   --edits N       edits per client (default 20)
//   --max-delay-ms  random pause between one client's edits, 0..M ms (default 10)
//
// Steps: client A (no storage) creates a document {title, items: [], marks: {}, numbers} and
// waits until the server's heads (learnt from its sync messages, keyed by the storageId in its
// peer message) equal A's; client B finds it by URL; A and B edit concurrently without waiting
// (each pushes "A-i"/"B-i" into items and sets marks["A-i"]/marks["B-i"]); wait until A, B and
// the server have the same heads and A and B the same content; a fresh client C finds the URL
// and must reach the same heads and content; then B broadcasts two ephemeral messages, which
// A and C must both receive in order with senderId == B's peerId.
//
// stdout (one line): {"ok":true,"url","documentId","heads","content","tags":{"A":N,"B":N},
//   "ephemeralReceived":true,"ephemeral":{"A":[1,2],"C":[1,2],"senderId"},
//   "peers":{"A","B","C"},"server":{peerId,storageId,isEphemeral,selectedProtocolVersion,targetIdIsUs},
//   "timings":{...ms},"wire":{"A":stats,"B":stats,"C":stats},"elapsedMs"}
// exit: 0 ok, 1 check failed, 2 usage, 124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).

import {
  run, step, log, sleep, waitFor, makeClient, waitServer, requireStorageId, findOrFail,
  serverHasOurHeads, waitServerSynced, sameHeads, content, editOnce, tagCounts, deepEqual,
  DEFAULT_CONTENT, intOpt, requireWsUrl, CheckError, elapsed, closeAll,
} from "./lib.mjs"

run(
  "converge",
  {
    usage: "<wsURL> [--edits N] [--max-delay-ms M]",
    positionals: ["wsUrl"],
    required: 1,
    options: { edits: { type: "string" }, "max-delay-ms": { type: "string" } },
  },
  async (args, opts) => {
    const wsUrl = requireWsUrl(args.wsUrl)
    const n = intOpt(opts, "edits", 20)
    const maxDelay = intOpt(opts, "max-delay-ms", 10)
    const timings = {}

    const A = await makeClient({ name: "A", wsUrl })
    const server = await waitServer(A)
    const serverStorageId = requireStorageId(server)
    timings.connectA = elapsed()

    step("A: create document")
    const hA = A.repo.create(structuredClone(DEFAULT_CONTENT))
    const url = hA.url
    await waitServerSynced(A, hA, serverStorageId)
    timings.serverHasDoc = elapsed()

    const B = await makeClient({ name: "B", wsUrl })
    await waitServer(B)
    const { handle: hB, findMs: findB } = await findOrFail(B, url)
    timings.findB = findB

    step(`A and B: ${n} concurrent edits each`)
    const editLoop = async (h, tag) => {
      for (let i = 0; i < n; i++) {
        editOnce(h, tag, i)
        if (maxDelay > 0) await sleep(Math.floor(Math.random() * (maxDelay + 1)))
      }
    }
    await Promise.all([editLoop(hA, "A"), editLoop(hB, "B")])
    timings.editsDone = elapsed()

    await waitFor("A, B and server converged", () =>
      sameHeads(hA.heads(), hB.heads()) &&
      serverHasOurHeads(hA, serverStorageId) &&
      serverHasOurHeads(hB, serverStorageId) &&
      deepEqual(content(hA), content(hB))
    )
    timings.converged = elapsed()

    const finalHeads = hA.heads()
    const finalContent = content(hA)
    const tags = tagCounts(finalContent)
    if (tags.A !== n || tags.B !== n || Object.keys(finalContent.marks).length !== 2 * n) {
      throw new CheckError(`converged content lost edits: tags=${JSON.stringify(tags)}, marks=${Object.keys(finalContent.marks).length}, want ${n} each`)
    }

    const C = await makeClient({ name: "C", wsUrl })
    await waitServer(C)
    const { handle: hC, findMs: findC } = await findOrFail(C, url)
    timings.findC = findC
    await waitFor("C has A's heads", () => sameHeads(hC.heads(), finalHeads))
    if (!deepEqual(content(hC), finalContent)) {
      throw new CheckError(`C's content differs from A's: ${JSON.stringify(content(hC))}`)
    }

    step("B: broadcast ephemeral messages")
    const got = { A: [], C: [] }
    let badSender = null
    const listen = (h, who) =>
      h.on("ephemeral-message", ({ senderId, message }) => {
        if (message?.kind !== "plait-e2e") return
        if (senderId !== B.repo.peerId) badSender = `${who} got senderId ${senderId}, want ${B.repo.peerId}`
        got[who].push(message.n)
      })
    listen(hA, "A")
    listen(hC, "C")
    const ephemeralStart = elapsed()
    hB.broadcast({ kind: "plait-e2e", n: 1, from: "B" })
    hB.broadcast({ kind: "plait-e2e", n: 2, from: "B" })
    await waitFor("A and C received both ephemeral messages", () => got.A.length >= 2 && got.C.length >= 2)
    timings.ephemeral = elapsed() - ephemeralStart
    if (badSender) throw new CheckError(`ephemeral relay changed the sender: ${badSender}`)
    if (!deepEqual(got.A, [1, 2]) || !deepEqual(got.C, [1, 2])) {
      throw new CheckError(`ephemeral messages out of order or duplicated: ${JSON.stringify(got)}`)
    }
    // Give a duplicate (a relay loop, or a server echoing to the sender) time to show up.
    await sleep(200)
    if (got.A.length !== 2 || got.C.length !== 2) {
      throw new CheckError(`ephemeral messages duplicated: ${JSON.stringify(got)}`)
    }

    const wire = { A: A.stats, B: B.stats, C: C.stats }
    await closeAll(A, B, C)
    log("done")
    return {
      url,
      documentId: hA.documentId,
      heads: finalHeads,
      content: finalContent,
      tags,
      ephemeralReceived: true,
      ephemeral: { ...got, senderId: B.repo.peerId },
      peers: { A: A.repo.peerId, B: B.repo.peerId, C: C.repo.peerId },
      server,
      timings,
      wire,
    }
  }
)
