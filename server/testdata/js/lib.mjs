// lib.mjs: helpers shared by the end-to-end driver scripts in this folder.
//
// Every script is run by a Go test as `node <script>.mjs <args>` and follows one contract:
//   - stdout carries exactly one line: a JSON object, {"ok": true, ...} on success or
//     {"ok": false, "error": "...", "step": "..."} on failure;
//   - stderr carries progress lines ("[script +123ms] ...") and the failure message;
//   - exit codes: 0 success, 1 check failed (unavailable, mismatch, server error),
//     2 bad usage, 124 overall timeout (PLAIT_E2E_TIMEOUT_MS, default 30000).
// "wire" in a result is what one client's socket carried: {in, out: {messages, bytes, byType:
// {type: n}, syncChanges, syncDataBytes, syncFirstBytes: {"0x42": n, "0x43": n}},
// peerMessages: [peer messages received], errors: [messages of error frames received]}.
// The clients are the real @automerge/automerge-repo 2.5.6 Repo with the real
// WebSocketClientAdapter (protocol "1"), so they behave exactly like a Node or browser app.

import fs from "node:fs"
import { parseArgs } from "node:util"
import { isDeepStrictEqual } from "node:util"
import { Repo, cbor, encodeHeads, isValidAutomergeUrl } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import * as Automerge from "@automerge/automerge"

// automerge-repo reports some internal errors with console.log: keep stdout for the result line.
console.log = (...args) => console.error(...args)

export class UsageError extends Error {}

/** CheckError fails the script with exit code 1 and a clear message. */
export class CheckError extends Error {}

const t0 = performance.now()
export const elapsed = () => Math.round(performance.now() - t0)

let scriptName = "script"
let currentStep = "start"
let finished = false

export function log(...args) {
  console.error(`[${scriptName} +${elapsed()}ms]`, ...args)
}

/** step records what the script is doing, so that a timeout can say what it was waiting for. */
export function step(name) {
  currentStep = name
  log(name)
}

function finish(code, obj) {
  if (finished) return
  finished = true
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code))
}

function fail(code, message) {
  if (finished) return
  console.error(`[${scriptName} +${elapsed()}ms] error: ${message}`)
  finish(code, { ok: false, error: message, step: currentStep, elapsedMs: elapsed() })
}

/**
 * run parses the arguments and runs main under the overall timeout.
 * spec: { usage, positionals: [names], required: n, options: node:util parseArgs options }
 * main(args, opts) returns the result object (ok and elapsedMs are added).
 */
export function run(name, spec, main) {
  scriptName = name
  const timeoutMs = Number(process.env.PLAIT_E2E_TIMEOUT_MS || 30000)
  setTimeout(
    () => fail(124, `timeout after ${timeoutMs} ms while: ${currentStep}`),
    timeoutMs
  )
  process.on("uncaughtException", e => fail(1, `uncaught exception while ${currentStep}: ${e?.stack ?? e}`))
  process.on("unhandledRejection", e => fail(1, `unhandled rejection while ${currentStep}: ${e?.stack ?? e}`))

  let parsed
  try {
    parsed = parseArgs({
      args: process.argv.slice(2),
      options: spec.options ?? {},
      allowPositionals: true,
      strict: true,
    })
    if (parsed.positionals.length < (spec.required ?? 0) || parsed.positionals.length > spec.positionals.length) {
      throw new UsageError(`expected ${spec.required}..${spec.positionals.length} arguments, got ${parsed.positionals.length}`)
    }
  } catch (e) {
    console.error(`usage: node ${name}.mjs ${spec.usage}\n${e.message}`)
    finish(2, { ok: false, error: `usage: ${e.message}`, step: "args", elapsedMs: elapsed() })
    return
  }
  const args = Object.fromEntries(spec.positionals.map((p, i) => [p, parsed.positionals[i]]))
  Promise.resolve()
    .then(() => main(args, parsed.values))
    .then(
      result => finish(0, { ok: true, ...result, elapsedMs: elapsed() }),
      e => {
        if (e instanceof UsageError) {
          console.error(`usage: node ${name}.mjs ${spec.usage}`)
          fail(2, `usage: ${e.message}`)
        } else if (e instanceof CheckError) {
          fail(1, e.message)
        } else {
          fail(1, `${e?.stack ?? e}`)
        }
      }
    )
}

export const sleep = ms => new Promise(r => setTimeout(r, ms))

/** waitFor polls cond every 20 ms until it returns a truthy value, which it returns. */
export async function waitFor(what, cond, intervalMs = 20) {
  step(`waiting: ${what}`)
  for (;;) {
    const v = await cond()
    if (v) return v
    await sleep(intervalMs)
  }
}

export function intOpt(opts, name, dflt) {
  if (opts[name] === undefined) return dflt
  const n = Number(opts[name])
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer`)
  return n
}

export function requireWsUrl(u) {
  if (!/^wss?:\/\//.test(u ?? "")) throw new UsageError(`not a ws:// or wss:// URL: ${u}`)
  return u
}

