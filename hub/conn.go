package hub

import (
	"context"
	"errors"

	"github.com/plaithub/plait/pkg/protocol"
)

// ErrConnClosed is returned by Conn.Send and Conn.Read once the connection
// is closed, by either side.
var ErrConnClosed = errors.New("connection closed")

// ErrSlowConsumer is returned by Conn.Send when the frame would exceed the
// connection's write queue bound; the connection is then closed with
// protocol.CloseSlowConsumer.
var ErrSlowConsumer = errors.New("slow consumer: write queue full")

// Conn is one client connection as the hub sees it. A transport adapter
// (the WebSocket transport in hub/wstransport) implements it.
//
// Contract: the hub calls Read from one goroutine only (the session's read
// loop). Send and Close may be called from any goroutine, concurrently.
// Frames passed to Send are written in the order Send accepted them.
type Conn interface {
	// Read blocks until the next complete binary frame arrives and returns
	// it. It returns an error when ctx is done, the connection is closed, or
	// the peer sent something that is not a binary frame within the size
	// limit (the transport then closes the connection itself).
	Read(ctx context.Context) ([]byte, error)

	// Send queues frame for writing and returns at once; it never blocks on
	// the network. The transport owns frame after the call. When the queue
	// bound would be exceeded the transport closes the connection as a slow
	// consumer and Send returns ErrSlowConsumer; after Close it returns
	// ErrConnClosed. At most once: a frame accepted by Send may still be lost
	// if the connection dies before it is written.
	Send(frame []byte) error

	// Close writes the frames already queued (bounded by the transport's
	// write timeout), then closes the connection with code and reason.
	// Calling it more than once is harmless; the first call wins.
	Close(code protocol.CloseCode, reason string)
}
