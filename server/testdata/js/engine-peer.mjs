// engine-peer.mjs: a bare @automerge/automerge 3.5 peer (no automerge-repo, no WebSocket) that
// exchanges sync messages with a Go test over stdin/stdout, for pkg/syncengine's JS tests.
//
// usage: node engine-peer.mjs [--populate N] [--seed S] [--tag T]
//   --populate N  make N changes before reading stdin (the first one creates the structure
//                 {items: [], text: "hello", marks: {}, count: Counter(0)}); default 0
//   --seed S      seed of the edits' pseudo-random choices (default 1)
//   --tag T       tag of this peer's keys and items, [A-Za-z0-9_]+ (default "J")
//
// It keeps one document (the default, "next", API of @automerge/automerge 3.x) and one
// SyncState for the Go peer (initSyncState, generateSyncMessage, receiveSyncMessage), and
// reads one JSON command per line on stdin, in order:
//   {"sync": base64, "epoch": e}  a sync message from the Go peer (ignored if e is older than
//                                 the current epoch: it was in flight across a reconnect)
//   {"edit": n}                   make n edits now
//   {"auto": {"edits": n, "everyMs": m}}  make n edits, one every m ms, on a timer
//   {"create": true}              create the structure (if this document has none)
//   {"reconnect": "saved"|"fresh", "epoch": e}  a new connection: the sync state becomes
//                                 decodeSyncState(encodeSyncState(state)) ("saved") or
//                                 initSyncState() ("fresh"); sync lines carry epoch e from now on
//   {"ping": id}                  answer {"ack": id, "heads", "changes", "autoLeft"}
//   {"done": true}                print the result line and exit 0
// After every command (and every timer edit) it sends every sync message due:
// generateSyncMessage until it returns null, each as {"sync": base64, "epoch": e} on stdout.
// Edits (one change each, ASCII only): put into marks (ints, floats, booleans, null, strings,
// which the next API makes text objects, nested maps), insert into / delete from items, splice
// text (insert and delete), increment count; before the structure exists, put a root key.
//
// stdout: first the messages due at start and {"ready":true,"heads","changes"}; then the sync
// and ack lines above; then one result line:
//   {"ok":true,"heads":[hex],"doc":<Automerge.toJS of the doc>,"changes":N,"made":N,
//    "stats":{"in":{messages,bytes,firstBytes:{"0x42":n},changes,stale},"out":{...},
//             "reconnects":n,"maxMessageBytes":n},"elapsedMs"}
// or {"ok":false,"error","step","message":hex (the message refused, if any)}.
// exit: 0 ok, 1 check failed (a message or command refused), 2 usage, 124 timeout
// (PLAIT_E2E_TIMEOUT_MS, default 30000).

import readline from "node:readline"
import { parseArgs } from "node:util"
import * as Automerge from "@automerge/automerge"

const t0 = performance.now()
const elapsed = () => Math.round(performance.now() - t0)
let currentStep = "start"
let finished = false

function log(...args) {
  console.error(`[engine-peer +${elapsed()}ms]`, ...args)
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n")
}

function finish(code, obj) {
  if (finished) return
  finished = true
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code))
}

function fail(code, message, extra = {}) {
  if (finished) return
  console.error(`[engine-peer +${elapsed()}ms] error: ${message}`)
  finish(code, { ok: false, error: message, step: currentStep, elapsedMs: elapsed(), ...extra })
}

const timeoutMs = Number(process.env.PLAIT_E2E_TIMEOUT_MS || 30000)
setTimeout(() => fail(124, `timeout after ${timeoutMs} ms while: ${currentStep}`), timeoutMs).unref()
process.on("uncaughtException", e => fail(1, `uncaught exception while ${currentStep}: ${e?.stack ?? e}`))
process.on("unhandledRejection", e => fail(1, `unhandled rejection while ${currentStep}: ${e?.stack ?? e}`))

