// Package amsync reads the binary formats of the Automerge sync protocol in
// Go: the sync message envelope (as @automerge/automerge and the Rust core
// 0.5 write it), the change chunks it carries, and the operations inside
// those changes.
//
// Every function is pure and safe for concurrent use, except the methods
// of ObjIndex, which holds one document's objects and belongs to that
// document's owner goroutine. Every parser takes untrusted bytes: it
// returns an error for anything malformed, never panics, and allocates in
// proportion to its input (op decoding within a fixed bound, MaxOps;
// inflating a compressed change within MaxInflatedChangeBytes, or the
// tighter limit of ParseChangeLimit). Input that exceeds a size bound
// rather than the format (ParseChangeLimit, ParseMessageLimits) is refused
// with an error wrapping ErrTooLarge as well as ErrMalformed.
//
// The hub validates each client's sync data before any of it reaches the
// Automerge core (automerge-go), because a panic there aborts the process:
// ParseMessage and ParseChange check the envelope and the chunks,
// Change.Ops decodes each change's ops and refuses those the core would
// panic on, and ObjIndex checks what only the document's history can tell
// (that each op's object exists and takes the op's kind of key). The
// panics themselves are described in docs/notes-rust-sync-panic.md.
package amsync
