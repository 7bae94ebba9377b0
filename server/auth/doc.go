// Package auth is Plait's identity layer: login with goth (GitHub, Google,
// any OpenID Connect provider, ID tokens verified with go-oidc), the hub's
// own tokens (short-lived JWT access tokens, refresh tokens rotated on every
// use with reuse detection), the sealed cookies that carry login state
// between stateless nodes, and the interfaces of what nodes share: token
// families and revocations (TokenStore) and the events that carry
// revocations and permission changes to every node (Events). Document
// permissions are package access. boltauth and redisauth implement the
// stores (TokenStore and access.ACL); authtest holds their conformance
// suites.
//
// Concurrency: Tokens, Login, Sealer and LocalEvents are safe for
// concurrent use once built; the store contracts are in their doc
// comments.
package auth
