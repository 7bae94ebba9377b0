import {
  Repo,
  decodeHeads,
  initializeWasm,
  type DocHandle,
  type PeerId,
  type PeerMetadata,
  type StorageId,
} from "@automerge/automerge-repo/slim"
import * as A from "@automerge/automerge/slim"
import { IndexedDBStorageAdapter } from "@automerge/automerge-repo-storage-indexeddb"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { BroadcastChannelNetworkAdapter } from "@automerge/automerge-repo-network-broadcastchannel"
import { Api } from "./api.js"
import { PlaitError } from "./errors.js"
import { Session } from "./session.js"

/** Connection states, as the `status` events report them. */
export type ConnectionState = "connecting" | "online" | "offline" | "reconnecting"

export interface PlaitOptions {
  /** The node's base URL, e.g. https://plait.example.com (default: this page's origin). */
  url?: string
  /**
   * The Automerge wasm: its URL (with vite,
   * `import wasm from "@automerge/automerge/automerge.wasm?url"`) or its bytes.
   */
  wasm: string | URL | Uint8Array
  /** IndexedDB database name (default "plait"). */
  database?: string
  /** BroadcastChannel name shared by the app's tabs (default "plait"). */
  channel?: string
  /** Milliseconds between reconnect attempts (default 2000). */
  retryMs?: number
  /**
   * The Session and Api to use, if the app made them before connecting
   * (to sign in first). Default: new ones for the same URL.
   */
  session?: Session
  api?: Api
}

/** What a document's "saved on the server" state is. */
export interface SavedState {
  /** The node's durable heads cover every local change. */
  saved: boolean
  /** Local changes the node has not confirmed as stored. */
  pending: number
}

type Listener<T> = (v: T) => void

/**
 * Plait is a Repo wired to a Plait node: IndexedDB storage, the node's
 * WebSocket, and a BroadcastChannel so the app's tabs share changes
 * locally even offline. Make one per page with connect().
 */
export class Plait {
  readonly repo: Repo
  readonly session: Session
  readonly api: Api
  readonly base: string
  #socket: PlaitSocket
  #state: ConnectionState = "connecting"
  #stateListeners = new Set<Listener<ConnectionState>>()
  #errorListeners = new Set<Listener<PlaitError>>()
  /** The node's storage id, from its `peer` message. */
  #nodeStorage: StorageId | undefined
  #nodeListeners = new Set<() => void>()

