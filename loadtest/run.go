package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plaithub/plait/pkg/client"
)

// errNotOK ends a run whose report says it was not ok (exit status 1).
var errNotOK = errors.New("run not ok (see the report)")

// run is one scenario run: its flags, its clients and what it measured.
// A scenario declares its own flags on fs, then calls exec with its body.
type run struct {
	name string
	fs   *flag.FlagSet
	tg   *target

	out               string
	settleFor         time.Duration
	timeout           time.Duration
	sources, parallel int
	minBackoff        time.Duration
	materialize       bool
	cpuProfile        string   // -cpuprofile
	profileFile       *os.File // its file while the profile runs (startProfile)
	hc                *http.Client
	// expectDisconnects: disconnects are the scenario's doing, not errors.
	expectDisconnects bool

	started           time.Time
	lat               *latency
	connects          durations
	edits, deliveries atomic.Int64
	raw               atomic.Int64 // connections not made with pkg/client (idle)
	nextURL           atomic.Uint64

	mu                   sync.Mutex
	phase                string
	phaseStart, phaseEnd time.Time
	errs, discs          map[string]int
	connectFails         int
	members              map[*client.Client]int64 // disconnects already counted
	rssBefore, rssPeak   float64
	cpuStart, cpuEnd     window // server CPU and counts at phaseStart and phaseEnd
	history              int    // -history: changes each edited document starts with
	clients, docs        int
	notConverged         []NotConverged
	extra                map[string]any
	closers              []func()
}

func newRun(name, what string) *run {
	r := &run{
		name: name, fs: flag.NewFlagSet(name, flag.ContinueOnError),
		errs: map[string]int{}, discs: map[string]int{}, members: map[*client.Client]int64{}, extra: map[string]any{},
	}
	r.tg = targetFlags(r.fs, what)
	r.fs.StringVar(&r.out, "out", "", "write the report to PREFIX.json and PREFIX.html")
	r.fs.DurationVar(&r.settleFor, "settle", 10*time.Second, "time every document's clients have at the end to reach the same heads")
	r.fs.DurationVar(&r.timeout, "timeout", 10*time.Minute, "bound on the whole run")
	r.fs.IntVar(&r.sources, "sources", 8, "loopback source addresses to spread connections over")
	r.fs.IntVar(&r.parallel, "parallel", 64, "concurrent connection and document set-ups")
	r.fs.DurationVar(&r.minBackoff, "min-backoff", 100*time.Millisecond, "clients' first wait before reconnecting")
	r.fs.StringVar(&r.cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator itself, over the measured phase, to `FILE` (go tool pprof FILE)")
	r.fs.BoolVar(&r.materialize, "materialize", false, "clients apply every remote change to an automerge-go document, as an app that reads it would (default: index only, so the load generator spends its CPU on the server, not on Automerge)")
	return r
}

// exec parses args, runs body under -timeout with a progress line and
// RSS polling, then writes the report. It returns errNotOK if the report
// is not ok. body's error is reported as an error, not returned.
func (r *run) exec(args []string, body func(ctx context.Context) error) error {
	if err := r.fs.Parse(args); err != nil {
		return err
	}
	if r.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", r.fs.Args())
	}
	if len(r.tg.urls()) == 0 {
		return errors.New("-url is empty")
	}
	r.parallel = max(r.parallel, 1)
	r.hc = (&sourceDialer{k: max(r.sources, 1)}).client()
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	r.started = time.Now()
	r.lat = newLatency(r.started)
	if v, err := r.tg.rss(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest: warning: no server RSS:", err)
	} else {
		r.rssBefore, r.rssPeak = v, v
	}
	stop := r.startProgress()
	if err := body(ctx); err != nil {
		r.fail(err.Error())
	}
	r.stopProfile() // a phase that never ended
	r.pollStats()
	actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
	after, _ := r.tg.rss(actx) // ctx may have run out
	acancel()
	stop()
	rep := r.report(after)
	r.closeAll()
	rep.printSummary(os.Stdout)
	if r.out != "" {
		if err := rep.writeFiles(r.out); err != nil {
			return err
		}
	}
	if !rep.OK {
		return errNotOK
	}
	return nil
}

func (r *run) setPhase(p string) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
}

// window is what is read at each end of the measured phase: the servers'
// CPU seconds (cpuErr if not reported) and the edits and deliveries so far.
type window struct {
	cpu               float64
	cpuErr            error
	relay, send       histogram // plait_relay_seconds, plait_send_seconds (the errors: not reported)
	relayErr, sendErr error
	self              float64 // the generator's own CPU seconds
	edits, deliveries int64
}

