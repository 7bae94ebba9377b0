// Package protocol is the wire codec of the automerge-repo WebSocket
// protocol, version "1", as spoken by @automerge/automerge-repo-network-websocket
// 2.5.x: one CBOR map per binary frame, string keys, byte strings untagged.
//
// A client sends join; the server answers peer (or error, then closes).
// After that either side sends sync, request, doc-unavailable, ephemeral,
// remote-subscription-change and remote-heads-changed messages, each
// carrying senderId and targetId.
//
// Decode treats its input as hostile: it bounds nesting, array and map
// sizes, validates every field it keeps, ignores unknown keys, treats null
// and undefined as absent, and accepts numbers as JavaScript encodes them
// (integers at or above 2^32 arrive as float64). Encode writes what the JS
// client expects, and Encode of a decoded message decodes to an equal one.
//
// Everything here is a pure function of its arguments: the package holds no
// mutable state and is safe for concurrent use. Messages are plain values; a
// decoded Message does not alias the frame it came from.
//
// The package also names the WebSocket close codes Plait uses (CloseCode).
package protocol
