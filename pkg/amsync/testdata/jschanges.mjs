// jschanges.mjs writes the changes of random documents edited with
// @automerge/automerge (the JS client library, 3.5.0 at the time of
// writing), one document per line: {"doc": n, "changes": [hex, ...]} in
// the order getAllChanges returns them (causal order).
//
// usage: node jschanges.mjs <dir with node_modules/@automerge/automerge> <docs> <edits> [seed]
//
// TestOpsMatchAutomergeJS reads the committed output, testdata/jschanges.jsonl;
// regenerate it with `go generate ./pkg/amsync` after `npm ci` in
// server/testdata/js.
import { createRequire } from "node:module"
import path from "node:path"

const [dir, docsArg, editsArg, seedArg] = process.argv.slice(2)
if (!dir || !docsArg || !editsArg) {
  console.error("usage: node jschanges.mjs <dir> <docs> <edits> [seed]")
  process.exit(2)
}
const A = createRequire(path.resolve(dir, "package.json"))("@automerge/automerge")

// A small deterministic PRNG (mulberry32) so the fixture is reproducible.
let state = Number(seedArg ?? 1) >>> 0
function rnd() {
  state = (state + 0x6d2b79f5) >>> 0
  let t = state
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const int = (n) => Math.floor(rnd() * n)
const pick = (xs) => xs[int(xs.length)]
const word = () => pick(["a", "bc", "héllo", "😀x", "", "key with space", "ü"]) + int(5)

function scalar() {
  switch (int(11)) {
    case 0: return int(1000) - 500
    case 1: return rnd() * 1e6
    case 2: return word()
    case 3: return rnd() < 0.5
    case 4: return null
    case 5: return new Date(1700000000000 + int(1e9))
    case 6: return new Uint8Array([int(256), int(256), int(256)])
    case 7: return new A.Uint(int(1e9))
    case 8: return new A.Int(-int(1e12))
    case 9: return new A.Float64(int(100))
    default: return 2 ** 40 + int(1000)
  }
}

function edit(doc) {
  return A.change(doc, (d) => {
    const n = 1 + int(3)
    for (let k = 0; k < n; k++) {
      switch (int(14)) {
        case 0: d.map[word()] = scalar(); break
        case 1: { const ks = Object.keys(d.map); if (ks.length) delete d.map[pick(ks)]; break }
        case 2: d.list.push(scalar()); break
        case 3: if (d.list.length) A.insertAt(d.list, int(d.list.length), scalar(), scalar()); break
        case 4: if (d.list.length) A.deleteAt(d.list, int(d.list.length)); break
        case 5: if (d.list.length) d.list[int(d.list.length)] = scalar(); break
        case 6: A.splice(d, ["text"], int(d.text.length + 1), 0, pick(["x", "hello ", "ünïcødé ", "😀", "\n"])); break
        case 7: if (d.text.length) A.splice(d, ["text"], int(d.text.length), 1 + int(3)); break
        case 8: d.n.increment(int(20) - 10); break
        case 9: d.nested[word()] = { inner: [1, { deep: "x" }], t: "txt" }; break
        case 10: {
          const len = d.text.length
          if (len > 2) {
            const start = int(len - 1)
            A.mark(d, ["text"], { start, end: start + 1 + int(len - start - 1), expand: pick(["before", "after", "both", "none"]) }, pick(["bold", "link"]), pick([true, "https://x", 3, null]))
          }
          break
        }
        case 11: {
          const len = d.text.length
          if (len > 2) A.unmark(d, ["text"], { start: 0, end: 1 + int(len - 1), expand: "both" }, "bold")
          break
        }
        case 12: A.updateText(d, ["text"], d.text.slice(0, int(d.text.length + 1)) + pick(["", "abc", "z"])); break
        default: d[word()] = pick([[], {}, scalar()]); break
      }
    }
  })
}

const docs = Number(docsArg), edits = Number(editsArg)
for (let n = 0; n < docs; n++) {
  const actors = 2 + int(3)
  let base = A.change(A.init(), (d) => {
    d.map = {}; d.list = [1, "two"]; d.text = "start"; d.n = new A.Counter(0); d.nested = {}
  })
  const peers = [base]
  for (let i = 1; i < actors; i++) peers.push(A.clone(base))
  for (let e = 0; e < edits; e++) {
    const i = int(actors)
    if (rnd() < 0.2) {
      const j = int(actors)
      if (j !== i) peers[i] = A.merge(peers[i], A.clone(peers[j]))
    } else {
      peers[i] = edit(peers[i])
    }
  }
  let all = peers[0]
  for (let i = 1; i < actors; i++) all = A.merge(all, A.clone(peers[i]))
  const changes = A.getAllChanges(all).map((c) => Buffer.from(c).toString("hex"))
  console.log(JSON.stringify({ doc: n, changes }))
}
