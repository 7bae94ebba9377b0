// Package hub is the core of a Plait node: it holds the sessions of
// connected automerge-repo peers and the open documents, and keeps every
// document converged with every peer that syncs it.
//
// The hub knows nothing of HTTP, WebSockets or a particular database: it
// declares the small interfaces it needs (Conn for a client connection,
// Store for persistence) and adapters in its sub-packages implement them.
//
// Concurrency contract:
//   - Each connection is served by one goroutine (Serve, its read loop);
//     outgoing frames go through Conn.Send, which never blocks.
//   - Each open document has exactly one owner goroutine. It alone touches
//     the Automerge document, the sync state of every peer of that
//     document and the document's storage; other goroutines reach it only
//     through its bounded inbox (a full inbox makes the sending read loop
//     wait: backpressure on that client alone).
//   - Durable before advertised: an owner stores every change it has
//     applied before it generates any sync message (or remote-heads-changed)
//     whose heads include that change. Messages that arrive together are
//     applied together and stored in one write.
//   - The node's API reaches a document through the same inbox
//     (ReadChanges, SubmitChanges): a copy of its changes out, or changes
//     in as one peer message, stored before SubmitChanges returns.
//   - A document with no peers for Options.IdleDocTimeout is evicted: its
//     owner saves sync states, compacts if due, and exits; the next message
//     for it loads it again from the store.
package hub