let opts
try {
  opts = parseArgs({
    args: process.argv.slice(2),
    options: { populate: { type: "string" }, seed: { type: "string" }, tag: { type: "string" } },
    allowPositionals: false,
    strict: true,
  }).values
} catch (e) {
  console.error("usage: node engine-peer.mjs [--populate N] [--seed S] [--tag T]\n" + e.message)
  finish(2, { ok: false, error: `usage: ${e.message}`, step: "args", elapsedMs: elapsed() })
}

function intOpt(name, dflt) {
  if (opts[name] === undefined) return dflt
  const n = Number(opts[name])
  if (!Number.isInteger(n) || n < 0) {
    finish(2, { ok: false, error: `usage: --${name} must be a non-negative integer`, step: "args" })
    return null
  }
  return n
}

if (opts) main()

function main() {
  const populate = intOpt("populate", 0)
  const seed = intOpt("seed", 1)
  const tag = opts.tag ?? "J"
  if (populate === null || seed === null) return
  if (!/^[A-Za-z0-9_]+$/.test(tag)) {
    finish(2, { ok: false, error: `usage: --tag must match [A-Za-z0-9_]+: ${tag}`, step: "args" })
    return
  }

  // mulberry32: reproducible choices for a given seed.
  let s = seed >>> 0
  const rand = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const randInt = n => Math.floor(rand() * n)

  let doc = Automerge.init()
  let state = Automerge.initSyncState()
  let epoch = 0
  let made = 0
  let autoLeft = 0
  const newDir = () => ({ messages: 0, bytes: 0, firstBytes: {}, changes: 0, stale: 0 })
  const stats = { in: newDir(), out: newDir(), reconnects: 0, maxMessageBytes: 0 }

  const hasStructure = d => Array.isArray(d.items) && typeof d.text === "string" && d.marks && typeof d.marks === "object"

  function create() {
    if (hasStructure(doc)) return
    doc = Automerge.change(doc, `${tag} create`, d => {
      d.items = []
      d.text = "hello"
      d.marks = {}
      d.count = new Automerge.Counter(0)
    })
    made++
  }

  function edit() {
    const i = made
    const key = `${tag}-${i}`
    const before = Automerge.getHeads(doc)
    doc = Automerge.change(doc, key, d => {
      if (!hasStructure(d)) {
        d[key] = i
        return
      }
      switch (randInt(8)) {
        case 0:
          d.marks[key] = i
          break
        case 1: {
          const vals = [i + 0.5, i % 2 === 0, null, `v${i}`, { tag, i, nested: [i, `${tag}`] }]
          d.marks[key] = vals[randInt(vals.length)]
          break
        }
        case 2:
        case 3:
          Automerge.insertAt(d.items, randInt(d.items.length + 1), key)
          break
        case 4:
          if (d.items.length > 0) Automerge.deleteAt(d.items, randInt(d.items.length))
          else d.items.push(key)
          break
        case 5: {
          const len = d.text.length
          const pos = randInt(len + 1)
          const del = randInt(Math.min(3, len - pos) + 1)
          Automerge.splice(d, ["text"], pos, del, `<${key}>`)
          break
        }
        case 6:
          if (d.count instanceof Automerge.Counter) d.count.increment(1 + randInt(3))
          else d.marks[key] = i
          break
        default: {
          const keys = Object.keys(d.marks)
          if (keys.length > 0 && randInt(2) === 0) delete d.marks[keys[randInt(keys.length)]]
          else d.marks[key] = `w${i}`
        }
      }
    })
    if (Automerge.getHeads(doc).join() === before.join()) throw new Error(`edit ${key} made no change`)
    made++
  }

  function count(dir, msg) {
    dir.messages++
    dir.bytes += msg.length
    stats.maxMessageBytes = Math.max(stats.maxMessageBytes, msg.length)
    const fb = "0x" + (msg[0] ?? 0).toString(16)
    dir.firstBytes[fb] = (dir.firstBytes[fb] ?? 0) + 1
    try {
      dir.changes += Automerge.decodeSyncMessage(msg).changes.length
    } catch {
      dir.undecodable = (dir.undecodable ?? 0) + 1
    }
  }

  function flush() {
    for (let k = 0; k < 100; k++) {
      const [next, msg] = Automerge.generateSyncMessage(doc, state)
      state = next
      if (!msg) return
      count(stats.out, msg)
      emit({ sync: Buffer.from(msg).toString("base64"), epoch })
    }
    throw new Error("generateSyncMessage returned a message 100 times in a row")
  }

  function receive(b64, e) {
    const msg = new Uint8Array(Buffer.from(b64, "base64"))
    if (e < epoch) {
      stats.in.stale++
      return
    }
    count(stats.in, msg)
    try {
      ;[doc, state] = Automerge.receiveSyncMessage(doc, state, msg)
    } catch (err) {
      fail(1, `receiveSyncMessage refused a message of ${msg.length} bytes: ${err?.message ?? err}`, {
        message: Buffer.from(msg).toString("hex"),
      })
      throw err
    }
  }

  function autoEdit(everyMs) {
    if (finished || autoLeft <= 0) return
    currentStep = `auto edit (${autoLeft} left)`
    edit()
    autoLeft--
    flush()
    if (autoLeft > 0) setTimeout(() => autoEdit(everyMs), everyMs)
  }

  function result() {
    return {
      ok: true,
      heads: Automerge.getHeads(doc),
      doc: Automerge.toJS(doc),
      changes: Automerge.getAllChanges(doc).length,
      made,
      stats,
      elapsedMs: elapsed(),
    }
  }

  currentStep = `populate ${populate}`
  if (populate > 0) {
    create()
    while (made < populate) edit()
    log(`populated ${made} changes`)
  }

  const handle = line => {
    if (finished || line.trim() === "") return
    let cmd
    try {
      cmd = JSON.parse(line)
    } catch {
      fail(2, `not a JSON line: ${line.slice(0, 200)}`)
      return
    }
    if (typeof cmd.sync === "string") {
      currentStep = "receive sync"
      receive(cmd.sync, Number(cmd.epoch ?? 0))
    } else if (Number.isInteger(cmd.edit)) {
      currentStep = `edit ${cmd.edit}`
      for (let k = 0; k < cmd.edit; k++) edit()
    } else if (cmd.auto) {
      const everyMs = Number(cmd.auto.everyMs ?? 5)
      const start = autoLeft === 0
      autoLeft += Number(cmd.auto.edits ?? 0)
      if (start && autoLeft > 0) setTimeout(() => autoEdit(everyMs), everyMs)
    } else if (cmd.create) {
      currentStep = "create"
      create()
    } else if (cmd.reconnect === "saved" || cmd.reconnect === "fresh") {
      currentStep = `reconnect (${cmd.reconnect})`
      state = cmd.reconnect === "saved" ? Automerge.decodeSyncState(Automerge.encodeSyncState(state)) : Automerge.initSyncState()
      epoch = Number(cmd.epoch ?? epoch + 1)
      stats.reconnects++
    } else if (cmd.ping !== undefined) {
      currentStep = "ping"
      flush()
      emit({ ack: cmd.ping, heads: Automerge.getHeads(doc), changes: Automerge.getAllChanges(doc).length, autoLeft })
      return
    } else if (cmd.done) {
      currentStep = "done"
      finish(0, result())
      return
    } else {
      fail(2, `unknown command: ${line.slice(0, 200)}`)
      return
    }
    flush()
  }

  currentStep = "reading stdin"
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
  rl.on("line", line => {
    try {
      handle(line)
    } catch (e) {
      fail(1, `${currentStep}: ${e?.stack ?? e}`)
    }
  })
  rl.on("close", () => fail(1, `stdin closed before {"done": true} (while: ${currentStep})`))
  // Say what this peer starts with, so that the Go test knows it is up.
  flush()
  emit({ ready: true, heads: Automerge.getHeads(doc), changes: Automerge.getAllChanges(doc).length })
}