export function requireDocUrl(u) {
  if (!isValidAutomergeUrl(u ?? "")) throw new UsageError(`not an automerge: URL: ${u}`)
  return u
}

// ---------------------------------------------------------------------------------------------
// Wire statistics: a WebSocketClientAdapter that counts what crosses the socket.

function newDirStats() {
  return { messages: 0, bytes: 0, byType: {}, syncChanges: 0, syncDataBytes: 0, syncFirstBytes: {} }
}

/**
 * countChanges counts the changes in one entry of a sync message's change list: a V1 (0x42)
 * message carries one change chunk per entry, a V2 (0x43) message one entry holding many
 * concatenated change chunks or a whole document chunk.
 */
function countChanges(buf) {
  let off = 0
  let n = 0
  while (off < buf.length) {
    // chunk: magic 85 6f 4a 83, 4-byte checksum, type (0 document, 1 change, 2 compressed change), LEB128 length
    if (buf[off] !== 0x85 || buf[off + 1] !== 0x6f || buf[off + 2] !== 0x4a || buf[off + 3] !== 0x83) {
      throw new Error("not an automerge chunk")
    }
    const type = buf[off + 8]
    let p = off + 9
    let len = 0
    for (let shift = 0; ; shift += 7) {
      const b = buf[p++]
      len += (b & 0x7f) * 2 ** shift
      if (b < 0x80) break
    }
    const end = p + len
    if (type === 0) n += Automerge.getAllChanges(Automerge.load(buf.subarray(off, end))).length
    else n++
    off = end
  }
  return n
}

function countMessage(dir, message, frameBytes) {
  dir.messages++
  dir.bytes += frameBytes
  const t = message?.type ?? "?"
  dir.byType[t] = (dir.byType[t] ?? 0) + 1
  if ((t === "sync" || t === "request") && message.data instanceof Uint8Array && message.data.length > 0) {
    dir.syncDataBytes += message.data.length
    const fb = "0x" + message.data[0].toString(16)
    dir.syncFirstBytes[fb] = (dir.syncFirstBytes[fb] ?? 0) + 1
    try {
      for (const chunk of Automerge.decodeSyncMessage(message.data).changes) dir.syncChanges += countChanges(chunk)
    } catch {
      dir.undecodableSync = (dir.undecodableSync ?? 0) + 1
    }
  }
}

class CountingClientAdapter extends WebSocketClientAdapter {
  constructor(url, retryInterval, stats) {
    super(url, retryInterval)
    this.stats = stats
  }

  send(message) {
    let size = 0
    try {
      size = cbor.encode(message).byteLength
    } catch {}
    countMessage(this.stats.out, message, size)
    super.send(message)
  }

  receiveMessage(bytes) {
    let message
    try {
      message = cbor.decode(new Uint8Array(bytes))
    } catch {}
    countMessage(this.stats.in, message, bytes.byteLength)
    if (message?.type === "peer") {
      this.stats.peerMessages.push({
        senderId: message.senderId,
        targetId: message.targetId,
        selectedProtocolVersion: message.selectedProtocolVersion,
        peerMetadata: message.peerMetadata,
      })
    } else if (message?.type === "error") {
      // The real client only logs these; record them so a test can see why it was refused.
      this.stats.errors.push(String(message.message))
      log(`server sent error: ${message.message}`)
    }
    super.receiveMessage(bytes)
  }
}

// ---------------------------------------------------------------------------------------------
// Clients

/**
 * makeClient builds a Repo like an app would: default share policy (announce everything),
 * optional NodeFS storage (then it has a storageId and isEphemeral false), optional network.
 */
export async function makeClient({ name, wsUrl, storageDir, retryMs = 5000 }) {
  const stats = { in: newDirStats(), out: newDirStats(), peerMessages: [], errors: [] }
  const adapter = wsUrl ? new CountingClientAdapter(wsUrl, retryMs, stats) : undefined
  let storage
  if (storageDir) {
    storage = new NodeFSStorageAdapter(storageDir)
    // automerge-repo creates the storage id lazily, and two concurrent first calls (the Repo
    // constructor's and repo.storageId()) each write a different UUID: the id announced to the
    // server would not be the one on disk. Create it up front, as StorageSubsystem.id() would.
    if (!(await storage.load(["storage-adapter-id"]))) {
      await storage.save(["storage-adapter-id"], new TextEncoder().encode(crypto.randomUUID()))
    }
  }
  const repo = new Repo({ network: adapter ? [adapter] : [], storage })
  return { name, repo, adapter, storage, stats }
}

/** waitServer waits for the server's peer message and returns its id and metadata. */
export async function waitServer(client) {
  const peerId = await waitFor(`${client.name}: server peer message`, () => client.repo.peers[0])
  const md = client.repo.peerMetadataByPeerId[peerId] ?? {}
  const pm = client.stats.peerMessages.at(-1) ?? {}
  return {
    peerId,
    storageId: md.storageId ?? null,
    isEphemeral: md.isEphemeral ?? null,
    selectedProtocolVersion: pm.selectedProtocolVersion ?? null,
    targetIdIsUs: pm.targetId === client.repo.peerId,
  }
}

