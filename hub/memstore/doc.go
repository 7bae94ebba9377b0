// Package memstore is an in-memory hub.Store: a map behind a mutex.
//
// It is NOT durable: everything is lost when the process exits, so "durable
// before return" in the hub.Store contract degrades to "visible to later
// calls before return". Use it for focused hub unit tests and for ephemeral
// nodes that keep nothing; use boltstore (one node) or a shared store
// (cluster) for anything a user expects to survive a restart.
//
// Concurrency: every method is safe for concurrent use. One sync.RWMutex
// guards all state; loads share it, writes take it exclusively. Bytes are
// copied in and out, so callers may reuse what they pass and own what they
// get back, exactly as with a durable store. It passes
// storetest.RunStoreTests.
package memstore
