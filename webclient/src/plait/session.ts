import { PlaitError, errorFromResponse } from "./errors.js"

/** Who is signed in, as GET /api/me says. */
export interface Me {
  user: string
  /** When the access token (the plait_access cookie) expires. */
  expiresAt: Date
}

/** Events of a Session. */
export interface SessionEvents {
  /** The user signed in, or the access token was refreshed. */
  change: Me
  /** The session ended: `error.kind` is revoked, expired or unauthenticated. */
  end: PlaitError
}

/** How long before expiry the access token is refreshed (at most; a quarter of its life if shorter). */
export const REFRESH_MARGIN_MS = 60_000

const lockName = "plait-token-refresh"
const expiryKey = "plait.access-expires"

/**
 * Session keeps a login to a node alive. The tokens live in the node's
 * HttpOnly cookies (plait_access on "/", plait_refresh on "/auth/"): no
 * script, including this one, can read them. The session learns the
 * access token's expiry from GET /api/me and POST /auth/refresh, and
 * refreshes it REFRESH_MARGIN_MS before it expires and before a reconnect.
 *
 * Refresh tokens rotate on every use and a spent one presented again ends
 * the login session (the node treats it as stolen). Tabs of one app share
 * the cookie jar, so two tabs refreshing at once would present the same
 * token twice. Session therefore refreshes under a Web Lock shared by all
 * tabs of the origin: the second tab waits, then sees (in localStorage)
 * that the first already refreshed, and does not refresh again.
 */
