// cluster.mjs: real automerge-repo clients spread over several Plait nodes edit the same
// documents concurrently, in a stream, and must all converge with nothing lost.
//
// usage: node cluster.mjs <wsURL,wsURL,...> [--docs D] [--clients K] [--edits N] [--interval-ms I]
//   wsURLs         comma-separated sync endpoints, one per node (or one haproxy for all)
//   --docs D       documents (default 2)
//   --clients K    clients per URL (default 2)
//   --edits N      edits per client per document (default 20)
//   --interval-ms  pause between one client's edit rounds (default 50)
//
// Steps: a creator client on the first URL creates the documents and waits until that node
// has stored them; K clients per URL find every document; every client makes N edit rounds,
// one edit per document per round, tagged "<name>-<i>" (each client reconnects by itself,
// every 500 ms, if its node drops it); then wait until every client has the same heads for
// every document and every tag appears exactly N times in items: no edit lost.
// The Go test may inject faults (Redis, nodes) while the edits stream; a line "EDITING" on
// stderr marks the start of the stream and "EDITED" its end.
//
// stdout (one line): {"ok":true,"docs":[{"url","heads","counts"}],"clients":n,"editMs",
//   "convergeMs","reconnects":{name:n}}
// exit: 0 ok, 1 check failed, 2 usage, 124 timeout (PLAIT_E2E_TIMEOUT_MS).

import {
  run, step, log, sleep, waitFor, makeClient, waitServer, requireStorageId, findOrFail,
  waitServerSynced, sameHeads, content, editOnce, tagCounts, DEFAULT_CONTENT, intOpt,
  requireWsUrl, CheckError, elapsed, closeAll,
} from "./lib.mjs"

run(
  "cluster",
  {
    usage: "<wsURL,wsURL,...> [--docs D] [--clients K] [--edits N] [--interval-ms I]",
    positionals: ["wsUrls"],
    required: 1,
    options: {
      docs: { type: "string" }, clients: { type: "string" },
      edits: { type: "string" }, "interval-ms": { type: "string" },
    },
  },
  async (args, opts) => {
    const urls = args.wsUrls.split(",").map(requireWsUrl)
    const D = intOpt(opts, "docs", 2)
    const K = intOpt(opts, "clients", 2)
    const N = intOpt(opts, "edits", 20)
    const interval = intOpt(opts, "interval-ms", 50)

    const creator = await makeClient({ name: "creator", wsUrl: urls[0], retryMs: 500 })
    const sid = requireStorageId(await waitServer(creator))
    const docUrls = []
    for (let d = 0; d < D; d++) {
      const h = creator.repo.create(structuredClone(DEFAULT_CONTENT))
      await waitServerSynced(creator, h, sid)
      docUrls.push(h.url)
    }

    const clients = []
    for (let u = 0; u < urls.length; u++) {
      for (let k = 0; k < K; k++) {
        const c = await makeClient({ name: `n${u}c${k}`, wsUrl: urls[u], retryMs: 500 })
        await waitServer(c)
        c.handles = []
        for (const url of docUrls) c.handles.push((await findOrFail(c, url)).handle)
        clients.push(c)
      }
    }
    await closeAll(creator)

    step(`${clients.length} clients: ${N} edit rounds on ${D} documents`)
    console.error("EDITING")
    const t0 = elapsed()
    await Promise.all(
      clients.map(async c => {
        for (let i = 0; i < N; i++) {
          for (const h of c.handles) editOnce(h, c.name, i)
          await sleep(Math.random() * interval * 2)
        }
      })
    )
    const editMs = elapsed() - t0
    console.error("EDITED")

    const t1 = elapsed()
    await waitFor("every client has every edit", () =>
      docUrls.every((_, d) => {
        const first = clients[0].handles[d].heads()
        return clients.every(c => {
          if (!sameHeads(c.handles[d].heads(), first)) return false
          const counts = tagCounts(content(c.handles[d]))
          return clients.every(o => counts[o.name] === N)
        })
      }), 50)
    const convergeMs = elapsed() - t1

    const docs = docUrls.map((url, d) => ({
      url,
      heads: clients[0].handles[d].heads(),
      counts: tagCounts(content(clients[0].handles[d])),
    }))
    const reconnects = Object.fromEntries(clients.map(c => [c.name, c.stats.peerMessages.length - 1]))
    await closeAll(...clients)
    return { docs, clients: clients.length, editMs, convergeMs, reconnects }
  }
)
