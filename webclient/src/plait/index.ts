/**
 * Plait's browser library. See docs/webclient.md for a guide; the smallest
 * app is:
 *
 *     import { connect } from "./plait"
 *     import wasm from "@automerge/automerge/automerge.wasm?url"
 *     const plait = await connect({ wasm })
 *     const handle = plait.repo.create({ text: "" })
 *     plait.watchSaved(handle, s => console.log(s.saved, s.pending))
 */
export { Plait, connect, type ConnectionState, type PlaitOptions, type SavedState } from "./client.js"
export { Session, REFRESH_MARGIN_MS, type Me } from "./session.js"
export { Api, type DocInfo, type Role } from "./api.js"
export { PlaitError, type PlaitErrorKind } from "./errors.js"
export { Presence, type Peer } from "./presence.js"