// mark reads the window's values now.
func (r *run) mark() window {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w := window{edits: r.edits.Load(), deliveries: r.deliveries.Load(), self: selfCPU()}
	w.cpu, w.cpuErr = r.tg.cpu(ctx)
	w.relay, w.relayErr = r.tg.histogram(ctx, metricRelay)
	w.send, w.sendErr = r.tg.histogram(ctx, metricSend)
	return w
}

// beginPhase starts the measured phase: rates, the timeline and the server
// CPU per edit count from here.
func (r *run) beginPhase(name string) {
	w := r.mark()
	now := time.Now()
	r.lat.restart(now)
	r.mu.Lock()
	r.phase, r.phaseStart, r.cpuStart = name, now, w
	r.mu.Unlock()
	r.startProfile()
}

func (r *run) endPhase() {
	r.stopProfile()
	w := r.mark()
	r.mu.Lock()
	r.phaseEnd, r.cpuEnd = time.Now(), w
	r.mu.Unlock()
}

// fail records an error.
func (r *run) fail(why string) {
	r.mu.Lock()
	r.errs[reason(why)]++
	r.mu.Unlock()
}

func (r *run) connectFailed(why string) {
	r.mu.Lock()
	r.connectFails++
	r.errs["connect: "+reason(why)]++
	r.mu.Unlock()
}

// extraSet sets a scenarioExtra entry.
func (r *run) extraSet(k string, v any) {
	r.mu.Lock()
	r.extra[k] = v
	r.mu.Unlock()
}

// size sets the clients and docs of the report.
func (r *run) size(clients, docs int) {
	r.mu.Lock()
	r.clients, r.docs = clients, docs
	r.mu.Unlock()
}

var (
	urlRe  = regexp.MustCompile(`wss?://\S*?(: |\s|$)`)
	addrRe = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)
	idRe   = regexp.MustCompile(`[1-9A-HJ-NP-Za-km-z]{20,}`)
)

// reason normalises an error message to group it: no URLs, addresses or
// document ids, at most 160 bytes.
func reason(s string) string {
	s = urlRe.ReplaceAllString(s, "URL$1")
	s = addrRe.ReplaceAllString(s, "ADDR")
	s = idRe.ReplaceAllString(s, "ID")
	if len(s) > 160 {
		s = s[:160]
	}
	if s == "" {
		s = "unknown"
	}
	return s
}

// track adds c to the clients whose disconnects are counted.
func (r *run) track(c *client.Client) {
	r.mu.Lock()
	r.members[c] = 0
	r.mu.Unlock()
}

// pollStats counts the disconnects of every client since the last poll,
// by the client's last error.
func (r *run) pollStats() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.members {
		r.accountLocked(c)
	}
}

func (r *run) accountLocked(c *client.Client) {
	s := c.Stats()
	d := s.Disconnects - r.members[c]
	if d <= 0 {
		return
	}
	r.members[c] = s.Disconnects
	why := reason(s.LastError)
	r.discs[why] += int(d)
	if !r.expectDisconnects {
		r.errs["disconnect: "+why] += int(d)
	}
}

// release counts c's last disconnects, forgets it and closes it.
func (r *run) release(c *client.Client) {
	r.mu.Lock()
	if _, ok := r.members[c]; ok {
		r.accountLocked(c)
		delete(r.members, c)
	}
	r.mu.Unlock()
	if err := c.Close(); err != nil {
		r.fail("close: " + err.Error())
	}
}

// atClose registers fn to run at the end, after the last measurement.
func (r *run) atClose(fn func()) {
	r.mu.Lock()
	r.closers = append(r.closers, fn)
	r.mu.Unlock()
}

// closeAll closes every client and runs the atClose functions.
func (r *run) closeAll() {
	r.mu.Lock()
	closers := r.closers
	r.closers = nil
	cs := make([]*client.Client, 0, len(r.members))
	for c := range r.members {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	r.each(context.Background(), len(cs), func(i int) { r.release(cs[i]) })
	for _, fn := range closers {
		fn()
	}
}

// connected returns how many clients are connected now.
func (r *run) connected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := int(r.raw.Load())
	for c := range r.members {
		if c.Connected() {
			n++
		}
	}
	return n
}

// each runs fn(0) .. fn(n-1), -parallel at a time, and waits for them; it
// starts no more once ctx is done.
func (r *run) each(ctx context.Context, n int, fn func(i int)) {
	sem := make(chan struct{}, r.parallel)
	var wg sync.WaitGroup
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

// waitFor polls cond every 5ms until it holds, ctx is done or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
