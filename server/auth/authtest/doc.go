// Package authtest is the conformance suite for the storage interfaces of
// package auth: every auth.TokenStore runs RunTokenStoreTests, every
// access.ACL runs RunACLTests, and every auth.Events runs RunEventsTests.
// The suites check each sentence of the interfaces' contracts: rotation and
// reuse detection (concurrent rotations included), expiry, revocation of
// families and users with its cut-off, one-time keys and their expiry,
// claims, shares, the last-owner rule, link roles, the user's document
// index, event fan-out to several nodes, ordering, and contexts. Run them
// with -race.
//
// Every test uses fresh random family ids, user ids, keys and document ids
// (protocol.NewDocumentID), so an implementation backed by a shared server
// may hand the same storage to several tests, as long as nothing else
// writes to it. Events are the exception: a Watch sees every event of its
// backend, so newEvents must give each test a backend (or key prefix) of
// its own.
//
// The stores have no Close in their interfaces: the constructors passed to
// the suites release what they create with t.Cleanup.
//
// Concurrency: the Run functions call t.Run and must be called from the
// test goroutine; their subtests do not call t.Parallel, so each store sees
// only the concurrency a test creates on purpose. A few tests wait for
// time to pass (a one-time key's ttl of 400ms, an event's delivery); the
// whole suite takes a few seconds.
package authtest
