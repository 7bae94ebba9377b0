// createfind.mjs: one client creates documents and another finds each one at once, as a new user
// would (two tabs, two devices, a test, an automation that creates and shares).
//
// usage: node createfind.mjs <creatorWsURL> <finderWsURL> [--n N]
//   creatorWsURL  the sync endpoint the creator connects to
//   finderWsURL   the sync endpoint the finder connects to (another node of a cluster, or the same)
//   --n           how many documents (default 200), one after the other
//
// For each document: the creator calls repo.create(); at once, without waiting for the server,
// the finder calls repo.find(url) on its own Repo, which rejects for good if the server answers
// doc-unavailable. Each find must resolve with the creator's content.
//
// stdout (one line): {"ok":true,"n","failures":[{"i","error"}],"findMs":{"p50","p99","max"}}
// ok is false if any find failed; exit: 0 ok, 1 a find failed, 2 usage, 124 timeout.

import {
  run, step, makeClient, waitServer, find, content, deepEqual, requireWsUrl, UsageError,
  CheckError, closeAll,
} from "./lib.mjs"

run(
  "createfind",
  {
    usage: "<creatorWsURL> <finderWsURL> [--n N]",
    positionals: ["creatorUrl", "finderUrl"],
    required: 2,
    options: { n: { type: "string" } },
  },
  async (args, opts) => {
    const n = opts.n === undefined ? 200 : Number(opts.n)
    if (!Number.isInteger(n) || n < 1 || n > 10000) throw new UsageError("--n must be an integer in 1..10000")
    const C = await makeClient({ name: "creator", wsUrl: requireWsUrl(args.creatorUrl) })
    const F = await makeClient({ name: "finder", wsUrl: requireWsUrl(args.finderUrl) })
    await waitServer(C)
    await waitServer(F)
    const failures = []
    const times = []
    for (let i = 0; i < n; i++) {
      step(`document ${i}`)
      const initial = { title: `doc ${i}`, items: [i] }
      const h = C.repo.create(initial)
      const r = await find(F, h.url)
      if (!r.handle) {
        failures.push({ i, error: `${r.error}${r.gotDocUnavailable ? " (server sent doc-unavailable)" : ""}` })
        continue
      }
      await r.handle.whenReady()
      if (!deepEqual(content(r.handle), initial)) {
        failures.push({ i, error: `content ${JSON.stringify(content(r.handle))}` })
        continue
      }
      times.push(r.findMs)
    }
    await closeAll(C, F)
    times.sort((a, b) => a - b)
    const q = p => (times.length ? times[Math.min(times.length - 1, Math.floor(p * times.length))] : null)
    const result = { n, failures, findMs: { p50: q(0.5), p99: q(0.99), max: times.at(-1) ?? null } }
    if (failures.length > 0) {
      throw new CheckError(`${failures.length} of ${n} finds failed; first: document ${failures[0].i}: ${failures[0].error}`)
    }
    return result
  }
)
