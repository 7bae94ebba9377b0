package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Logs an operator can live with: per-connection events (joins, closes)
// are at debug level, and warnings and errors that repeat are rate-limited
// here: a failing Redis or a flood of bad clients writes a few lines and
// a count, not a line per event.

// Defaults of the repeat limit: the first throttleBurst records of one
// message (and level) in each throttleWindow are written; the rest are
// counted and reported once the window ends.
const (
	throttleWindow = time.Minute
	throttleBurst  = 10
	// throttleMaxKeys bounds the messages tracked. Messages are constants
	// of the code, so this is never reached in practice; beyond it a new
	// message is written unthrottled.
	throttleMaxKeys = 4096
)

// throttleHandler is a slog.Handler that passes records below Warn through
// and limits each warning or error message to burst records a window.
// When a window in which records were held back ends, the next record of
// that message (or flush, if none comes) carries "suppressed" (how many
// were not written) and "suppressed_window". Handlers made by WithAttrs
// and WithGroup share the counts: a message counts the same whatever
// attributes its logger carries (the connection, the document). It is
// safe for concurrent use.
type throttleHandler struct {
	inner slog.Handler
	st    *throttleState
}

type throttleKey struct {
	level slog.Level
	msg   string
}

type throttleEntry struct {
	start      time.Time // of the current window
	n          int       // records in the current window
	suppressed int       // held back in the current window
	// last is the handler (with its attributes) of the latest held-back
	// record: flush reports through it.
	last slog.Handler
}

type throttleState struct {
	window time.Duration
	burst  int
	now    func() time.Time
	// suppressed counts held-back records (plait_log_suppressed_total);
	// nil: not counted.
	suppressed prometheus.Counter

	mu      sync.Mutex
	entries map[throttleKey]*throttleEntry
}

// newThrottleHandler limits inner's repeated warnings and errors to burst
// a window. now is the clock (time.Now but in tests).
func newThrottleHandler(inner slog.Handler, window time.Duration, burst int, now func() time.Time, suppressed prometheus.Counter) *throttleHandler {
	return &throttleHandler{inner: inner, st: &throttleState{window: window, burst: burst, now: now,
		suppressed: suppressed, entries: make(map[throttleKey]*throttleEntry)}}
}

func (h *throttleHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *throttleHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &throttleHandler{inner: h.inner.WithAttrs(attrs), st: h.st}
}

func (h *throttleHandler) WithGroup(name string) slog.Handler {
	return &throttleHandler{inner: h.inner.WithGroup(name), st: h.st}
}

func (h *throttleHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.inner.Handle(ctx, r)
	}
	st := h.st
	now := st.now()
	k := throttleKey{r.Level, r.Message}
	st.mu.Lock()
	e := st.entries[k]
	if e == nil {
		if len(st.entries) >= throttleMaxKeys {
			st.mu.Unlock()
			return h.inner.Handle(ctx, r)
		}
		e = &throttleEntry{start: now}
		st.entries[k] = e
	}
	var held int
	var heldFor time.Duration
	if now.Sub(e.start) >= st.window {
		held, heldFor = e.suppressed, now.Sub(e.start)
		e.start, e.n, e.suppressed, e.last = now, 0, 0, nil
	}
	e.n++
	if e.n > st.burst {
		e.suppressed++
		e.last = h.inner
		st.mu.Unlock()
		if st.suppressed != nil {
			st.suppressed.Inc()
		}
		return nil
	}
	st.mu.Unlock()
	if held > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", held), slog.Duration("suppressed_window", heldFor.Round(time.Second)))
	}
	return h.inner.Handle(ctx, r)
}

// flush reports the messages whose window has ended with records held
// back and no record since: one line each, with the count. The node calls
// it every window.
func (h *throttleHandler) flush(ctx context.Context) {
	st := h.st
	now := st.now()
	type report struct {
		k    throttleKey
		n    int
		d    time.Duration
		last slog.Handler
	}
	var out []report
	st.mu.Lock()
	for k, e := range st.entries {
		if now.Sub(e.start) < st.window {
			continue
		}
		if e.suppressed > 0 {
			out = append(out, report{k, e.suppressed, now.Sub(e.start), e.last})
		}
		delete(st.entries, k) // a quiet message starts afresh
	}
	st.mu.Unlock()
	for _, rp := range out {
		r := slog.NewRecord(now, rp.k.level, rp.k.msg, 0)
		r.AddAttrs(slog.Int("suppressed", rp.n), slog.Duration("suppressed_window", rp.d.Round(time.Second)))
		_ = rp.last.Handle(ctx, r)
	}
}

// throttleLogs returns log limited in repeated warnings and errors
// (throttleHandler), counting what it holds back in
// plait_log_suppressed_total on reg. New gives it to everything the node
// builds, and runs the handler's flush every window.
func throttleLogs(log *slog.Logger, reg prometheus.Registerer) (*slog.Logger, *throttleHandler) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_log_suppressed_total",
		Help: "Warnings and errors not written because the same message was logged more than 10 times within a minute; each window's count is logged with the message."})
	reg.MustRegister(c)
	th := newThrottleHandler(log.Handler(), throttleWindow, throttleBurst, time.Now, c)
	return slog.New(th), th
}
