package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// runIdle holds -n idle joined connections (raw, not pkg/client: the
// cheapest client) and reports the server's RSS per connection.
func runIdle(args []string) error {
	r := newRun("idle", "idle connections to hold")
	return r.exec(args, func(ctx context.Context) error {
		n := r.tg.n
		r.size(n, 0)
		r.setPhase("connecting")
		urls := r.tg.urls()
		var mu sync.Mutex
		var closing atomic.Bool
		conns := make([]*websocket.Conn, 0, n)
		r.atClose(func() {
			closing.Store(true)
			for _, ws := range conns {
				ws.Close(websocket.StatusNormalClosure, "")
			}
		})
		r.each(ctx, n, func(i int) {
			dctx, cancel := context.WithTimeout(ctx, setupTimeout)
			defer cancel()
			t0 := time.Now()
			ws, _, err := joinedConn(dctx, r.hc, urls[i%len(urls)], fmt.Sprintf("idle-%d", i))
			if err != nil {
				r.connectFailed(err.Error())
				return
			}
			r.connects.add(time.Since(t0))
			r.raw.Add(1)
			// Read in the background so pings are answered and closes seen.
			go func() {
				_, _, err := ws.Read(context.Background())
				r.raw.Add(-1)
				if !closing.Load() {
					r.fail("idle connection ended: " + err.Error())
				}
			}()
			mu.Lock()
			conns = append(conns, ws)
			mu.Unlock()
		})
		r.beginPhase("holding")
		after, err := settle(ctx, r.tg, r.tg.hold)
		r.endPhase()
		if err != nil {
			return err
		}
		if ok := r.connects.count(); ok > 0 && r.rssBefore > 0 {
			per := (after - r.rssBefore) / float64(ok)
			r.extraSet("rssPerConnBytes", int64(per))
			fmt.Printf("idle: server RSS %.1f MiB -> %.1f MiB: %.1f KiB per idle connection\n", r.rssBefore/(1<<20), after/(1<<20), per/1024)
		}
		return nil
	})
}
