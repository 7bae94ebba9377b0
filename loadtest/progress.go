package main

import (
	"context"
	"fmt"
	"os"
	"time"
)

// startProgress prints a progress line on stderr once a second (rewritten
// in place on a terminal, one line each otherwise), counts disconnects and
// polls the server's RSS for its peak. stop ends it.
func (r *run) startProgress() (stop func()) {
	tty := false
	if fi, err := os.Stderr.Stat(); err == nil {
		tty = fi.Mode()&os.ModeCharDevice != 0
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastEdits, lastDeliv int64
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprintln(os.Stderr)
				}
				return
			case <-t.C:
			}
			r.pollStats()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			rss, err := r.tg.rss(ctx)
			cancel()
			r.mu.Lock()
			if err == nil {
				r.rssPeak = max(r.rssPeak, rss)
			}
			phase, nerr, ndisc := r.phase, 0, 0
			for _, v := range r.errs {
				nerr += v
			}
			for _, v := range r.discs {
				ndisc += v
			}
			r.mu.Unlock()
			edits, deliv := r.edits.Load(), r.deliveries.Load()
			now := time.Now()
			last := r.lat.second(r.lat.elapsed(now) - 1)
			line := fmt.Sprintf("%s %s %4.0fs | conn %d | edits %d +%d/s | deliveries %d +%d/s | last 1s p50 %.1fms p99 %.1fms | rss %.1fMiB | errors %d disconnects %d",
				r.name, phase, now.Sub(r.started).Seconds(), r.connected(), edits, edits-lastEdits, deliv, deliv-lastDeliv,
				last.P50, last.P99, rss/(1<<20), nerr, ndisc)
			lastEdits, lastDeliv = edits, deliv
			if tty {
				fmt.Fprintf(os.Stderr, "\r%s\x1b[K", line)
			} else {
				fmt.Fprintln(os.Stderr, line)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