export function requireStorageId(server) {
  if (!server.storageId) {
    throw new CheckError(
      `server ${server.peerId} announced no storageId in peer.peerMetadata: cannot tell what it has stored`
    )
  }
  return server.storageId
}

/** find opens a document; an unavailable document becomes a CheckError (or {unavailable}). */
export async function find(client, url) {
  step(`${client.name}: find ${url}`)
  const start = elapsed()
  try {
    const handle = await client.repo.find(url)
    return { handle, findMs: elapsed() - start }
  } catch (e) {
    const gotDocUnavailable = (client.stats.in.byType["doc-unavailable"] ?? 0) > 0
    return {
      handle: null,
      findMs: elapsed() - start,
      unavailable: /unavailable/.test(String(e?.message)),
      gotDocUnavailable,
      error: String(e?.message ?? e),
    }
  }
}

export async function findOrFail(client, url) {
  const r = await find(client, url)
  if (!r.handle) {
    throw new CheckError(
      `${client.name}: find(${url}) failed after ${r.findMs} ms: ${r.error}` +
        (r.gotDocUnavailable ? " (server sent doc-unavailable)" : " (no doc-unavailable message received)")
    )
  }
  return r
}

export function sameHeads(a, b) {
  if (!a || !b || a.length !== b.length) return false
  const s = new Set(a)
  return b.every(h => s.has(h))
}

/** normHeads accepts bs58check URL heads or 64-char hex heads and returns URL heads. */
export function normHeads(heads) {
  if (!Array.isArray(heads)) throw new UsageError("heads must be a JSON array of strings")
  return heads.map(h => (/^[0-9a-f]{64}$/.test(h) ? encodeHeads([h])[0] : h))
}

export const content = handle => JSON.parse(JSON.stringify(handle.doc()))

/** serverHasOurHeads: the server's last advertised heads (learnt from its sync messages) equal ours. */
export function serverHasOurHeads(handle, serverStorageId) {
  return sameHeads(handle.getSyncInfo(serverStorageId)?.lastHeads, handle.heads())
}

export async function waitServerSynced(client, handle, serverStorageId) {
  await waitFor(`${client.name}: server's heads == local heads`, () => serverHasOurHeads(handle, serverStorageId))
}

/**
 * waitSyncStatePersisted waits until the client's sync state for the server is on disk with
 * sharedHeads == local heads, so that the next run resumes instead of starting over.
 */
export async function waitSyncStatePersisted(client, handle, serverStorageId) {
  const key = [handle.documentId, "sync-state", serverStorageId]
  const file = client.storage.getFilePath(key)
  await waitFor(`${client.name}: sync state for ${serverStorageId} persisted`, () => {
    let shared
    try {
      // the file may be missing or half written
      shared = Automerge.decodeSyncState(new Uint8Array(fs.readFileSync(file))).sharedHeads
    } catch {
      return false
    }
    return sameHeads(shared, Automerge.getHeads(handle.doc()))
  })
}

// ---------------------------------------------------------------------------------------------
// Documents

/** The initial content create.mjs uses: the edit helpers need items (list) and marks (map). */
export const DEFAULT_CONTENT = { title: "plait e2e", items: [], marks: {}, numbers: [1, 2, 3] }

export function checkEditable(handle) {
  const d = handle.doc()
  if (!Array.isArray(d?.items) || typeof d?.marks !== "object" || d.marks === null) {
    throw new CheckError("document has no items list and marks map: create it with create.mjs")
  }
}

/** editOnce records one edit tagged `tag`: pushes "tag-i" into items and sets marks["tag-i"] = i. */
export function editOnce(handle, tag, i) {
  handle.change(d => {
    d.items.push(`${tag}-${i}`)
    d.marks[`${tag}-${i}`] = i
  })
}

export function edits(handle, tag, n) {
  checkEditable(handle)
  for (let i = 0; i < n; i++) editOnce(handle, tag, i)
}

/** tagCounts counts items per tag ("A-3" counts for A). */
export function tagCounts(c) {
  const counts = {}
  for (const it of c?.items ?? []) {
    if (typeof it !== "string") continue
    const tag = it.slice(0, it.lastIndexOf("-"))
    counts[tag] = (counts[tag] ?? 0) + 1
  }
  return counts
}

export function parseTags(s) {
  if (!s) return []
  return s.split(",").map(t => t.trim()).filter(Boolean)
}

export function checkTag(tag) {
  if (!/^[A-Za-z0-9_]+$/.test(tag ?? "")) throw new UsageError(`tag must match [A-Za-z0-9_]+: ${tag}`)
  return tag
}

export { isDeepStrictEqual as deepEqual }

export async function closeAll(...clients) {
  for (const c of clients) {
    if (!c) continue
    try {
      await c.repo.shutdown()
    } catch (e) {
      log(`${c.name}: shutdown: ${e}`)
    }
  }
}
