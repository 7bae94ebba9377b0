// server.mjs: the official automerge-repo-sync-server setup (automerge/automerge-repo-sync-server,
// src/server.js) with express swapped for node:http and a /metrics endpoint for the load tests.
// usage: node server.mjs [port] [dataDir]   (or PORT, DATA_DIR; defaults 3030, .amrg)
import fs from "node:fs"
import http from "node:http"
import os from "node:os"
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const port = parseInt(process.argv[2] ?? process.env.PORT ?? "3030", 10)
const host = process.env.HOST ?? "127.0.0.1"
const dir = process.argv[3] ?? process.env.DATA_DIR ?? ".amrg"
fs.mkdirSync(dir, { recursive: true })

const wss = new WebSocketServer({ noServer: true })
const repo = new Repo({
  network: [new WebSocketServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `storage-server-${os.hostname()}`,
  // A server does not share generously: it syncs only documents a peer asks for by id.
  sharePolicy: async () => false,
})

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/metrics") {
    const { user, system } = process.cpuUsage() // microseconds, since the process started
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4" })
    res.end("# TYPE process_resident_memory_bytes gauge\n" +
      `process_resident_memory_bytes ${process.memoryUsage().rss}\n` +
      "# TYPE process_cpu_seconds_total counter\n" +
      `process_cpu_seconds_total ${(user + system) / 1e6}\n`)
  } else {
    res.end("👍 @automerge/automerge-repo-sync-server is running\n")
  }
})
server.on("upgrade", (req, socket, head) =>
  wss.handleUpgrade(req, socket, head, ws => wss.emit("connection", ws, req)))
server.listen(port, host, () => console.log(`Listening on ${host}:${port} (data ${dir})`))

let stopping = false
const stop = signal => {
  if (stopping) return
  stopping = true
  console.log(`${signal}: shutting down`)
  setTimeout(() => process.exit(0), 3000).unref()
  for (const ws of wss.clients) ws.terminate()
  wss.close()
  server.close()
  repo.shutdown().finally(() => process.exit(0))
}
process.on("SIGTERM", () => stop("SIGTERM"))
process.on("SIGINT", () => stop("SIGINT"))
