package main

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"
)

func runIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	tg := targetFlags(fs, "idle connections to hold")
	par := fs.Int("parallel", 64, "concurrent dials")
	sources := fs.Int("sources", 8, "loopback source addresses to spread connections over")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	before, err := tg.start(ctx)
	if err != nil {
		return err
	}
	hc := (&sourceDialer{k: *sources}).client()
	conns := make([]*websocket.Conn, tg.n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures int
	var firstErr error
	sem := make(chan struct{}, *par)
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			defer dcancel()
			ws, _, err := joinedConn(dctx, hc, tg.url, fmt.Sprintf("idle-%d", i))
			if err != nil {
				mu.Lock()
				failures++
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			// Read in the background so pings are answered and closes seen.
			go func() { _, _, _ = ws.Read(context.Background()) }()
			conns[i] = ws
		}()
	}
	wg.Wait()
	setup := time.Since(start)
	after, err := settle(ctx, tg.metrics, tg.hold)
	if err != nil {
		return err
	}
	ok := tg.n - failures
	fmt.Printf("idle: %d connections (%d failed) in %s\n", ok, failures, setup.Round(time.Millisecond))
	if firstErr != nil {
		fmt.Printf("idle: first error: %v\n", firstErr)
	}
	if ok > 0 {
		fmt.Printf("idle: server RSS %.1f MiB -> %.1f MiB: %.1f KiB per idle connection\n", before/(1<<20), after/(1<<20), (after-before)/float64(ok)/1024)
	}
	for _, ws := range conns {
		if ws != nil {
			ws.Close(websocket.StatusNormalClosure, "")
		}
	}
	if failures > 0 {
		return fmt.Errorf("%d of %d connections failed", failures, tg.n)
	}
	return nil
}