export class Session {
  readonly base: string
  #me: Me | null = null
  #timer: ReturnType<typeof setTimeout> | undefined
  #listeners: { [K in keyof SessionEvents]: Set<(v: SessionEvents[K]) => void> } = {
    change: new Set(),
    end: new Set(),
  }
  #inflight: Promise<Me> | null = null
  /** How long before expiry to refresh: REFRESH_MARGIN_MS, or a quarter of a short token's life. */
  #margin = REFRESH_MARGIN_MS

  constructor(base: string) {
    this.base = base.replace(/\/$/, "")
    window.addEventListener("storage", e => {
      // Another tab refreshed: our cookies are already the new ones.
      if (e.key === expiryKey && e.newValue && this.#me) {
        this.#set({ user: this.#me.user, expiresAt: new Date(Number(e.newValue)) })
      }
    })
  }

  /** The signed-in user, or null before load() or after the session ended. */
  get me(): Me | null {
    return this.#me
  }

  on<K extends keyof SessionEvents>(ev: K, fn: (v: SessionEvents[K]) => void): () => void {
    this.#listeners[ev].add(fn)
    return () => this.#listeners[ev].delete(fn)
  }

  /**
   * load asks the node who is signed in, refreshing an expired access
   * token first if need be. It resolves null when nobody is (show the
   * login buttons) and rejects with kind "unavailable" when the node
   * cannot be reached (offline: keep working with what is stored).
   */
  async load(): Promise<Me | null> {
    let res = await this.#fetch("/api/me")
    if (res.status === 401) {
      try {
        return await this.refresh(true)
      } catch (e) {
        if (e instanceof PlaitError && e.kind !== "unavailable") return null
        throw e
      }
    }
    if (!res.ok) throw await errorFromResponse(res)
    const body = (await res.json()) as { user: string; expires_at: string }
    return this.#set({ user: body.user, expiresAt: new Date(body.expires_at) })
  }

  /**
   * ensureFresh refreshes the access token if it expires within
   * REFRESH_MARGIN_MS (the WebSocket calls it before every reconnect).
   */
  async ensureFresh(): Promise<void> {
    if (!this.#me) return
    if (this.#me.expiresAt.getTime() - Date.now() > this.#margin) return
    await this.refresh()
  }

  /**
   * verify asks the node whether the login still holds (after a WebSocket
   * upgrade failed: the browser hides its HTTP status). An expired access
   * token is refreshed; a revoked login ends the session.
   */
  async verify(): Promise<void> {
    if (!this.#me) return
    const res = await this.#fetch("/api/me")
    if (res.status === 401) {
      await this.refresh(true)
      return
    }
    if (res.ok) {
      const body = (await res.json()) as { user: string; expires_at: string }
      this.#set({ user: body.user, expiresAt: new Date(body.expires_at) })
    }
  }

  /**
   * refresh spends the refresh cookie for new tokens, one tab at a time.
   * With force, it refreshes even if another tab just did (load() after a
   * 401 knows its access token is bad).
   */
  refresh(force = false): Promise<Me> {
    // One refresh at a time within this tab too.
    this.#inflight ??= this.#lockedRefresh(force).finally(() => {
      this.#inflight = null
    })
    return this.#inflight
  }

  async #lockedRefresh(force: boolean): Promise<Me> {
    const run = async (): Promise<Me> => {
      const shared = Number(localStorage.getItem(expiryKey) ?? 0)
      if (!force && this.#me && shared - Date.now() > this.#margin) {
        // Another tab refreshed while we waited for the lock.
        return this.#set({ user: this.#me.user, expiresAt: new Date(shared) })
      }
      if (force && shared - Date.now() > this.#margin && shared > (this.#me?.expiresAt.getTime() ?? 0)) {
        // A 401 with a stale cookie view: another tab may have rotated.
        const res = await this.#fetch("/api/me")
        if (res.ok) {
          const body = (await res.json()) as { user: string; expires_at: string }
          return this.#set({ user: body.user, expiresAt: new Date(body.expires_at) })
        }
      }
      const res = await this.#fetch("/auth/refresh", { method: "POST" })
      if (!res.ok) {
        const err = await errorFromResponse(res)
        if (err.kind !== "unavailable") this.#end(err)
        throw err
      }
      const body = (await res.json()) as { user: string; access_expires_at: string }
      const me = { user: body.user, expiresAt: new Date(body.access_expires_at) }
      localStorage.setItem(expiryKey, String(me.expiresAt.getTime()))
      return this.#set(me)
    }
    if (navigator.locks) return navigator.locks.request(lockName, run)
    return run() // no Web Locks (very old browsers): tabs may race
  }

  /** logout ends the login session on every node and every tab. */
  async logout(): Promise<void> {
    const res = await this.#fetch("/auth/logout", { method: "POST" })
    if (!res.ok && res.status !== 401) throw await errorFromResponse(res)
    this.#end(new PlaitError("unauthenticated", "signed out", 401))
  }

  /** ended is called by the connection when the node says 4410 (revoked). */
  ended(err: PlaitError): void {
    this.#end(err)
  }

  /** loginURL is where a login button sends the browser. */
  loginURL(provider: string, returnTo: string): string {
    return `${this.base}/auth/${encodeURIComponent(provider)}/login?return_to=${encodeURIComponent(returnTo)}`
  }

  #set(me: Me): Me {
    const fresh = !this.#me || me.expiresAt.getTime() !== this.#me.expiresAt.getTime()
    this.#me = me
    clearTimeout(this.#timer)
    if (fresh) this.#margin = Math.min(REFRESH_MARGIN_MS, Math.max(5_000, (me.expiresAt.getTime() - Date.now()) / 4))
    const wait = Math.max(1_000, me.expiresAt.getTime() - Date.now() - this.#margin)
    this.#timer = setTimeout(() => {
      this.refresh().catch(() => {
        /* ended or offline: reported through events */
      })
    }, Math.min(wait, 2 ** 31 - 1))
    for (const fn of this.#listeners.change) fn(me)
    return me
  }

  #end(err: PlaitError): void {
    clearTimeout(this.#timer)
    const had = this.#me !== null
    this.#me = null
    localStorage.removeItem(expiryKey)
    if (had || err.kind === "revoked") for (const fn of this.#listeners.end) fn(err)
  }

  async #fetch(path: string, init: RequestInit = {}): Promise<Response> {
    try {
      return await fetch(this.base + path, {
        ...init,
        credentials: "include",
        headers: { Accept: "application/json", ...(init.headers ?? {}) },
      })
    } catch (e) {
      throw new PlaitError("unavailable", `cannot reach the node: ${String(e)}`)
    }
  }
}
