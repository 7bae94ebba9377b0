// offline.mjs: a client with its own NodeFS storage (so it has a storageId and is not
// ephemeral, like a browser app with IndexedDB) that works offline and resumes.
//
// usage: node offline.mjs <wsURL> <storageDir> <phase> <automergeURL> [options]
//   wsURL        ws://host:port/path of the sync endpoint ("-" for the offline phases)
//   storageDir   the client's storage directory; keep it between phases
//   phase        one of:
//     fetch         online: find the document, wait until in sync with the server, persist it
//                   and the sync state for the server's storageId, exit
//     edit-offline  no network: open the document from storageDir (fails if absent), make
//                   --edits edits tagged --tag, save, exit
//     edit-online   online: open (from storage or the server), edit, wait until the server has it
//     sync          online: open from storage, reconnect, wait until the server's heads equal
//                   ours and every --expect-tags tag is present, persist, exit
//     show          no network: print what storageDir holds
//     cycle         one process: like fetch, then disconnect the socket, edit offline, print
//                   "PHASE offline-edited" on stderr, wait for a line on stdin (--wait-stdin)
//                   or --pause-ms, reconnect with the same peerId, then like sync
//   automergeURL automerge:<documentId>
//   --tag T          edit tag ([A-Za-z0-9_]+, default "O"); edits push "T-i" into items and set
//                    marks["T-i"] = i (the document needs items and marks, see create.mjs)
//   --edits N        number of edits (default 3)
//   --expect-tags L  comma-separated tags that must appear in items before sync/cycle finish
//   --wait-stdin     cycle: wait for one stdin line (or EOF) before reconnecting
//   --pause-ms N     cycle: otherwise sleep N ms before reconnecting (default 0)
//
// A Go test of "edited while disconnected converges, both ways":
//   create.mjs ws -> URL;  offline.mjs ws dirO fetch URL;  offline.mjs - dirO edit-offline URL --tag O;
//   edit.mjs ws URL X;  offline.mjs ws dirO sync URL --expect-tags O,X;  load.mjs ws URL <heads>.
//
// stdout (one line): {"ok":true,"phase","url","heads","content","tags":{tag:count},
//   "storageId" (this client's),"server":{...}|null,"syncStatePersisted":bool,
//   "resume":{"in":{messages,bytes,syncChanges},"out":{...}}|null (cycle: traffic after the
//   reconnect; sync: the whole run; syncChanges counts the changes inside sync messages, and a
//   V2 (0x43) whole-document message counts every change of the document),"wire":{...}|null,
//   "elapsedMs"}
// exit: 0 ok, 1 check failed, 2 usage, 124 timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).

import readline from "node:readline"
import fs from "node:fs"
import {
  run, step, log, sleep, waitFor, makeClient, waitServer, requireStorageId, findOrFail,
  serverHasOurHeads, waitSyncStatePersisted, content, edits, tagCounts, parseTags, checkTag,
  intOpt, requireWsUrl, requireDocUrl, UsageError, CheckError, closeAll,
} from "./lib.mjs"

const PHASES = ["fetch", "edit-offline", "edit-online", "sync", "show", "cycle"]
const OFFLINE = new Set(["edit-offline", "show"])

const ZERO = { messages: 0, bytes: 0, syncChanges: 0 }

function pick(d) {
  return { messages: d.messages, bytes: d.bytes, syncChanges: d.syncChanges, byType: { ...d.byType } }
}

function delta(after, before) {
  const sub = (a, b) => ({
    messages: a.messages - b.messages,
    bytes: a.bytes - b.bytes,
    syncChanges: a.syncChanges - b.syncChanges,
  })
  return { in: sub(after.in, before.in), out: sub(after.out, before.out) }
}

function readLine() {
  return new Promise(resolve => {
    const rl = readline.createInterface({ input: process.stdin })
    rl.once("line", () => {
      rl.close()
      resolve()
    })
    rl.once("close", resolve)
  })
}

