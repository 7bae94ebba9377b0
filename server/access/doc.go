// Package access is document sharing: who may read and change each
// document (owners, editors, viewers, and the role of anyone with the
// link), the ACL interface that stores implement (server/auth/boltauth and
// server/auth/redisauth; the conformance suite is in server/auth/authtest),
// and ParseRole, the one reader of role names.
//
// Concurrency: DocAccess and UserDoc are values; the ACL contract is in
// its doc comment.
package access
