import type { DocHandle, PeerId } from "@automerge/automerge-repo/slim"

/** Another person (or tab) on the same document. */
export interface Peer {
  /** The sending peer (one per tab). */
  peerId: PeerId
  /** The name the peer announced (its user id when signed in). */
  name: string
  /** A colour for its cursor. */
  color: string
  /** Where its cursor is in the text, or null. */
  cursor: number | null
  /** What it is editing ("text", "checklist"). */
  field: string
  /** When we last heard from it (ms since the epoch). */
  seen: number
}

interface PresenceMessage {
  plait: "presence"
  name: string
  color: string
  cursor: number | null
  field: string
  leaving?: boolean
}

const HEARTBEAT_MS = 2_000
const STALE_MS = 7_000

/**
 * Presence announces who is on a document and where their cursor is, over
 * automerge-repo ephemeral messages (never stored). The node relays them
 * only among peers that may read the document, with the sender's peer id,
 * so one peer cannot speak for another's connection. A peer not heard from
 * for 7 seconds is gone.
 */
export class Presence {
  readonly peers = new Map<PeerId, Peer>()
  #handle: DocHandle<unknown>
  #me: Omit<PresenceMessage, "plait">
  #timer: ReturnType<typeof setInterval>
  #listeners = new Set<(peers: Peer[]) => void>()
  #closed = false
  #onMessage: (p: { senderId: PeerId; message: unknown }) => void

  constructor(handle: DocHandle<unknown>, name: string, color: string) {
    this.#handle = handle
    this.#me = { name, color, cursor: null, field: "text" }
    this.#onMessage = ({ senderId, message }) => {
      const m = message as Partial<PresenceMessage> | null
      if (!m || m.plait !== "presence" || typeof m.name !== "string") return
      if (m.leaving) {
        this.peers.delete(senderId)
      } else {
        this.peers.set(senderId, {
          peerId: senderId,
          name: m.name.slice(0, 80),
          color: typeof m.color === "string" && /^#[0-9a-f]{6}$/i.test(m.color) ? m.color : "#888888",
          cursor: typeof m.cursor === "number" && Number.isFinite(m.cursor) ? m.cursor : null,
          field: typeof m.field === "string" ? m.field.slice(0, 40) : "text",
          seen: Date.now(),
        })
      }
      this.#emit()
    }
    handle.on("ephemeral-message", this.#onMessage)
    this.#timer = setInterval(() => {
      this.#send()
      let changed = false
      for (const [id, p] of this.peers) {
        if (Date.now() - p.seen > STALE_MS) {
          this.peers.delete(id)
          changed = true
        }
      }
      if (changed) this.#emit()
    }, HEARTBEAT_MS)
    this.#send()
  }

  /** update announces a new cursor position (and field) at once. */
  update(cursor: number | null, field = "text"): void {
    if (cursor === this.#me.cursor && field === this.#me.field) return
    this.#me.cursor = cursor
    this.#me.field = field
    this.#send()
  }

  on(fn: (peers: Peer[]) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** close says goodbye and stops announcing. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#timer)
    this.#handle.off("ephemeral-message", this.#onMessage)
    try {
      this.#handle.broadcast({ plait: "presence", ...this.#me, leaving: true })
    } catch {
      /* offline */
    }
  }

  #send(): void {
    try {
      this.#handle.broadcast({ plait: "presence", ...this.#me })
    } catch {
      /* not connected: the next heartbeat retries */
    }
  }

  #emit(): void {
    const list = [...this.peers.values()]
    for (const fn of this.#listeners) fn(list)
  }
}
