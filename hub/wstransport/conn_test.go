package wstransport

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

// pair starts a WebSocket server whose accepted connection is wrapped in a
// Conn, and dials it; it returns both ends.
func pair(t *testing.T, opts Options) (*Conn, *websocket.Conn) {
	t.Helper()
	ch := make(chan *Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		c := New(ws, opts)
		ch <- c
		<-c.Done()
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cli.SetReadLimit(1 << 30)
	t.Cleanup(func() { cli.CloseNow() })
	return <-ch, cli
}

func closeStatus(t *testing.T, cli *websocket.Conn) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := cli.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func TestSlowConsumerIsClosedNotBuffered(t *testing.T) {
	c, cli := pair(t, Options{MaxQueueBytes: 256 << 10, WriteTimeout: 2 * time.Second})
	frame := make([]byte, 32<<10)
	var err error
	// The client reads nothing: once the socket buffers are full the queue
	// grows until it passes its bound. 64 MiB is far more than loopback
	// socket buffers hold, so the loop ends by overflow.
	for i := 0; i < 2048 && err == nil; i++ {
		err = c.Send(frame)
		if err == nil && i%64 == 63 {
			time.Sleep(5 * time.Millisecond) // let the writer fill the socket
		}
	}
	if !errors.Is(err, hub.ErrSlowConsumer) {
		t.Fatalf("Send never reported a slow consumer: %v", err)
	}
	if err := c.Send(frame); !errors.Is(err, hub.ErrConnClosed) {
		t.Fatalf("Send after overflow: %v, want ErrConnClosed", err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("writer did not stop after overflow")
	}
	_ = cli
}

func TestQueuedFramesFlushBeforeClose(t *testing.T) {
	c, cli := pair(t, Options{})
	for i := 0; i < 10; i++ {
		if err := c.Send([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.Close(protocol.CloseMalformedMessage, "bye")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 10; i++ {
		_, b, err := cli.Read(ctx)
		if err != nil || len(b) != 1 || b[0] != byte(i) {
			t.Fatalf("frame %d: %v %v", i, b, err)
		}
	}
	if code := closeStatus(t, cli); code != websocket.StatusCode(protocol.CloseMalformedMessage) {
		t.Fatalf("close status %d", code)
	}
}

func TestOversizedAndTextFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		size int
		want protocol.CloseCode
	}{
		{"oversized", websocket.MessageBinary, 2048, protocol.CloseMessageTooBig},
		{"text", websocket.MessageText, 10, protocol.CloseMalformedMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, cli := pair(t, Options{MaxMessageBytes: 1024})
			errc := make(chan error, 1)
			go func() { _, err := c.Read(context.Background()); errc <- err }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = cli.Write(ctx, tc.typ, make([]byte, tc.size))
			if err := <-errc; !errors.Is(err, hub.ErrConnClosed) {
				t.Fatalf("Read: %v", err)
			}
			if code := closeStatus(t, cli); code != websocket.StatusCode(tc.want) {
				t.Fatalf("close status %d, want %d", code, tc.want)
			}
		})
	}
}

func TestPingTimeoutClosesDeadPeer(t *testing.T) {
	c, cli := pair(t, Options{PingInterval: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	// The client never reads, so it never answers pings.
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second): // 100ms pong wait + at most 5s close handshake
		t.Fatal("connection without pongs was not closed")
	}
	_ = cli
}

// TestTrySendHoldsBackWithoutClosing: TrySend refuses a frame the queue
// has no room for without closing the connection, always takes one when
// the queue is empty, and every frame it took arrives in order once the
// client reads.
func TestTrySendHoldsBackWithoutClosing(t *testing.T) {
	c, cli := pair(t, Options{MaxQueueBytes: 256 << 10, WriteTimeout: 5 * time.Second})
	var taken [][]byte
	refused := false
	for i := 0; i < 2048 && !refused; i++ {
		frame := bytes.Repeat([]byte{byte(i)}, 32<<10)
		ok, err := c.TrySend(frame)
		if err != nil {
			t.Fatalf("TrySend %d: %v", i, err)
		}
		if !ok {
			refused = true
			break
		}
		taken = append(taken, frame)
		if i%64 == 63 {
			time.Sleep(5 * time.Millisecond) // let the writer fill the socket
		}
	}
	if !refused {
		t.Fatal("TrySend never found the queue full")
	}
	// Read everything: the connection is still open and in order.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, want := range taken {
		_, got, err := cli.Read(ctx)
		if err != nil {
			t.Fatalf("frame %d of %d: %v", i, len(taken), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d out of order", i)
		}
	}
	// Empty again (the writer took the last frame before the client read
	// it): even a frame larger than the bound is taken.
	deadline := time.Now().Add(5 * time.Second)
	ok, err := c.TrySend(make([]byte, 300<<10))
	for !ok && err == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		ok, err = c.TrySend(make([]byte, 300<<10))
	}
	if !ok || err != nil {
		t.Fatalf("TrySend on an empty queue: %v, %v", ok, err)
	}
	if _, got, err := cli.Read(ctx); err != nil || len(got) != 300<<10 {
		t.Fatalf("the large frame: %d bytes, %v", len(got), err)
	}
}

// OnWritten reports, per run of the writer, the time from queuing its
// oldest frame to the end of the socket write: a frame larger than the
// socket buffers waits for a client that is slow to read, and so does
// its report.
func TestOnWrittenCoversTheSocketWrite(t *testing.T) {
	waits := make(chan time.Duration, 16)
	c, cli := pair(t, Options{OnWritten: func(d time.Duration) { waits <- d }})
	const late = 300 * time.Millisecond
	big := make([]byte, 32<<20) // far more than loopback socket buffers hold
	if err := c.Send(big); err != nil {
		t.Fatal(err)
	}
	time.Sleep(late)
	select {
	case d := <-waits:
		t.Fatalf("OnWritten reported %v before the client read the frame", d)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, b, err := cli.Read(ctx); err != nil || len(b) != len(big) {
		t.Fatalf("read %d bytes, %v", len(b), err)
	}
	select {
	case d := <-waits:
		if d < late || d > 10*time.Second {
			t.Fatalf("OnWritten reported %v for a frame the client read after %v", d, late)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnWritten was not called")
	}
	// A small frame to a reading client: one more report, and a short one.
	if err := c.Send([]byte{0x80}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.Read(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-waits:
		if d < 0 || d >= late {
			t.Fatalf("OnWritten reported %v for a small frame read at once", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnWritten was not called for the second frame")
	}
}
