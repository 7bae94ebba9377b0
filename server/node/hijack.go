package node

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
)

// hijackWriter is the smallest http.ResponseWriter + http.Hijacker that lets
// coder/websocket accept a connection that fasthttp has already handed over
// (RequestCtx.Hijack with no response). coder/websocket calls
// WriteHeader(101) and then Hijack, expecting net/http to have sent the
// status line; here Hijack writes the 101 response itself. Error responses
// written before the hijack (Accept refusing a handshake) go out as a plain
// HTTP response with Connection: close.
type hijackWriter struct {
	conn        net.Conn
	header      http.Header
	status      int
	headersSent bool
	bufSize     int
}

func newHijackWriter(conn net.Conn, bufSize int) *hijackWriter {
	return &hijackWriter{conn: conn, header: make(http.Header), bufSize: bufSize}
}

func (w *hijackWriter) Header() http.Header { return w.header }

func (w *hijackWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *hijackWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if !w.headersSent {
		w.header.Set("Connection", "close")
		if err := w.sendHead(); err != nil {
			return 0, err
		}
	}
	return w.conn.Write(b)
}

func (w *hijackWriter) sendHead() error {
	w.headersSent = true
	bw := bufio.NewWriterSize(w.conn, 512)
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	if err := w.header.Write(bw); err != nil {
		return err
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// Hijack sends the 101 response and hands the connection to the caller.
func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status != http.StatusSwitchingProtocols {
		return nil, nil, fmt.Errorf("hijack without a 101 status (got %d)", w.status)
	}
	if err := w.sendHead(); err != nil {
		return nil, nil, fmt.Errorf("failed to send 101 response: %w", err)
	}
	rw := bufio.NewReadWriter(bufio.NewReaderSize(w.conn, w.bufSize), bufio.NewWriterSize(w.conn, w.bufSize))
	return w.conn, rw, nil
}
