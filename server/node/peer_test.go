package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/protocol"
)

// goPeer is a minimal automerge-repo peer written with automerge-go, for
// tests that need to drive the wire protocol byte by byte.
type goPeer struct {
	t      *testing.T
	ws     *websocket.Conn
	in     chan readResult // filled by one reader goroutine: a read timeout would close a coder/websocket conn
	id     string
	server string // the node's peer id, from its peer message
	peer   *protocol.Message
}

func dialPeer(t *testing.T, url, id string) *goPeer {
	t.Helper()
	return dialPeerOpts(t, url, id, nil)
}

// dialPeerOpts is dialPeer with dial options (nil: the defaults).
func dialPeerOpts(t *testing.T, url, id string, opts *websocket.DialOptions) *goPeer {
	t.Helper()
	p := dialRawOpts(t, url, id, opts)
	p.send(&protocol.Message{Type: protocol.TypeJoin, SenderID: id, SupportedProtocolVersions: []string{"1"}, PeerMetadata: &protocol.PeerMetadata{IsEphemeral: true}})
	m := p.recv()
	if m.Type != protocol.TypePeer {
		t.Fatalf("expected peer message, got %+v", m)
	}
	p.server, p.peer = m.SenderID, m
	return p
}

func dialRaw(t *testing.T, url, id string) *goPeer {
	t.Helper()
	return dialRawOpts(t, url, id, nil)
}

func dialRawOpts(t *testing.T, url, id string, opts *websocket.DialOptions) *goPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if opts == nil {
		opts = &websocket.DialOptions{HTTPHeader: http.Header{}}
	}
	ws, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	ws.SetReadLimit(64 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	p := &goPeer{t: t, ws: ws, id: id, in: make(chan readResult, 1024)}
	go func() {
		for {
			typ, b, err := ws.Read(context.Background())
			p.in <- readResult{typ, b, err}
			if err != nil {
				return
			}
		}
	}()
	return p
}

type readResult struct {
	typ websocket.MessageType
	b   []byte
	err error
}

var errNoMessage = errors.New("no message within the timeout")

func (p *goPeer) sendRaw(typ websocket.MessageType, b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.ws.Write(ctx, typ, b)
}

func (p *goPeer) send(m *protocol.Message) {
	p.t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		p.t.Fatalf("encode: %v", err)
	}
	if err := p.sendRaw(websocket.MessageBinary, b); err != nil {
		p.t.Fatalf("send %s: %v", m.Type, err)
	}
}

// next returns the next message, or the error that ended the connection.
func (p *goPeer) next(timeout time.Duration) (*protocol.Message, error) {
	var r readResult
	select {
	case r = <-p.in:
	case <-time.After(timeout):
		return nil, errNoMessage
	}
	if r.err != nil {
		p.in <- r // sticky: later reads see the same end
		return nil, r.err
	}
	if r.typ != websocket.MessageBinary {
		return nil, fmt.Errorf("server sent a text frame")
	}
	return protocol.Decode(r.b)
}

func (p *goPeer) recv() *protocol.Message {
	p.t.Helper()
	m, err := p.next(10 * time.Second)
	if err != nil {
		p.t.Fatalf("recv: %v", err)
	}
	return m
}

// expectClose reads until the connection closes and returns the error
// message received before (if any) and the close status.
func (p *goPeer) expectClose() (errMsg string, code websocket.StatusCode) {
	p.t.Helper()
	for {
		m, err := p.next(10 * time.Second)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				p.t.Fatalf("connection ended without a close frame: %v", err)
			}
			return errMsg, ce.Code
		}
		if m.Type == protocol.TypeError {
			errMsg = m.ErrorMessage
		}
	}
}

// syncDoc runs the sync protocol for doc id until both sides are quiet and
// the server's advertised heads equal the local heads.
func (p *goPeer) syncDoc(id protocol.DocumentID, doc *automerge.Doc, ss *automerge.SyncState, request bool) {
	p.t.Helper()
	typ := protocol.TypeSync
	if request {
		typ = protocol.TypeRequest
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if sm, ok := ss.GenerateMessage(); ok {
			p.send(&protocol.Message{Type: typ, SenderID: p.id, TargetID: p.server, DocumentID: id, Data: sm.Bytes()})
			typ = protocol.TypeSync
		}
		m, err := p.next(time.Second)
		if err != nil {
			if errors.Is(err, errNoMessage) {
				if _, more := ss.GenerateMessage(); !more {
					return
				}
				continue
			}
			p.t.Fatalf("sync %s: %v", id, err)
		}
		switch m.Type {
		case protocol.TypeSync:
			if m.DocumentID != id {
				continue
			}
			if _, err := ss.ReceiveMessage(m.Data); err != nil {
				p.t.Fatalf("receive sync: %v", err)
			}
		case protocol.TypeDocUnavailable:
			p.t.Fatalf("document %s unavailable", id)
		case protocol.TypeError:
			p.t.Fatalf("server error: %s", m.ErrorMessage)
		}
	}
	p.t.Fatalf("sync of %s did not settle", id)
}
