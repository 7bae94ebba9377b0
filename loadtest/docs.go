package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/protocol"
)

// runDocs opens n small documents on the server through one connection,
// waits until the server has stored each one, and reports the server's RSS
// per open document. The documents stay open while the connection does.
func runDocs(args []string) error {
	fs := flag.NewFlagSet("docs", flag.ContinueOnError)
	tg := targetFlags(fs, "documents to open")
	evictWait := fs.Duration("evict-wait", 0, "after measuring, disconnect and wait this long (longer than the server's --idle-doc-timeout) to measure RSS after eviction; 0 skips")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	before, err := tg.start(ctx)
	if err != nil {
		return err
	}
	peerID := "docs-" + fmt.Sprint(time.Now().UnixNano())
	ws, peer, err := joinedConn(ctx, nil, tg.urls()[0], peerID)
	if err != nil {
		return err
	}
	defer ws.Close(websocket.StatusNormalClosure, "")
	// Send the first sync message of every document, then answer the
	// server until every document has been acknowledged with our heads.
	type docState struct {
		doc *automerge.Doc
		ss  *automerge.SyncState
	}
	docs := make(map[protocol.DocumentID]*docState, tg.n)
	send := func(id protocol.DocumentID, d *docState) error {
		sm, ok := d.ss.GenerateMessage()
		if !ok {
			return nil
		}
		b, err := protocol.Encode(&protocol.Message{Type: protocol.TypeSync, SenderID: peerID, TargetID: peer.SenderID, DocumentID: id, Data: sm.Bytes()})
		if err != nil {
			return err
		}
		return ws.Write(ctx, websocket.MessageBinary, b)
	}
	start := time.Now()
	// One reader goroutine: coder/websocket closes a connection whose read
	// context ends, so reads must not time out.
	in := make(chan *protocol.Message, 1024)
	go func() {
		defer close(in)
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if m, err := protocol.Decode(b); err == nil {
				in <- m
			}
		}
	}()
	acked := 0
	for i := 0; i < tg.n; i++ {
		d := &docState{doc: automerge.New()}
		if err := d.doc.RootMap().Set("title", fmt.Sprintf("document %d", i)); err != nil {
			return err
		}
		if _, err := d.doc.Commit("create"); err != nil {
			return err
		}
		d.ss = automerge.NewSyncState(d.doc)
		id := protocol.NewDocumentID()
		docs[id] = d
		if err := send(id, d); err != nil {
			return err
		}
	}
	done := map[protocol.DocumentID]bool{}
	for acked < tg.n {
		var m *protocol.Message
		select {
		case m = <-in:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("server stopped answering after %d of %d documents", acked, tg.n)
		}
		if m == nil {
			return fmt.Errorf("connection closed after %d of %d documents", acked, tg.n)
		}
		d := docs[m.DocumentID]
		if m.Type != protocol.TypeSync || d == nil {
			continue
		}
		sm, err := d.ss.ReceiveMessage(m.Data)
		if err != nil {
			return err
		}
		if !done[m.DocumentID] && len(sm.Heads()) == 1 && sm.Heads()[0] == d.doc.Heads()[0] {
			done[m.DocumentID] = true
			acked++
		}
		if err := send(m.DocumentID, d); err != nil {
			return err
		}
	}
	setup := time.Since(start)
	after, err := settle(ctx, tg, tg.hold)
	if err != nil {
		return err
	}
	fmt.Printf("docs: %d documents created and stored in %s (%.0f/s)\n", tg.n, setup.Round(time.Millisecond), float64(tg.n)/setup.Seconds())
	fmt.Printf("docs: server RSS %.1f MiB -> %.1f MiB: %.1f KiB per open document\n", before/(1<<20), after/(1<<20), (after-before)/float64(tg.n)/1024)
	if *evictWait > 0 {
		ws.Close(websocket.StatusNormalClosure, "")
		evicted, err := settle(ctx, tg, *evictWait)
		if err != nil {
			return err
		}
		fmt.Printf("docs: %s after disconnecting, server RSS %.1f MiB (%.0f%% of the growth released)\n", *evictWait, evicted/(1<<20), 100*(after-evicted)/(after-before))
	}
	return nil
}
