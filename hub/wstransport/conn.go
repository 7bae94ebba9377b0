package wstransport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

var _ hub.Conn = (*Conn)(nil)

// Options configures a Conn. The zero value of each field is the documented
// default.
type Options struct {
	// MaxMessageBytes is the largest frame accepted from the client; a
	// bigger one closes the connection with protocol.CloseMessageTooBig.
	// A first sync of a large document arrives as one frame, so this must
	// exceed the largest document a client may upload. Default: 32 MiB.
	MaxMessageBytes int64

	// MaxQueueBytes bounds the bytes queued for writing. A frame that does
	// not fit closes the connection as a slow consumer; a single frame is
	// always accepted into an empty queue, so one large message can go out.
	// Default: 16 MiB.
	MaxQueueBytes int

	// WriteTimeout bounds each frame write. Default: 10s.
	WriteTimeout time.Duration

	// PingInterval is the time between pings. Default: 30s.
	PingInterval time.Duration

	// PongTimeout is how long to wait for a pong before closing the
	// connection as dead. Default: 15s.
	PongTimeout time.Duration

	// Batch, if set, is the socket under the WebSocket (a BatchConn):
	// frames queued together go out in one write of at most
	// maxBatchBytes. Nil: one write per frame.
	Batch Batcher

	// OnWritten, if set, is called by the writer after each run of
	// queued frames has gone out, with the time since the oldest of them
	// was queued (plait_send_seconds). It must not block.
	OnWritten func(wait time.Duration)
}

func (o *Options) fill() {
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 32 << 20
	}
	if o.MaxQueueBytes <= 0 {
		o.MaxQueueBytes = 16 << 20
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 30 * time.Second
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = 15 * time.Second
	}
}

// Conn is a hub.Conn over a WebSocket.
//
// An idle connection has no goroutine of its own besides the hub's read
// loop: a writer goroutine runs only while frames are queued (it exits
// when the queue is empty), and the keepalive ping is a timer whose
// function pings and re-arms it. At tens of thousands of idle connections
// this halves the memory each costs.
type Conn struct {
	ws   *websocket.Conn
	opts Options

	mu        sync.Mutex
	queue     [][]byte
	queued    int
	since     time.Time // when the oldest queued frame was queued (OnWritten)
	closing   bool
	closeCode protocol.CloseCode
	closeMsg  string
	writing   bool // a writer goroutine runs
	finished  bool
	ping      *time.Timer
	done      chan struct{} // closed when the connection is finished
}

// New wraps ws, sets its read limit and arms the keepalive ping. The
// caller must eventually call Close (or the client must disconnect) for
// the connection to finish.
func New(ws *websocket.Conn, opts Options) *Conn {
	opts.fill()
	ws.SetReadLimit(opts.MaxMessageBytes)
	c := &Conn{ws: ws, opts: opts, done: make(chan struct{})}
	c.mu.Lock()
	c.ping = time.AfterFunc(opts.PingInterval, c.pingTick)
	c.mu.Unlock()
	return c
}

// Done is closed once the connection is fully closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Read returns the next binary frame.
func (c *Conn) Read(ctx context.Context) ([]byte, error) {
	typ, b, err := c.ws.Read(ctx)
	if err != nil {
		var ce websocket.CloseError
		switch {
		case errors.As(err, &ce):
			c.closeQuiet()
			return nil, fmt.Errorf("%w: client closed with %d %s", hub.ErrConnClosed, ce.Code, ce.Reason)
		case errors.Is(err, websocket.ErrMessageTooBig):
			// coder/websocket has already sent close 1009 "read limited at N
			// bytes". Close with the handshake, which drains the rest of the
			// oversized message: closing at once would reset the TCP
			// connection and the client might never see the close code.
			c.Close(protocol.CloseMessageTooBig, fmt.Sprintf("message exceeds %d bytes", c.opts.MaxMessageBytes))
		default:
			c.closeQuiet()
		}
		return nil, fmt.Errorf("%w: %w", hub.ErrConnClosed, err)
	}
	if typ != websocket.MessageBinary {
		c.Close(protocol.CloseMalformedMessage, "text frames are not part of the protocol: send binary CBOR")
		return nil, fmt.Errorf("%w: client sent a text frame", hub.ErrConnClosed)
	}
	return b, nil
}

// Send queues frame; see hub.Conn.
func (c *Conn) Send(frame []byte) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return hub.ErrConnClosed
	}
	if c.queued > 0 && c.queued+len(frame) > c.opts.MaxQueueBytes {
		c.closing, c.closeCode, c.closeMsg = true, protocol.CloseSlowConsumer, "slow consumer: write queue full"
		c.queue, c.queued = nil, 0 // drop: the client is cut off
		c.mu.Unlock()
		c.signal()
		return hub.ErrSlowConsumer
	}
	if len(c.queue) == 0 && c.opts.OnWritten != nil {
		c.since = time.Now()
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	c.mu.Unlock()
	c.signal()
	return nil
}

