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
//   - Durable before advertised: no sync message (or remote-heads-changed
//     for this node's storage) whose heads include a change goes out before
//     the store has confirmed the write holding that change, and no change
//     is published to the other nodes before it is stored. Messages that
//     arrive together are applied together and stored in one write. One
//     write per document runs at a time, on its own goroutine: meanwhile
//     the owner applies up to a batch's worth of messages (then it stops
//     reading its inbox) and generates their answers, which wait in their
//     peers' queues until their write is confirmed. The budget bytes of
//     those messages are given back when the write before them is
//     confirmed, as if they had waited in the inbox.
//   - The node's API reaches a document through the same inbox
//     (ReadChanges, SubmitChanges): a copy of its changes out, or changes
//     in as one peer message, stored before SubmitChanges returns.
//   - A document with no peers for Options.IdleDocTimeout is evicted: its
//     owner saves sync states, compacts if due, and exits; the next message
//     for it loads it again from the store.
package hub
