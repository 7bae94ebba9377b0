package wstransport

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// batchListener wraps each accepted socket in a BatchConn over a
// countingConn, as the node wraps its sockets.
type batchListener struct {
	net.Listener
	writes *atomic.Int64
	mu     sync.Mutex
	conns  map[string]*BatchConn // by remote address
}

func (l *batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	bc := NewBatchConn(countingConn{Conn: c, writes: l.writes})
	l.mu.Lock()
	l.conns[c.RemoteAddr().String()] = bc
	l.mu.Unlock()
	return bc, nil
}

// batchPair is pair with the server's socket a BatchConn given to the Conn
// (or not, without batch); it returns the writes that reached the socket.
func batchPair(t *testing.T, batch bool) (*Conn, *websocket.Conn, *atomic.Int64) {
	t.Helper()
	writes := new(atomic.Int64)
	ln := &batchListener{writes: writes, conns: map[string]*BatchConn{}}
	ch := make(chan *Conn, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		opts := Options{}
		if batch {
			ln.mu.Lock()
			opts.Batch = ln.conns[r.RemoteAddr]
			ln.mu.Unlock()
		}
		c := New(ws, opts)
		ch <- c
		<-c.Done()
	}))
	ln.Listener = srv.Listener
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.CloseNow() })
	return <-ch, cli, writes
}

// Frames queued together go out in fewer writes than frames, intact and
// in order; without a Batcher each frame is a write.
func TestBatchedFramesFewerWrites(t *testing.T) {
	const frames = 200
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			c, cli, writes := batchPair(t, batch)
			before := writes.Load()
			// Queue them all before the writer can take one: they are sent
			// by one writer run, as frames queued by a busy document are.
			c.mu.Lock()
			for i := range frames {
				c.queue = append(c.queue, []byte(fmt.Sprintf("frame %03d %s", i, strings.Repeat("x", i))))
			}
			c.mu.Unlock()
			c.signal()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range frames {
				_, b, err := cli.Read(ctx)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if want := fmt.Sprintf("frame %03d %s", i, strings.Repeat("x", i)); string(b) != want {
					t.Fatalf("frame %d is %.20q, want %.20q", i, b, want)
				}
			}
			n := writes.Load() - before
			t.Logf("%d frames in %d socket writes", frames, n)
			if batch && n > 4 {
				t.Fatalf("%d frames took %d writes with batching (about 22 KB: want 1 or 2)", frames, n)
			}
			if !batch && n < frames {
				t.Fatalf("%d frames took %d writes without batching: the count is wrong", frames, n)
			}
		})
	}
}

// A batch that a client does not read fails at its deadline instead of
// blocking the writer for good.
func TestBatchReleaseDeadline(t *testing.T) {
	a, b := net.Pipe() // unbuffered: a write blocks until read
	defer a.Close()
	defer b.Close()
	bc := NewBatchConn(a)
	bc.Hold()
	if _, err := bc.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := bc.Release(time.Now().Add(50 * time.Millisecond))
	if err == nil {
		t.Fatal("Release to a socket nobody reads returned no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Release took %v past its deadline", d)
	}
	// After Release, writes go straight through again.
	go func() { buf := make([]byte, 4); _, _ = b.Read(buf) }()
	_ = a.SetWriteDeadline(time.Time{})
	if _, err := bc.Write([]byte("next")); err != nil {
		t.Fatalf("write after Release: %v", err)
	}
}
