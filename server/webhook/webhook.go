package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Options configures a Dispatcher.
type Options struct {
	Config Config // from ReadConfig (its defaults filled)
	// Redis, if set, holds the queue and the debounce windows that the
	// nodes of a cluster share; nil: a single node, in memory.
	Redis  redis.UniversalClient
	Prefix string // of the Redis keys (default "plait")
	NodeID string // this node's consumer name in the Redis group (required with Redis)
	Logger *slog.Logger
	// Registerer receives the metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Workers is the number of deliveries made at once. Default 4.
	Workers int
}

// Dispatcher queues events and delivers them.
type Dispatcher struct {
	cfg    Config
	log    *slog.Logger
	q      queue
	win    window
	client *http.Client
	m      metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	later chan later // Changed's and EmitLater's work, for the background goroutine

	mu      sync.Mutex
	pending map[string]*time.Timer // doc -> its document.changed, due
}

// laterQueue bounds the work Changed and EmitLater hand to the background
// goroutine; past it they are dropped (counted).
const laterQueue = 4096

// later is one piece of that work: an event to emit, or (typ "") a
// document whose document.changed window to claim.
type later struct{ typ, doc, user string }

type metrics struct {
	events     *prometheus.CounterVec // by type
	dropped    prometheus.Counter
	deliveries *prometheus.CounterVec // by result: delivered, failed
	attempts   *prometheus.CounterVec // by result: ok, error
}

// maxPendingChanged bounds the documents with a document.changed due on
// one node; past it the event is dropped (counted).
const maxPendingChanged = 100_000

// New starts a Dispatcher's workers.
func New(ctx context.Context, o Options) (*Dispatcher, error) {
	if err := o.Config.fill(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Prefix == "" {
		o.Prefix = "plait"
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	d := &Dispatcher{
		cfg:     o.Config,
		log:     o.Logger.With("component", "webhooks"),
		pending: make(map[string]*time.Timer),
		later:   make(chan later, laterQueue),
		client: &http.Client{
			Timeout: time.Duration(o.Config.Timeout),
			// A receiver's redirect is an error, not a hop to elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		m: metrics{
			events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_webhook_events_total", Help: "Webhook events queued, by type (one per event, whatever the number of endpoints)."}, []string{"type"}),
			dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_webhook_dropped_total",
				Help: "Webhook deliveries dropped before they were queued: the queue was full (or unreachable), or too many documents had a document.changed due."}),
			deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_webhook_deliveries_total", Help: "Webhook deliveries finished, by result: delivered (2xx), failed (every attempt failed)."}, []string{"result"}),
			attempts:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_webhook_attempts_total", Help: "Webhook delivery attempts, by result: ok (2xx) or error."}, []string{"result"}),
		},
	}
	for _, t := range EventTypes {
		d.m.events.WithLabelValues(t)
	}
	for _, r := range []string{"delivered", "failed"} {
		d.m.deliveries.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		d.m.attempts.WithLabelValues(r)
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "plait_webhook_changed_pending",
		Help: "Documents whose document.changed event this node will queue at the end of their debounce window (lost if the node dies before)."},
		func() float64 { d.mu.Lock(); defer d.mu.Unlock(); return float64(len(d.pending)) })
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{d.m.events, d.m.dropped, d.m.deliveries, d.m.attempts, pending} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	if o.Redis != nil {
		if o.NodeID == "" {
			return nil, errors.New("webhook: NodeID is required with Redis")
		}
		q, err := newRedisQueue(ctx, o.Redis, o.Prefix, o.NodeID, o.Config.QueueSize, time.Duration(o.Config.ClaimAfter))
		if err != nil {
			return nil, err
		}
		d.q, d.win = q, &redisWindow{c: o.Redis, prefix: o.Prefix}
	} else {
		d.q, d.win = newMemQueue(o.Config.QueueSize), &memWindow{open: make(map[string]time.Time)}
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	for range o.Workers {
		d.wg.Add(1)
		go d.work()
	}
	d.wg.Add(1)
	go d.background()
	return d, nil
}

// Close queues the document.changed events not yet due (a graceful stop
// does not lose them), then stops the workers: a delivery in progress is
// abandoned, not acked (in a cluster another node takes it over after
// ClaimAfter; a single node's memory queue is lost with it).
func (d *Dispatcher) Close() {
	d.mu.Lock()
	var due []string
	for doc, t := range d.pending {
		if t.Stop() {
			due = append(due, doc)
		}
		delete(d.pending, doc)
	}
	d.mu.Unlock()
	for _, doc := range due {
		d.Emit(DocumentChanged, doc, "")
	}
	d.cancel()
	d.wg.Wait()
}

// Emit queues an event of typ for every endpoint that wants it. It never
// blocks for long (bounded by a 2 s context); a failure is counted as a
// drop and logged.
func (d *Dispatcher) Emit(typ, doc, user string) {
	ev := Event{ID: newID(), Type: typ, DocumentID: doc, User: user, At: time.Now().UTC()}
	d.m.events.WithLabelValues(typ).Inc()
	ctx, cancel := context.WithTimeout(d.ctx, 2*time.Second)
	defer cancel()
	for _, e := range d.cfg.Endpoints {
		if !e.wants(typ) {
			continue
		}
		ok, err := d.q.push(ctx, delivery{Event: ev, URL: e.URL})
		if !ok || err != nil {
			d.m.dropped.Inc()
			d.log.Warn("webhook delivery dropped", "type", typ, "doc", doc, "url", e.URL, "err", err, "queue_full", err == nil)
		}
	}
}

