import { PlaitError, errorFromResponse } from "./errors.js"

export type Role = "owner" | "editor" | "viewer"

/** A document as the REST API describes it. */
export interface DocInfo {
  documentId: string
  /** automerge:<id>, what repo.find() takes. */
  url: string
  /** The caller's role. */
  role: Role
  /** Owners only: what a link gives ("none" = link sharing off). */
  link?: "viewer" | "editor" | "none"
  /** Owners only: user id -> role. */
  users?: Record<string, Role>
}

/**
 * Api is the node's REST API of documents and sharing (README, "REST
 * API"). Every method rejects with a PlaitError: `denied` for a document
 * that does not exist or that the user may not manage, `unavailable` when
 * the node cannot be reached, `unauthenticated`/`expired`/`revoked` when
 * the login is gone. A node without login (anonymous mode) has no REST API:
 * `enabled` is false and every call rejects with `unavailable`.
 */
export class Api {
  readonly base: string
  enabled = true

  constructor(base: string) {
    this.base = base.replace(/\/$/, "")
  }

  /** claim makes the caller the owner of a document it created locally. */
  claim(url: string): Promise<DocInfo> {
    return this.#call("POST", "/api/docs", { documentId: url })
  }

  /** list returns the documents the caller owns or that were shared with them. */
  async list(): Promise<DocInfo[]> {
    const r = await this.#call<{ documents: DocInfo[] }>("GET", "/api/docs")
    return r.documents
  }

  /** get returns the caller's role, and for owners the users and link. */
  get(url: string): Promise<DocInfo> {
    return this.#call("GET", `/api/docs/${encodeURIComponent(url)}`)
  }

  /** share gives user a role; "none" removes them. Owners only. */
  async share(url: string, user: string, role: Role | "none"): Promise<void> {
    await this.#call("PUT", `/api/docs/${encodeURIComponent(url)}/users/${encodeURIComponent(user)}`, { role })
  }

  /** unshare removes a user (owners: anyone; others: themselves). */
  async unshare(url: string, user: string): Promise<void> {
    await this.#call("DELETE", `/api/docs/${encodeURIComponent(url)}/users/${encodeURIComponent(user)}`)
  }

  /** setLink turns link sharing on (viewer or editor) or off (none). Owners only. */
  async setLink(url: string, role: "viewer" | "editor" | "none"): Promise<void> {
    await this.#call("PUT", `/api/docs/${encodeURIComponent(url)}/link`, { role })
  }

  /**
   * providers lists the login providers. On an anonymous node (no login)
   * it returns [] and sets `enabled` to false: there is no REST API.
   */
  async providers(): Promise<string[]> {
    let res: Response
    try {
      res = await fetch(this.base + "/auth/providers", { credentials: "include" })
    } catch (e) {
      throw new PlaitError("unavailable", `cannot reach the node: ${String(e)}`)
    }
    if (!res.ok) throw await errorFromResponse(res)
    const body = (await res.json()) as { login?: boolean; providers: string[] }
    this.enabled = body.login !== false
    return body.providers ?? []
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    if (!this.enabled) throw new PlaitError("unavailable", "this node has no login and no REST API")
    let res: Response
    try {
      res = await fetch(this.base + path, {
        method,
        credentials: "include",
        headers: body === undefined ? { Accept: "application/json" } : { Accept: "application/json", "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
    } catch (e) {
      throw new PlaitError("unavailable", `cannot reach the node: ${String(e)}`)
    }
    if (!res.ok) throw await errorFromResponse(res)
    if (res.status === 204) return undefined as T
    return (await res.json()) as T
  }
}
