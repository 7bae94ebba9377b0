package wstransport

import (
	"net"
	"sync"
	"time"
)

// maxBatchBytes bounds the frames a Conn sends in one write: enough for
// the acknowledgements and deliveries a busy connection has queued, small
// enough that a batch is one socket write and its buffer is cheap.
const maxBatchBytes = 64 << 10

// Batcher is what a Conn needs of its socket to send several queued
// frames with one write: between Hold and Release the frames' bytes
// collect in memory, and Release writes them at once. Without it every
// frame is a write (a system call) of its own.
type Batcher interface {
	Hold()
	// Release writes what was held, within deadline.
	Release(deadline time.Time) error
}

// BatchConn is a net.Conn that implements Batcher: give it to the
// WebSocket library as the socket, and to New as Options.Batch.
type BatchConn struct {
	net.Conn

	mu   sync.Mutex // held across writes to Conn: keeps their order
	held bool
	buf  []byte
}

var _ Batcher = (*BatchConn)(nil)

// NewBatchConn wraps c.
func NewBatchConn(c net.Conn) *BatchConn { return &BatchConn{Conn: c} }

var batchBufs = sync.Pool{New: func() any { return new([]byte) }}

// Hold starts collecting writes.
func (c *BatchConn) Hold() {
	c.mu.Lock()
	c.held = true
	if c.buf == nil {
		c.buf = (*batchBufs.Get().(*[]byte))[:0]
	}
	c.mu.Unlock()
}

// Write collects p while held and the batch has room; otherwise it writes
// what was collected, then p.
func (c *BatchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held && len(c.buf)+len(p) <= 2*maxBatchBytes {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Release writes what was collected since Hold, in one write bounded by
// deadline, and stops collecting. Its buffer goes back to a pool, so an
// idle connection holds none.
func (c *BatchConn) Release(deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	var err error
	if len(c.buf) > 0 {
		if err = c.Conn.SetWriteDeadline(deadline); err == nil {
			err = c.flushLocked()
			if derr := c.Conn.SetWriteDeadline(time.Time{}); err == nil {
				err = derr
			}
		}
	}
	if c.buf != nil {
		b := c.buf[:0]
		batchBufs.Put(&b)
		c.buf = nil
	}
	return err
}

func (c *BatchConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}
