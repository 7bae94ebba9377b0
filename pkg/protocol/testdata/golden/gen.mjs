// gen.mjs writes the golden vectors of pkg/protocol with the real JS encoder:
// the frames the automerge-repo WebSocket adapters (2.5.6, cbor-x 1.6.9) send.
//
// Re-run (from the repository root; node_modules stays outside the repo):
//
//	G=$PWD/pkg/protocol/testdata/golden
//	mkdir -p /tmp/cborgen && cd /tmp/cborgen && npm init -y >/dev/null
//	npm install cbor-x@1.6.9 @automerge/automerge@3.5.0 \
//	    @automerge/automerge-repo@2.5.6 @automerge/automerge-repo-network-websocket@2.5.6
//	cp $G/gen.mjs . && node gen.mjs $G          # writes NAME.cbor and NAME.json
//	cd - && go test ./pkg/protocol -run TestGolden -update   # writes NAME.go.cbor
//	cd /tmp/cborgen && node gen.mjs --check $G  # JS decodes Go's encodings
//
// NAME.cbor is the frame as JS sends it, NAME.json says what Go must decode
// from it ("expect", in the JS field names, data as hex) and NAME.go.cbor is
// what Go's Encode writes for that message. --check decodes every
// NAME.go.cbor with the JS decoder and compares it with "expect".
import fs from "node:fs"
import path from "node:path"
import * as A from "@automerge/automerge"
import { cbor, encodeHeads } from "@automerge/automerge-repo"
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket"
import * as cborx from "cbor-x"
import bs58check from "bs58check"

const hex = b => Buffer.from(b).toString("hex")

// Fixed ids so that the vectors are reproducible.
const clientId = "browser-tab-7f3a"
const serverId = "plait-node-1"
const clientStorage = "0c8f1e2a-5b7d-4c3e-9a1f-2d4b6e8f0a1c"
const serverStorage = "9e7d5c3b-1a2f-4e6d-8c0b-7a5f3e1d9c2b"
const docId = bs58check.encode(Uint8Array.from({ length: 16 }, (_, i) => i * 17))
const sessionId = "k2j3h4g5f6"

// A real Automerge document and sync message, deterministic by fixing the
// actor and the change time.
let doc = A.init({ actor: "0123456789abcdef0123456789abcdef" })
doc = A.change(doc, { time: 0, message: "golden" }, d => {
  d.title = "golden vector"
  d.items = ["a", "b"]
})
const [, syncData] = A.generateSyncMessage(doc, A.initSyncState())
const heads = encodeHeads(A.getHeads(doc))

// sendClient captures what WebSocketClientAdapter.send puts on the socket.
function sendClient(message, setup) {
  const sent = []
  const a = new WebSocketClientAdapter("ws://127.0.0.1:1", 0)
  a.peerId = clientId
  a.socket = { readyState: 1, send: buf => sent.push(new Uint8Array(buf)) }
  if (setup) setup(a)
  else a.send(message)
  return sent[0]
}

// serverReply feeds a join to WebSocketServerAdapter and captures its answer.
function serverReply(join, peerMetadata) {
  const sent = []
  const a = new WebSocketServerAdapter({ on() {}, clients: new Set() })
  a.peerId = serverId
  a.peerMetadata = peerMetadata
  const socket = { readyState: 1, send: buf => sent.push(new Uint8Array(buf)), close() {} }
  a.receiveMessage(cbor.encode(join), socket)
  return sent[0]
}

// patch replaces the encoding of `count: 3` by another encoding of 3.
const countKey = hex(cbor.encode("count"))
function patchCount(bytes, replacement) {
  const h = hex(bytes)
  if (!h.includes(countKey + "03")) throw new Error("count 3 not found")
  return Buffer.from(h.replace(countKey + "03", countKey + replacement), "hex")
}

const ephemeral = count => ({
  type: "ephemeral",
  targetId: serverId,
  documentId: docId,
  data: new Uint8Array(cbor.encode({ cursor: { line: 3, ch: 14 } })),
  count,
  sessionId,
  senderId: clientId,
})
const sync = type => ({ type, targetId: serverId, documentId: docId, data: syncData, senderId: clientId })
const join = (storageId, isEphemeral) => ({
  type: "join",
  senderId: clientId,
  peerMetadata: { storageId, isEphemeral },
  supportedProtocolVersions: ["1"],
})