// TrySend queues frame if the queue has room for it (an empty queue
// always has), and otherwise reports false without closing: for messages
// the hub can hold back and send later (large sync messages). After Close
// it returns hub.ErrConnClosed.
func (c *Conn) TrySend(frame []byte) (bool, error) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false, hub.ErrConnClosed
	}
	if c.queued > 0 && c.queued+len(frame) > c.opts.MaxQueueBytes {
		c.mu.Unlock()
		return false, nil
	}
	if len(c.queue) == 0 && c.opts.OnWritten != nil {
		c.since = time.Now()
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	c.mu.Unlock()
	c.signal()
	return true, nil
}

// Close flushes queued frames, then closes with code and reason.
func (c *Conn) Close(code protocol.CloseCode, reason string) {
	c.mu.Lock()
	if !c.closing {
		c.closing, c.closeCode, c.closeMsg = true, code, reason
	}
	c.mu.Unlock()
	c.signal()
}

// closeQuiet stops the writer without a close handshake (the socket is
// already gone or closed by the client).
func (c *Conn) closeQuiet() {
	c.mu.Lock()
	if !c.closing {
		c.closing, c.closeCode = true, 0
	}
	c.queue, c.queued = nil, 0
	c.mu.Unlock()
	c.signal()
}

// signal makes sure a writer goroutine runs if there is work for it.
func (c *Conn) signal() {
	c.mu.Lock()
	start := !c.writing && !c.finished && (len(c.queue) > 0 || c.closing)
	if start {
		c.writing = true
	}
	c.mu.Unlock()
	if start {
		go c.writer()
	}
}

// writer writes the queued frames and exits when the queue is empty; on
// closing it finishes the connection after the last frame.
func (c *Conn) writer() {
	for {
		c.mu.Lock()
		batch, since := c.queue, c.since
		c.queue, c.queued, c.since = nil, 0, time.Time{}
		closing, code, msg := c.closing, c.closeCode, c.closeMsg
		if len(batch) == 0 && !closing {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		for len(batch) > 0 {
			n := c.group(batch)
			if err := c.writeGroup(batch[:n]); err != nil {
				c.finish(0, "")
				return
			}
			batch = batch[n:]
		}
		if !since.IsZero() {
			c.opts.OnWritten(time.Since(since))
		}
		if closing {
			c.finish(code, msg)
			return
		}
	}
}

// group returns how many of the first frames of batch go out in one
// write: as many as fit in maxBatchBytes (at least one), or one without a
// Batcher.
func (c *Conn) group(batch [][]byte) int {
	if c.opts.Batch == nil {
		return 1
	}
	n, size := 1, len(batch[0])
	for n < len(batch) && size+len(batch[n]) <= maxBatchBytes {
		size += len(batch[n])
		n++
	}
	return n
}

// writeGroup writes frames, in one socket write if there are several.
// Each group has WriteTimeout, as each frame had before.
func (c *Conn) writeGroup(frames [][]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.WriteTimeout)
	defer cancel()
	if len(frames) == 1 {
		return c.ws.Write(ctx, websocket.MessageBinary, frames[0])
	}
	c.opts.Batch.Hold()
	var err error
	for _, f := range frames {
		if err = c.ws.Write(ctx, websocket.MessageBinary, f); err != nil {
			break
		}
	}
	deadline, _ := ctx.Deadline()
	if rerr := c.opts.Batch.Release(deadline); err == nil {
		err = rerr
	}
	return err
}

// pingTick runs on the ping timer: it pings, waits for the pong, and
// re-arms the timer; a missing pong closes the connection.
func (c *Conn) pingTick() {
	c.mu.Lock()
	stop := c.closing || c.finished
	c.mu.Unlock()
	if stop {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.PongTimeout)
	err := c.ws.Ping(ctx)
	cancel()
	c.mu.Lock()
	if err != nil && !c.closing {
		c.closing, c.closeCode, c.closeMsg = true, protocol.ClosePolicyViolation, "ping timeout"
	}
	if !c.closing && !c.finished {
		c.ping.Reset(c.opts.PingInterval)
	}
	c.mu.Unlock()
	c.signal()
}

// finish sends the close frame (code 0: none) and releases the socket.
func (c *Conn) finish(code protocol.CloseCode, reason string) {
	c.mu.Lock()
	c.closing, c.finished = true, true
	c.queue, c.queued = nil, 0
	c.ping.Stop()
	c.mu.Unlock()
	defer close(c.done)
	if code == 0 {
		_ = c.ws.CloseNow()
		return
	}
	// Close sends the close frame and waits for the client's; coder/websocket
	// bounds that wait (5s), then drops the connection.
	_ = c.ws.Close(websocket.StatusCode(code), reason)
}
