package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
)

// Every edit carries its send time in its commit message,
// "plait-lt <peer> <n> <UnixNano>", which every receiving client reads from
// the change (client.Event.Applied) without applying it to a document: the
// delay of each edit is recorded by every client that receives it (all
// clients are in this process: one clock).

const msgPrefix = "plait-lt "

// editor makes timed edits on one handle.
type editor struct {
	h    *client.Handle
	peer string
	seq  int64
	// extra, if set, is more work done in the same change (typing).
	extra func(d *automerge.Doc) error
}

func (e *editor) edit() error {
	e.seq++
	msg := fmt.Sprintf("%s%s %d %d", msgPrefix, e.peer, e.seq, time.Now().UnixNano())
	return e.h.ChangeMessage(msg, func(d *automerge.Doc) error {
		if err := d.RootMap().Set("n/"+e.peer, e.seq); err != nil {
			return err
		}
		if e.extra != nil {
			return e.extra(d)
		}
		return nil
	})
}

// sentAt reads the send time from an edit's commit message.
func sentAt(msg string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(msg, msgPrefix)
	if !ok {
		return time.Time{}, false
	}
	f := strings.Fields(rest)
	if len(f) != 3 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// watch records the delay of every timed edit that reaches h.
func (r *run) watch(h *client.Handle) {
	// Callbacks of one client run one at a time on its reader goroutine.
	h.Subscribe(func(e client.Event) {
		now := time.Now()
		for _, c := range e.Applied {
			if t, ok := sentAt(c.Message); ok {
				r.lat.add(now, now.Sub(t))
				r.deliveries.Add(1)
			}
		}
	})
}

// watchGroup watches every handle of g.
func (r *run) watchGroup(g *docGroup) {
	for _, h := range g.hs {
		r.watch(h)
	}
}

// editLoop makes e edit rate times a second, from a random point of the
// first interval until until (or ctx is done). An edit that takes longer
// than the interval skips ticks: the achieved rate is in the report.
func (r *run) editLoop(ctx context.Context, e *editor, rate float64, until time.Time) {
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	every := time.Duration(float64(time.Second) / rate)
	sleep(ctx, rand.N(every))
	t := time.NewTicker(every)
	defer t.Stop()
	for ctx.Err() == nil {
		if err := e.edit(); err != nil {
			r.fail("edit: " + err.Error())
		} else {
			r.edits.Add(1)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}