run(
  "offline",
  {
    usage: "<wsURL|-> <storageDir> <fetch|edit-offline|edit-online|sync|show|cycle> <automergeURL> [--tag T] [--edits N] [--expect-tags A,B] [--wait-stdin] [--pause-ms N]",
    positionals: ["wsUrl", "storageDir", "phase", "docUrl"],
    required: 4,
    options: {
      tag: { type: "string" },
      edits: { type: "string" },
      "expect-tags": { type: "string" },
      "wait-stdin": { type: "boolean" },
      "pause-ms": { type: "string" },
    },
  },
  async (args, opts) => {
    const phase = args.phase
    if (!PHASES.includes(phase)) throw new UsageError(`unknown phase ${phase}: want one of ${PHASES.join(", ")}`)
    const online = !OFFLINE.has(phase)
    const wsUrl = online ? requireWsUrl(args.wsUrl) : undefined
    const docUrl = requireDocUrl(args.docUrl)
    const storageDir = args.storageDir
    if (!storageDir) throw new UsageError("storageDir is required")
    const tag = checkTag(opts.tag ?? "O")
    const n = intOpt(opts, "edits", 3)
    const expectTags = parseTags(opts["expect-tags"]).map(checkTag)
    const pauseMs = intOpt(opts, "pause-ms", 0)
    if (!online && !fs.existsSync(storageDir)) throw new CheckError(`storage directory ${storageDir} does not exist`)

    const client = await makeClient({ name: `offline ${tag}`, wsUrl, storageDir })
    const storageId = await client.repo.storageId()
    let server = null
    let serverStorageId = null
    if (online) {
      server = await waitServer(client)
      serverStorageId = requireStorageId(server)
    }

    const r = await findOrFail(client, docUrl)
    const h = r.handle
    const hasExpected = () => {
      const t = tagCounts(content(h))
      return expectTags.every(x => (t[x] ?? 0) > 0)
    }
    const syncAndPersist = async what => {
      await waitFor(`${what}: server's heads == ours${expectTags.length ? ` and tags ${expectTags} present` : ""}`, () =>
        serverHasOurHeads(h, serverStorageId) && hasExpected()
      )
      await waitSyncStatePersisted(client, h, serverStorageId)
    }

    let resume = null
    switch (phase) {
      case "fetch":
        await syncAndPersist("fetch")
        break
      case "edit-offline":
        step(`${n} offline edits tagged ${tag}`)
        edits(h, tag, n)
        break
      case "edit-online":
        await syncAndPersist("before edits")
        step(`${n} online edits tagged ${tag}`)
        edits(h, tag, n)
        await syncAndPersist("after edits")
        break
      case "sync":
        await syncAndPersist("sync")
        resume = delta(client.stats, { in: ZERO, out: ZERO })
        break
      case "show":
        break
      case "cycle": {
        // like fetch (without the expected tags: they are for after the reconnect)
        await waitFor("cycle: server's heads == ours", () => serverHasOurHeads(h, serverStorageId))
        await waitSyncStatePersisted(client, h, serverStorageId)
        step("disconnect")
        const metadata = { storageId, isEphemeral: false }
        client.adapter.disconnect()
        await waitFor("server peer gone", () => client.repo.peers.length === 0)
        step(`${n} offline edits tagged ${tag}`)
        edits(h, tag, n)
        await client.repo.flush()
        console.error("PHASE offline-edited")
        if (opts["wait-stdin"]) {
          step("waiting for a line on stdin")
          await readLine()
        } else if (pauseMs > 0) {
          await sleep(pauseMs)
        }
        const before = { in: pick(client.stats.in), out: pick(client.stats.out) }
        step("reconnect")
        client.adapter.connect(client.repo.peerId, metadata)
        await waitFor("server peer back", () => client.repo.peers.length > 0)
        await syncAndPersist("after reconnect")
        resume = delta(client.stats, before)
        break
      }
    }

    const c = content(h)
    const out = {
      phase,
      url: docUrl,
      heads: h.heads(),
      content: c,
      tags: tagCounts(c),
      storageId,
      server,
      syncStatePersisted: online,
      resume,
      wire: online ? client.stats : null,
    }
    step("shutdown (flush storage)")
    await closeAll(client)
    log("done")
    return out
  }
)
