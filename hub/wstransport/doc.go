// Package wstransport adapts a coder/websocket connection to hub.Conn.
//
// Each Conn has one writer goroutine that drains a queue bounded in bytes;
// Send never blocks, and a Send that would overflow the bound closes the
// connection as a slow consumer (protocol.CloseSlowConsumer) instead of
// growing. Every write has a deadline. The writer also pings the client
// periodically and closes the connection when no pong arrives in time.
// Read is called by one goroutine (the hub's read loop); Send and Close are
// safe for concurrent use.
package wstransport
