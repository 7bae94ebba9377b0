// Package node is one Plait node: the Fiber app in front of the hub.
//
// Its files, one concern each: routes.go declares every route; ws.go
// admits a WebSocket (admit: upgrade check, draining, origin, credentials,
// connection limits, one idempotent release) and serves it (handleWS,
// serveSocket) over hijack.go; login.go is the HTTP side of login,
// refresh, logout and every cookie; auth.go reads and checks access
// tokens; authsetup.go wires auth at start-up; authorizer.go adapts the
// ACL to the hub; revoke.go applies auth events to live sockets;
// origin.go checks origins (WebSocket and CSRF); api.go is the REST API;
// audit.go writes the audit log and blocklist.go blocks repeat
// offenders; limits.go and listen.go bound connections and requests;
// backend.go and keyfile.go open the store, the broker and the keys;
// config.go is the configuration; storage.go gives the storage tools
// (plait export and import, server/backup) the node's storage settings.
//
// Concurrency: a Node serves requests concurrently once New returns; its
// limiters, audit log, blocklist and live-socket registry are safe for
// concurrent use.
package node
