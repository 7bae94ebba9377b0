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
	url := fs.String("url", "ws://127.0.0.1:8080/ws", "server WebSocket URL")
	metrics := fs.String("metrics", "", "server metrics URL (default: derived from -url)")
	n := fs.Int("n", 2000, "idle connections to hold")
	par := fs.Int("parallel", 64, "concurrent dials")
	sources := fs.Int("sources", 8, "loopback source addresses to spread connections over")
	hold := fs.Duration("hold", 5*time.Second, "time to hold the connections before measuring")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *metrics == "" {
		*metrics = metricsURLFor(*url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	before, err := settle(ctx, *metrics, 0)
	if err != nil {
		return err
	}
	hc := (&sourceDialer{k: *sources}).client()
	conns := make([]*websocket.Conn, *n)
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
			ws, _, err := joinedConn(dctx, hc, *url, fmt.Sprintf("idle-%d", i))
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
	after, err := settle(ctx, *metrics, *hold)
	if err != nil {
		return err
	}
	ok := *n - failures
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
		return fmt.Errorf("%d of %d connections failed", failures, *n)
	}
	return nil
}
