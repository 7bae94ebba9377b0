// Package amsync reads the binary formats of the Automerge sync protocol in
// Go: the sync message envelope (as @automerge/automerge and the Rust core
// 0.5 write it) and the change chunks it carries.
//
// Every function is pure and safe for concurrent use. Every parser takes
// untrusted bytes: it returns an error for anything malformed, never panics,
// and allocates in proportion to its input.
//
// The hub validates each client's sync data with ParseMessage before any of
// it reaches the Automerge core, because a panic there aborts the process.
package amsync