  constructor(opts: PlaitOptions & { url: string }) {
    this.base = opts.url.replace(/\/$/, "")
    this.session = opts.session ?? new Session(this.base)
    this.api = opts.api ?? new Api(this.base)
    const ws = this.base.replace(/^http/, "ws") + "/ws"
    this.#socket = new PlaitSocket(ws, opts.retryMs ?? 2000, this)
    this.repo = new Repo({
      storage: new IndexedDBStorageAdapter(opts.database ?? "plait"),
      network: [
        this.#socket,
        new BroadcastChannelNetworkAdapter({
          channelName: opts.channel ?? "plait",
          // Other tabs answer within milliseconds; the default (1 s) delays
          // every first find() of a document that is not stored yet.
          peerWaitMs: 150,
        }),
      ],
      // The node decides who may read what; tabs of this app share everything.
      sharePolicy: async () => true,
      // The node sends remote-heads-changed with its durably stored heads
      // to peers that subscribe to its storage id: that is "saved".
      enableRemoteHeadsGossiping: true,
    })
    this.repo.networkSubsystem.on("peer", ({ peerId, peerMetadata }: { peerId: PeerId; peerMetadata: PeerMetadata }) => {
      if (peerId === this.#socket.remotePeerId && peerMetadata?.storageId) {
        this.#nodeStorage = peerMetadata.storageId
        this.repo.subscribeToRemotes([peerMetadata.storageId])
        for (const fn of this.#nodeListeners) fn()
      }
    })
    window.addEventListener("offline", () => this.#socket.goOffline())
    window.addEventListener("online", () => this.#socket.goOnline())
    if (!navigator.onLine) this.#socket.goOffline()
  }

  /** The connection state now; `onStatus` reports every change. */
  get state(): ConnectionState {
    return this.#state
  }

  onStatus(fn: Listener<ConnectionState>): () => void {
    this.#stateListeners.add(fn)
    return () => this.#stateListeners.delete(fn)
  }

  /**
   * onError reports what the node refused: `revoked` (close 4410: the tab
   * is signed out), `denied` (close 4403: a viewer's change was refused),
   * `expired` (close 4401, the token is refreshed and the socket reconnects).
   */
  onError(fn: Listener<PlaitError>): () => void {
    this.#errorListeners.add(fn)
    return () => this.#errorListeners.delete(fn)
  }

  /** The peer id of the node this tab is connected to (in a cluster, which node). */
  get nodePeerId(): PeerId | undefined {
    return this.#socket.remotePeerId
  }

  /** The node's storage id once connected (what "saved" compares against). */
  get nodeStorageId(): StorageId | undefined {
    return this.#nodeStorage
  }

  /**
   * savedState says whether the node has stored every local change of a
   * document: its durable heads (what it advertises for its own storage
   * id, which only includes stored changes) cover the local heads.
   */
  savedState(handle: DocHandle<unknown>): SavedState {
    const doc = handle.doc() as A.Doc<unknown> | undefined
    if (!doc) return { saved: false, pending: 0 }
    const key = `plait.saved-heads.${this.base}.${handle.documentId}`
    let urlHeads = this.#nodeStorage ? handle.getSyncInfo(this.#nodeStorage)?.lastHeads : undefined
    if (urlHeads) {
      // Remembered, so that after a reload while offline the count is
      // still what the node has not stored.
      try {
        localStorage.setItem(key, JSON.stringify(urlHeads))
      } catch {
        /* storage full or denied: the count is for this page's life only */
      }
    } else {
      try {
        urlHeads = JSON.parse(localStorage.getItem(key) ?? "null") ?? undefined
      } catch {
        urlHeads = undefined
      }
    }
    if (!urlHeads) return { saved: false, pending: A.getAllChanges(doc).length }
    // The node's heads may include changes this tab has not received yet.
    const known = decodeHeads(urlHeads).filter(h => A.hasHeads(doc, [h]))
    let pending: number
    if (known.length === 0) {
      pending = A.getAllChanges(doc).length
    } else {
      pending = A.getChanges(A.view(doc, known), doc).length
    }
    // Saved means confirmed by the node in this session: remembered heads
    // only count what is pending.
    const live = !!this.#nodeStorage && !!handle.getSyncInfo(this.#nodeStorage)
    return { saved: pending === 0 && live, pending }
  }

  /**
   * watchSaved calls fn with the saved state of a document now and after
   * every local change, every acknowledgement from the node and every
   * reconnect. It returns the function that stops watching.
   */
  watchSaved(handle: DocHandle<unknown>, fn: Listener<SavedState>): () => void {
    let queued = false
    const update = () => {
      if (queued) return
      queued = true
      // Coalesce bursts (typing, a big sync) into one computation.
      setTimeout(() => {
        queued = false
        fn(this.savedState(handle))
      }, 50)
    }
    handle.on("heads-changed", update)
    handle.on("remote-heads", update)
    this.#nodeListeners.add(update)
    const off = this.onStatus(update)
    update()
    return () => {
      handle.off("heads-changed", update)
      handle.off("remote-heads", update)
      this.#nodeListeners.delete(update)
      off()
    }
  }

  /** flush writes every pending change to IndexedDB now. */
  flush(): Promise<void> {
    return this.repo.flush()
  }

  /** setState is called by the socket. */
  _setState(s: ConnectionState): void {
    if (s === this.#state) return
    this.#state = s
    for (const fn of this.#stateListeners) fn(s)
  }

  _error(e: PlaitError): void {
    if (e.kind === "revoked") this.session.ended(e)
    for (const fn of this.#errorListeners) fn(e)
  }
}

/**
 * PlaitSocket is automerge-repo's WebSocket client with what a browser app
 * needs on top: connection state, the node's close codes, the access token
 * refreshed before every reconnect, and the browser's offline/online
 * events (a socket the browser keeps open while offline would otherwise
 * look alive).
 */
class PlaitSocket extends WebSocketClientAdapter {
  #owner: Plait
  #offline = false
  #everOnline = false
  #gated = false
  #stopped = false
  #verified = 0

  constructor(url: string, retryMs: number, owner: Plait) {
    super(url, retryMs)
    this.#owner = owner
    const parentClose = this.onClose
    this.onClose = ((ev: CloseEvent) => {
      this.#closed(ev)
      if (!this.#offline) parentClose()
    }) as unknown as () => void
    this.on("peer-candidate", () => {
      this.#everOnline = true
      this.#owner._setState("online")
    })
  }

  override connect(peerId: PeerId, peerMetadata?: PeerMetadata): void {
    this.peerId ??= peerId
    this.peerMetadata ??= peerMetadata ?? {}
    if (!navigator.onLine && !this.#offline) {
      this.#offline = true
      this.#owner._setState("offline")
    }
    if (this.#offline || this.#stopped || this.#gated) return
    const session = this.#owner.session
    if (!session.me) {
      super.connect(peerId, peerMetadata)
      return
    }
    // Refresh the access token first if it is about to expire: the node
    // checks it at the upgrade and closes the socket (4401) when it expires.
    this.#gated = true
    session
      .ensureFresh()
      .catch(() => {
        /* offline or ended: the connection reports it */
      })
      .finally(() => {
        this.#gated = false
        if (!this.#offline) super.connect(peerId, peerMetadata)
      })
  }

  goOffline(): void {
    this.#offline = true
    this.#owner._setState("offline")
    if (this.socket && this.peerId) this.disconnect()
  }

  goOnline(): void {
    if (!this.#offline) return
    this.#offline = false
    this.#owner._setState(this.#everOnline ? "reconnecting" : "connecting")
    if (this.peerId) this.connect(this.peerId, this.peerMetadata)
  }

  #closed(ev: CloseEvent): void {
    if (this.#offline) return
    if (ev?.code === 1006 && this.#owner.session.me && Date.now() - this.#verified > 5_000) {
      // The upgrade failed or the connection dropped: the browser hides
      // why. Ask the node whether the login still holds (a revoked one
      // ends the session; an expired token is refreshed).
      this.#verified = Date.now()
      this.#owner.session.verify().catch(() => {
        /* offline, or ended: reported through the session's events */
      })
    }
    this.#owner._setState(this.#everOnline ? "reconnecting" : "connecting")
    switch (ev?.code) {
      case 4410:
        // Reconnecting cannot help: the login is gone (the app signs in again).
        this.#stopped = true
        this.#owner._error(new PlaitError("revoked", ev.reason || "access revoked: sign in again", 4410))
        break
      case 4403:
        this.#owner._error(new PlaitError("denied", ev.reason || "read-only document: the change was refused", 4403))
        break
      case 4401:
        this.#owner._error(new PlaitError("expired", ev.reason || "access token expired", 4401))
        break
    }
  }
}

/**
 * connect loads the Automerge wasm and returns a Plait for the node at
 * opts.url (default: the page's origin). It does not wait for the network:
 * documents in IndexedDB open at once, offline or not.
 */
export async function connect(opts: PlaitOptions): Promise<Plait> {
  const w = opts.wasm
  await initializeWasm(w instanceof URL ? w.href : w)
  return new Plait({ ...opts, url: opts.url ?? location.origin })
}
