/**
 * PlaitError is every error the library reports. `kind` says what an app
 * should do about it:
 *
 * - `unavailable`: the node (or its permission store) cannot be reached or
 *   answered 5xx; retry later. Work offline meanwhile.
 * - `unauthenticated`: no valid login (401); sign in.
 * - `expired`: the login session expired; sign in again.
 * - `revoked`: the login session was ended (logout elsewhere, a reused
 *   refresh token, or the user was revoked: WebSocket close 4410).
 * - `denied`: the document does not exist or this user may not use it
 *   (403, 404, `doc-unavailable`), or a viewer tried to change it (4403).
 * - `conflict`: the request clashes with the document's state (409, e.g.
 *   the document was already claimed, or the last owner cannot leave).
 * - `invalid`: the node refused the request as malformed (400).
 */
export type PlaitErrorKind =
  | "unavailable"
  | "unauthenticated"
  | "expired"
  | "revoked"
  | "denied"
  | "conflict"
  | "invalid"

export class PlaitError extends Error {
  readonly kind: PlaitErrorKind
  /** HTTP status or WebSocket close code, when there was one. */
  readonly status?: number

  constructor(kind: PlaitErrorKind, message: string, status?: number) {
    super(message)
    this.name = "PlaitError"
    this.kind = kind
    this.status = status
  }
}

/** errorFromResponse turns a failed REST answer into a PlaitError. */
export async function errorFromResponse(res: Response): Promise<PlaitError> {
  let message = res.statusText || `HTTP ${res.status}`
  try {
    const body = (await res.json()) as { error?: string; message?: string }
    message = body.error ?? body.message ?? message
  } catch {
    // Fiber answers plain text for some errors.
    try {
      const text = await res.clone().text()
      if (text) message = text
    } catch {
      /* keep the status text */
    }
  }
  return new PlaitError(kindOfStatus(res.status, message), message, res.status)
}

export function kindOfStatus(status: number, message = ""): PlaitErrorKind {
  if (status === 401) {
    if (/revoked|already used/i.test(message)) return "revoked"
    if (/expired/i.test(message)) return "expired"
    return "unauthenticated"
  }
  if (status === 403 || status === 404) return "denied"
  if (status === 409) return "conflict"
  if (status >= 400 && status < 500) return "invalid"
  return "unavailable"
}