// Each case: the message as JS builds it, the bytes JS sends, what Go keeps.
const cases = [
  {
    name: "join_ephemeral",
    description: "WebSocketClientAdapter.join of a Repo without storage: storageId is undefined (0xf7), isEphemeral true",
    message: join(undefined, true),
    bytes: sendClient(null, a => { a.peerMetadata = { storageId: undefined, isEphemeral: true }; a.join() }),
  },
  {
    name: "join_storage",
    description: "WebSocketClientAdapter.join of a Repo with storage",
    message: join(clientStorage, false),
    bytes: sendClient(null, a => { a.peerMetadata = { storageId: clientStorage, isEphemeral: false }; a.join() }),
  },
  {
    name: "join_legacy",
    description: "a join without peerMetadata or supportedProtocolVersions (the JS server treats it as version 1)",
    message: { type: "join", senderId: clientId },
  },
  {
    name: "peer",
    description: "WebSocketServerAdapter's answer to join_storage",
    message: { type: "peer", senderId: serverId, peerMetadata: { storageId: serverStorage, isEphemeral: false }, selectedProtocolVersion: "1", targetId: clientId },
    bytes: serverReply(join(clientStorage, false), { storageId: serverStorage, isEphemeral: false }),
  },
  {
    name: "error_unsupported_version",
    description: "WebSocketServerAdapter's answer to a join offering only version 2",
    message: { type: "error", senderId: serverId, message: "unsupported protocol version", targetId: clientId },
    bytes: serverReply({ ...join(clientStorage, false), supportedProtocolVersions: ["2"] }, {}),
  },
  {
    name: "request",
    description: "request with a real Automerge sync message (Uint8Array, untagged)",
    message: sync("request"),
  },
  {
    name: "sync",
    description: "sync with a real Automerge sync message (Uint8Array, untagged)",
    message: sync("sync"),
  },
  {
    name: "sync_tag64",
    description: "sync encoded by cbor-x's default encoder, which tags Uint8Array with tag 64 (automerge-repo turns that off)",
    message: sync("sync"),
    bytes: cborx.encode(sync("sync")),
  },
  {
    name: "sync_unknown_keys",
    description: "sync with extra keys Go must ignore",
    message: { ...sync("sync"), foo: { nested: [1, 2.5, null, { a: undefined }] }, "x-trace": "abc" },
    ignore: ["foo", "x-trace"],
  },
  {
    name: "doc_unavailable",
    description: "doc-unavailable as DocSynchronizer sends it",
    message: { type: "doc-unavailable", documentId: docId, targetId: clientId, senderId: serverId },
  },
  {
    name: "ephemeral",
    description: "ephemeral as NetworkSubsystem stamps it: count is a small integer",
    message: ephemeral(1),
  },
  {
    name: "ephemeral_float64_count",
    description: "ephemeral with count 3.0 as float64 (hand-patched: cbor-x writes 3 as an integer)",
    message: ephemeral(3),
    bytes: patchCount(cbor.encode(ephemeral(3)), "fb4008000000000000"),
  },
  {
    name: "ephemeral_float16_count",
    description: "ephemeral with count 3.0 as float16 (hand-patched)",
    message: ephemeral(3),
    bytes: patchCount(cbor.encode(ephemeral(3)), "f94200"),
  },
  {
    name: "ephemeral_big_count",
    description: "ephemeral with count 2^32+5: cbor-x writes every number >= 2^32 as float64",
    message: ephemeral(2 ** 32 + 5),
  },
  {
    name: "remote_subscription_change_absent",
    description: "remote-subscription-change with add undefined (0xf7) and remove null (0xf6)",
    message: { type: "remote-subscription-change", targetId: serverId, add: undefined, remove: null, senderId: clientId },
  },
  {
    name: "remote_subscription_change_add",
    description: "remote-subscription-change as Repo sends it when adding: remove undefined",
    message: { type: "remote-subscription-change", targetId: serverId, add: [serverStorage, clientStorage], remove: undefined, senderId: clientId },
  },
  {
    name: "remote_subscription_change_remove",
    description: "remote-subscription-change with an empty add array",
    message: { type: "remote-subscription-change", targetId: serverId, add: [], remove: [serverStorage], senderId: clientId },
  },
  {
    name: "remote_heads_changed",
    description: "remote-heads-changed as Repo sends it: bs58check heads, Date.now() timestamp as float64",
    message: { type: "remote-heads-changed", targetId: clientId, documentId: docId, newHeads: { [serverStorage]: { heads, timestamp: 1767225600123 } }, senderId: serverId },
  },
  {
    name: "remote_heads_changed_small_timestamp",
    description: "remote-heads-changed with a timestamp below 2^32, written as an integer, and empty heads",
    message: { type: "remote-heads-changed", targetId: clientId, documentId: docId, newHeads: { [serverStorage]: { heads: [], timestamp: 1000 } }, senderId: serverId },
  },
  {
    name: "leave",
    description: "leave, documented in the adapter's README (the 2.5.6 adapter itself does not send it)",
    message: { type: "leave", senderId: clientId },
  },
]

// normalize turns a decoded or built message into JSON: null and undefined
// dropped, bytes as hex. BigInt is an error: JS code cannot use it.
function normalize(v, where = "") {
  if (typeof v === "bigint") throw new Error(`${where} decoded as BigInt ${v}`)
  if (v instanceof Uint8Array) return hex(v)
  if (Array.isArray(v)) return v.map((x, i) => normalize(x, `${where}[${i}]`))
  if (v && typeof v === "object") {
    const out = {}
    for (const k of Object.keys(v).sort()) {
      if (v[k] !== undefined && v[k] !== null) out[k] = normalize(v[k], `${where}.${k}`)
    }
    return out
  }
  return v
}

function expectOf(c) {
  const e = normalize(c.message)
  for (const k of c.ignore ?? []) delete e[k]
  return e
}

const args = process.argv.slice(2)
const check = args[0] === "--check"
const dir = check ? args[1] : args[0]
if (!dir) throw new Error("usage: node gen.mjs [--check] DIR")

let failed = 0
for (const c of cases) {
  const file = path.join(dir, c.name)
  if (!check) {
    const bytes = c.bytes ?? sendClient(c.message)
    fs.writeFileSync(file + ".cbor", bytes)
    const desc = { description: c.description, expect: expectOf(c) }
    fs.writeFileSync(file + ".json", JSON.stringify(desc, null, 2) + "\n")
    console.log(c.name, bytes.length, "bytes")
    continue
  }
  try {
    const got = normalize(cbor.decode(fs.readFileSync(file + ".go.cbor")))
    let want = expectOf(c)
    // Go always writes isEphemeral, and an empty peerMetadata when absent.
    if (want.type === "join" || want.type === "peer") {
      want = normalize({ ...want, peerMetadata: { isEphemeral: false, ...want.peerMetadata } })
    }
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      throw new Error(`got ${JSON.stringify(got)}\nwant ${JSON.stringify(want)}`)
    }
    console.log("ok", c.name)
  } catch (e) {
    failed++
    console.log("FAIL", c.name, e.message)
  }
}
if (failed) process.exit(1)
