// loadbinary.mjs: loads Automerge binaries (a `plait export` archive's
// .automerge entries: change chunks in dependency order) with the official
// @automerge/automerge, as any JS application would.
//
// usage: node loadbinary.mjs <file>...
// stdout (one line): {"ok":true,"docs":[{"file","heads","content"}...]}
//   heads are hex change hashes, sorted; content is the document as JSON
// exit: 0 ok; 1 a file does not load

import { readFileSync } from "node:fs"
import * as A from "@automerge/automerge"

const docs = []
for (const file of process.argv.slice(2)) {
  const doc = A.load(new Uint8Array(readFileSync(file)))
  docs.push({ file, heads: [...A.getHeads(doc)].sort(), content: A.toJS(doc) })
}
console.log(JSON.stringify({ ok: true, docs }))
