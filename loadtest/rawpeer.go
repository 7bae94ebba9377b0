package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/protocol"
)

// rawPeer uploads documents built locally with automerge-go over one joined
// connection, without pkg/client: docs and -history use it to give the
// server documents, and wait until it has stored them, before measuring.
// Its methods are called from one goroutine.
type rawPeer struct {
	ws       *websocket.Conn
	id       string
	serverID string
	in       chan *protocol.Message
	docs     map[protocol.DocumentID]*rawDoc
}

type rawDoc struct {
	doc *automerge.Doc
	ss  *automerge.SyncState
}

// dialRawPeer connects to url (hc may be nil) and joins as peerID. ctx
// bounds the connection's whole life: coder/websocket closes a connection
// whose read context ends, so its one reader reads under ctx.
func dialRawPeer(ctx context.Context, hc *http.Client, url, peerID string) (*rawPeer, error) {
	ws, peer, err := joinedConn(ctx, hc, url, peerID)
	if err != nil {
		return nil, err
	}
	p := &rawPeer{ws: ws, id: peerID, serverID: peer.SenderID, in: make(chan *protocol.Message, 1024), docs: map[protocol.DocumentID]*rawDoc{}}
	go func() {
		defer close(p.in)
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if m, err := protocol.Decode(b); err == nil {
				p.in <- m
			}
		}
	}()
	return p, nil
}

// close ends the connection.
func (p *rawPeer) close() { p.ws.Close(websocket.StatusNormalClosure, "") }

// add makes doc a document of p under a new id, and returns the id.
func (p *rawPeer) add(doc *automerge.Doc) protocol.DocumentID {
	id := protocol.NewDocumentID()
	p.docs[id] = &rawDoc{doc: doc, ss: automerge.NewSyncState(doc)}
	return id
}

// send sends the next sync message of id, if one is due.
func (p *rawPeer) send(ctx context.Context, id protocol.DocumentID) error {
	d := p.docs[id]
	sm, ok := d.ss.GenerateMessage()
	if !ok {
		return nil
	}
	b, err := protocol.Encode(&protocol.Message{Type: protocol.TypeSync, SenderID: p.id, TargetID: p.serverID, DocumentID: id, Data: sm.Bytes()})
	if err != nil {
		return err
	}
	return p.ws.Write(ctx, websocket.MessageBinary, b)
}

// push sends what the server lacks of each document of ids and answers it
// until it has acknowledged every one of them with the document's current
// heads (a server advertises heads it has stored). It fails if no message
// comes for idle.
func (p *rawPeer) push(ctx context.Context, ids []protocol.DocumentID, idle time.Duration) error {
	pending := make(map[protocol.DocumentID]bool, len(ids))
	for _, id := range ids {
		pending[id] = true
		if err := p.send(ctx, id); err != nil {
			return err
		}
	}
	t := time.NewTimer(idle)
	defer t.Stop()
	for len(pending) > 0 {
		var m *protocol.Message
		select {
		case m = <-p.in:
		case <-t.C:
			return fmt.Errorf("server stopped answering after %d of %d documents", len(ids)-len(pending), len(ids))
		case <-ctx.Done():
			return ctx.Err()
		}
		if m == nil {
			return fmt.Errorf("connection closed after %d of %d documents", len(ids)-len(pending), len(ids))
		}
		t.Reset(idle)
		d := p.docs[m.DocumentID]
		if m.Type != protocol.TypeSync || d == nil {
			continue
		}
		sm, err := d.ss.ReceiveMessage(m.Data)
		if err != nil {
			return err
		}
		if pending[m.DocumentID] && headsEqual(sm.Heads(), d.doc.Heads()) {
			delete(pending, m.DocumentID)
		}
		if err := p.send(ctx, m.DocumentID); err != nil {
			return err
		}
	}
	return nil
}

// headsEqual reports whether a and b hold the same hashes, in any order.
func headsEqual(a, b []automerge.ChangeHash) bool {
	key := func(hs []automerge.ChangeHash) []string {
		out := make([]string, len(hs))
		for i, h := range hs {
			out[i] = h.String()
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}
