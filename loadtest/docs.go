package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/automerge/automerge-go"

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
	p, err := dialRawPeer(ctx, nil, tg.urls()[0], peerID)
	if err != nil {
		return err
	}
	defer p.close()
	start := time.Now()
	ids := make([]protocol.DocumentID, 0, tg.n)
	for i := 0; i < tg.n; i++ {
		doc := automerge.New()
		if err := doc.RootMap().Set("title", fmt.Sprintf("document %d", i)); err != nil {
			return err
		}
		if _, err := doc.Commit("create"); err != nil {
			return err
		}
		ids = append(ids, p.add(doc))
	}
	if err := p.push(ctx, ids, 30*time.Second); err != nil {
		return err
	}
	setup := time.Since(start)
	after, err := settle(ctx, tg, tg.hold)
	if err != nil {
		return err
	}
	fmt.Printf("docs: %d documents created and stored in %s (%.0f/s)\n", tg.n, setup.Round(time.Millisecond), float64(tg.n)/setup.Seconds())
	fmt.Printf("docs: server RSS %.1f MiB -> %.1f MiB: %.1f KiB per open document\n", before/(1<<20), after/(1<<20), (after-before)/float64(tg.n)/1024)
	if *evictWait > 0 {
		p.close()
		evicted, err := settle(ctx, tg, *evictWait)
		if err != nil {
			return err
		}
		fmt.Printf("docs: %s after disconnecting, server RSS %.1f MiB (%.0f%% of the growth released)\n", *evictWait, evicted/(1<<20), 100*(after-evicted)/(after-before))
	}
	return nil
}
