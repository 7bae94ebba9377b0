// Package backup is `plait export` and `plait import`: every document and
// every access list of a node's storage, to and from a portable archive,
// from and into either backend (the embedded bbolt store in data-dir, or
// Redis), with the node's own storage settings (encryption at rest
// included: documents are decrypted on export and sealed with the
// target's key on import).
//
// # Archive format (version 1)
//
// A gzipped tar (.tar.gz) of regular files, in this order:
//
//	plait-backup/manifest.json            {"format":"plait-backup","version":1,"created","source","documents"}
//	plait-backup/docs/<n>[-<id>].json     a document's metadata (DocMeta)
//	plait-backup/docs/<n>[-<id>].automerge its changes
//	... one pair per document, sorted by id ...
//	plait-backup/end.json                 {"documents","access_lists"}: what was written
//
// <n> is the document's number (7 digits); the id follows when it is
// safe in a file name (automerge-repo ids always are). The metadata is
// {"id","stored","changes","heads","bytes","sha256","access"}: heads are
// the document's heads as sorted hex change hashes, bytes and sha256
// describe the .automerge entry, and access (absent for a document without
// an access list, as on an anonymous node) is {"users":{user: role},
// "link": role, "created"} with roles by name. A .automerge entry is the
// document's change chunks, concatenated, each after its dependencies (a
// store that lost data may hold changes whose dependencies are gone; they
// come last): an Automerge binary that Automerge.load (JS) and
// automerge.Load (Go) read. A document that has an access list but was
// never written has "stored": false and an empty .automerge entry. Sync
// states, login sessions and revocations are not exported: peers rebuild
// the first, and users log in again.
//
// # Checks
//
// Export reads each document in one LoadDoc (atomic per document; a
// cluster's Redis may be exported while nodes run, the backup is then
// consistent per document) and computes its heads; the command writes the
// archive beside FILE, syncs it, reads it back whole, checks every
// document's changes against its heads, and only then renames it to FILE.
// Import refuses a target that holds any document or access list
// (ErrNotEmpty), checks a file whole before writing anything, writes each
// document as one batch, reads it back from the store and checks its
// heads again, and reads back each access list. The reader treats the
// archive as untrusted: entries in the wrong order, unknown JSON fields,
// sizes and digests that do not match, more bytes than the bounds, or a
// missing end entry are ErrMalformed; changes whose heads differ from the
// metadata are ErrMismatch.
//
// # Concurrency
//
// Export, Import and Verify work one document at a time on the calling
// goroutine; ctx ends them between documents.
package backup
