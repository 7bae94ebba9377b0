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
// loads them and resumes by exchanging only what is missing.
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