// Changed records that document doc's changes were stored by this node:
// a document.changed event follows within ChangedEvery, unless one is
// due already (on this node or, in a cluster, on another). It never
// blocks: the hub calls it from a document's goroutine.
func (d *Dispatcher) Changed(doc string) {
	d.mu.Lock()
	_, due := d.pending[doc]
	d.mu.Unlock()
	if due || d.ctx.Err() != nil {
		return
	}
	d.enqueueLater(later{doc: doc})
}

// EmitLater is Emit without waiting: for callers that must not block
// (a document's goroutine).
func (d *Dispatcher) EmitLater(typ, doc, user string) {
	d.enqueueLater(later{typ: typ, doc: doc, user: user})
}

func (d *Dispatcher) enqueueLater(l later) {
	select {
	case d.later <- l:
	default:
		d.m.dropped.Inc()
	}
}

func (d *Dispatcher) background() {
	defer d.wg.Done()
	for {
		select {
		case l := <-d.later:
			if l.typ == "" {
				d.claimWindow(l.doc)
			} else {
				d.Emit(l.typ, l.doc, l.user)
			}
		case <-d.ctx.Done():
			return
		}
	}
}

// claimWindow schedules doc's document.changed if this node is the first
// to claim the document's window.
func (d *Dispatcher) claimWindow(doc string) {
	d.mu.Lock()
	_, due := d.pending[doc]
	d.mu.Unlock()
	if due {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 2*time.Second)
	mine, err := d.win.claim(ctx, doc, ChangedEvery)
	cancel()
	if err != nil {
		d.m.dropped.Inc()
		d.log.Warn("webhook: failed to claim a document.changed window", "doc", doc, "err", err)
		return
	}
	if !mine {
		return // another node's event, due within the window, covers it
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, due := d.pending[doc]; due || len(d.pending) >= maxPendingChanged || d.ctx.Err() != nil {
		if !due {
			d.m.dropped.Inc()
		}
		return
	}
	d.pending[doc] = time.AfterFunc(ChangedEvery, func() {
		d.mu.Lock()
		delete(d.pending, doc)
		d.mu.Unlock()
		d.Emit(DocumentChanged, doc, "")
	})
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (d *Dispatcher) work() {
	defer d.wg.Done()
	failing := time.Duration(0)
	for {
		j, err := d.q.next(d.ctx)
		if d.ctx.Err() != nil {
			return
		}
		if err != nil {
			// The queue's backend is failing: wait, growing, and retry.
			failing = min(max(2*failing, 100*time.Millisecond), 5*time.Second)
			d.log.Warn("webhook queue unavailable", "err", err, "retry_in", failing)
			select {
			case <-time.After(failing):
			case <-d.ctx.Done():
				return
			}
			continue
		}
		failing = 0
		d.deliver(j)
	}
}

// deliver tries j up to Attempts times, with backoff, then acks it
// whatever the outcome (a delivery that fails every attempt is counted and
// logged, not retried forever).
func (d *Dispatcher) deliver(j job) {
	ep, ok := d.endpoint(j.d.URL)
	if !ok {
		d.log.Warn("webhook delivery for an endpoint no longer configured: dropped", "url", j.d.URL)
		d.ackJob(j)
		return
	}
	body, err := json.Marshal(j.d.Event)
	if err != nil {
		d.ackJob(j)
		return
	}
	wait := time.Duration(d.cfg.MinBackoff)
	for attempt := 1; ; attempt++ {
		err := d.post(ep, j.d.Event, body)
		if err == nil {
			d.m.attempts.WithLabelValues("ok").Inc()
			d.m.deliveries.WithLabelValues("delivered").Inc()
			d.ackJob(j)
			return
		}
		d.m.attempts.WithLabelValues("error").Inc()
		if attempt >= d.cfg.Attempts {
			d.m.deliveries.WithLabelValues("failed").Inc()
			d.log.Error("webhook delivery failed; giving up", "url", ep.URL, "id", j.d.Event.ID, "type", j.d.Event.Type, "attempts", attempt, "err", err)
			d.ackJob(j)
			return
		}
		d.log.Warn("webhook delivery failed; will retry", "url", ep.URL, "id", j.d.Event.ID, "attempt", attempt, "err", err)
		sleep := wait/2 + mrand.N(wait/2+1) // jittered
		select {
		case <-time.After(sleep):
		case <-d.ctx.Done():
			return // not acked: another node (or this one, restarted) takes it over
		}
		wait = min(2*wait, time.Duration(d.cfg.MaxBackoff))
		ctx, cancel := context.WithTimeout(d.ctx, 2*time.Second)
		_ = d.q.touch(ctx, j) // still ours: not taken over while we retry
		cancel()
	}
}

func (d *Dispatcher) ackJob(j job) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.q.ack(ctx, j); err != nil {
		d.log.Warn("failed to ack a webhook delivery: it may be sent again", "id", j.d.Event.ID, "err", err)
	}
}

func (d *Dispatcher) endpoint(url string) (Endpoint, bool) {
	for _, e := range d.cfg.Endpoints {
		if e.URL == url {
			return e, true
		}
	}
	return Endpoint{}, false
}

// post makes one attempt: 2xx is success.
func (d *Dispatcher) post(ep Endpoint, ev Event, body []byte) error {
	ctx, cancel := context.WithTimeout(d.ctx, time.Duration(d.cfg.Timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	now := time.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "plait-webhooks/1")
	req.Header.Set(HeaderID, ev.ID)
	req.Header.Set(HeaderEvent, ev.Type)
	req.Header.Set(HeaderTimestamp, fmt.Sprint(now.Unix()))
	req.Header.Set(HeaderSignature, Sign([]byte(ep.Secret), now, body))
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
