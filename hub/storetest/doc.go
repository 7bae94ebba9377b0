// Package storetest is the conformance suite for hub.Store implementations.
//
// Every Store runs RunStoreTests; a Store that keeps its data across a
// close and reopen (a file, a server) also runs RunPersistenceTests. The
// suite checks every sentence of the hub.Store contract: identity, not-found
// errors, sequence numbers, ordering and exact bytes of batches, ownership of
// byte slices, compaction, deletion, sync states, concurrency, cancellation,
// Close, and large values. Run it with -race.
//
// The suite uses random document ids (prefix "storetest-") for every test,
// so an implementation backed by a shared server may hand out the same
// storage to several tests, as long as no other writer touches those ids.
//
// Concurrency: RunStoreTests and RunPersistenceTests call t.Run and must be
// called from the test goroutine; their subtests do not call t.Parallel, so
// each store sees only the concurrency a test creates on purpose.
package storetest
