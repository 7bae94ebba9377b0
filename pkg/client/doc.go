// Package client is the Go SDK for apps that collaborate on Automerge
// documents through a Plait hub (or any automerge-repo sync server: it
// speaks the same wire protocol as the JS WebSocketClientAdapter).
//
//	c, err := client.New(ctx, client.Options{URLs: []string{"ws://127.0.0.1:8080/ws"}, Dir: "./state"})
//	h, err := c.Create(func(d *automerge.Doc) error { return d.RootMap().Set("title", "hello") })
//	h.Subscribe(func(client.Event) { ... })               // remote changes
//	h.Change(func(d *automerge.Doc) error { ... })        // local changes, synced
//	other, err := c.Find(ctx, h.URL())                     // on another client
//
// A Client keeps one connection to one of its URLs at a time and
// reconnects with jittered exponential backoff, rotating through the URLs.
// Every handle syncs on every connection; a document changed while
// offline is synced when the connection comes back, both ways, and only
// what the other side lacks is sent.
//
// With Options.Dir set the client keeps each document (its changes) and
// its sync state with each server storage on disk: a restarted client
// loads them and resumes by exchanging only what is missing. Change
// returns once its change is on disk (fsynced), so a power loss right
// after loses nothing Change reported done; concurrent Changes, on any
// documents, share their fsyncs (group commit). Options.NoSync trades
// that guarantee for speed: Change returns before the fsync, and a power
// loss can lose the last changes (a crash of the process alone cannot).
// A document's file is compacted into a snapshot once it outgrows the
// document, atomically (a crash leaves the old file or the new one); a
// change torn by a crash mid-write is dropped when the file is next
// loaded, and every whole change before it is kept.
//
// Authentication: a server that requires login takes an access token in
// the handshake. Options.Token supplies it before every connection attempt;
// a TokenSource built from a login's refresh token fits it and keeps the
// token fresh, spending each single-use refresh token once and handing its
// successor to OnRotate to persist. A failed Token call or a refused
// handshake is a failed attempt like any other: the client backs off and
// retries, and edits made meanwhile wait in their documents. A connection
// closed because its token expired (4401) is reopened at once with a new
// token; a revoked login (4410) shows as ErrRevoked in Stats().LastErr, and
// a refresh token the server refuses as ErrRefreshFailed: log in again.
//
//	ts, err := client.NewTokenSource(client.TokenSourceOptions{BaseURL: "https://plait.example", RefreshToken: rt, OnRotate: save})
//	c, err := client.New(ctx, client.Options{URLs: []string{"wss://plait.example/ws"}, Token: ts.Token})
//
// The sync protocol runs on pkg/syncengine (an index of changes, so a
// message costs O(new changes)); automerge-go holds the document the app
// reads and changes.
//
// Concurrency: all methods are safe for concurrent use. Each handle has a
// lock; Change and View run their function under it, and Subscribe
// callbacks run on the connection's reader goroutine (keep them short:
// they delay every document's sync).
package client
