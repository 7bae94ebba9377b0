package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
)

var _ hub.Broker = (*Broker)(nil)

// Options configure a Broker. The zero value of every field is a documented
// default.
type Options struct {
	// Prefix starts every key and channel name. Default: "plait".
	Prefix string
	// HistorySize is how many change publications each document's log
	// keeps (XADD MAXLEN). A node that missed more catches up from the
	// store. Default: 1000.
	HistorySize int
	// HistoryTTL is how long a document's log and offset live after its
	// last publication. Default: 24h.
	HistoryTTL time.Duration
	// ProbeInterval is how long a subscription connection may be silent
	// before the broker pings it; a ping unanswered for another
	// ProbeInterval marks the connection dead, and it is re-made. Default: 2s.
	ProbeInterval time.Duration
	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
	// Registerer, if set, registers the broker's metrics.
	Registerer prometheus.Registerer
}

func (o *Options) fill() {
	if o.Prefix == "" {
		o.Prefix = "plait"
	}
	if o.HistorySize <= 0 {
		o.HistorySize = 1000
	}
	if o.HistoryTTL <= 0 {
		o.HistoryTTL = 24 * time.Hour
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Metrics of a Broker.
type Metrics struct {
	Reconnects     prometheus.Counter
	ProbeFailures  prometheus.Counter
	Resubscribed   prometheus.Counter
	BadPayloads    prometheus.Counter
	PublishErrors  prometheus.Counter
	Subscriptions  prometheus.Gauge
	PublishSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Reconnects:    prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_broker_reconnects_total", Help: "Subscription connections to Redis re-made after an error or a failed probe."}),
		ProbeFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_broker_probe_failures_total", Help: "Subscription connections found dead by an unanswered ping."}),
		Resubscribed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_broker_resubscribed_total", Help: "Document subscriptions re-made (each makes the document catch up)."}),
		BadPayloads:   prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_broker_bad_payloads_total", Help: "Pub/sub messages that could not be decoded and were dropped."}),
		PublishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_broker_publish_errors_total", Help: "Failed publications."}),
		Subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "plait_broker_subscriptions", Help: "Documents subscribed on Redis."}),
		PublishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "plait_broker_publish_seconds", Help: "Latency of change publications (log append + publish).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Reconnects, m.ProbeFailures, m.Resubscribed, m.BadPayloads, m.PublishErrors, m.Subscriptions, m.PublishSeconds)
	}
	return m
}

// Broker is a hub.Broker on Redis. See the package documentation.
type Broker struct {
	c       redis.UniversalClient
	cluster *redis.ClusterClient // nil for a single server
	opts    Options
	log     *slog.Logger
	m       *Metrics
	sharded bool // SPUBLISH/SSUBSCRIBE (Redis >= 7)
	pubCmd  string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	h       hub.BrokerHandler
	closed  bool
	subs    map[protocol.DocumentID]int
	shards  map[string]*shard          // by server address
	chShard map[string]*shard          // channel -> the shard it is subscribed on
	waiters map[string][]chan struct{} // channel -> Subscribe calls waiting for the confirmation
}

// shard is one subscription connection, to one Redis server.
type shard struct {
	addr   string
	client *redis.Client
	ps     *redis.PubSub
	// channel -> what its next confirmation means: true if it re-makes a
	// subscription (HandleResubscribed), false if a Subscribe waits for it.
	chans map[string]bool
	// our own unsubscriptions not yet confirmed, by channel, each with the
	// Unsubscribe call that waits for it (nil if none waits): a sunsubscribe
	// beyond these comes from the server (a cluster slot moved).
	unsubs map[string][]chan struct{}
	kick   chan struct{} // asks the loop to re-make the connection
}

// New returns a broker on client, which may be a *redis.Client or a
// *redis.ClusterClient; the broker does not close it. It checks whether
// the server has sharded pub/sub (Redis 7) and uses it if so.
func New(ctx context.Context, client redis.UniversalClient, opts Options) (*Broker, error) {
	opts.fill()
	b := &Broker{
		c:       client,
		opts:    opts,
		log:     opts.Logger.With("component", "redisbroker"),
		m:       newMetrics(opts.Registerer),
		subs:    make(map[protocol.DocumentID]int),
		shards:  make(map[string]*shard),
		chShard: make(map[string]*shard),
		waiters: make(map[string][]chan struct{}),
	}
	switch c := client.(type) {
	case *redis.ClusterClient:
		b.cluster = c
	case *redis.Client:
	default:
		return nil, fmt.Errorf("redisbroker: unsupported client %T (want *redis.Client or *redis.ClusterClient)", client)
	}
	info, err := client.Do(ctx, "COMMAND", "INFO", "SPUBLISH").Slice()
	if err != nil {
		return nil, fmt.Errorf("failed to query the Redis server: %w", err)
	}
	b.sharded = len(info) == 1 && info[0] != nil
	b.pubCmd = "PUBLISH"
	if b.sharded {
		b.pubCmd = "SPUBLISH"
	}
	if !b.sharded && b.cluster != nil {
		return nil, errors.New("redisbroker: a Redis Cluster needs Redis 7 (sharded pub/sub)")
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// Sharded reports whether the broker uses sharded pub/sub.
func (b *Broker) Sharded() bool { return b.sharded }

// Metrics returns the broker's collectors.
func (b *Broker) Metrics() *Metrics { return b.m }

func (b *Broker) key(id protocol.DocumentID, what string) string {
	return b.opts.Prefix + ":{" + string(id) + "}:" + what
}

func (b *Broker) channel(id protocol.DocumentID) string { return b.key(id, "ch") }

func (b *Broker) docOf(channel string) (protocol.DocumentID, bool) {
	s, ok := strings.CutPrefix(channel, b.opts.Prefix+":{")
	if !ok {
		return "", false
	}
	s, ok = strings.CutSuffix(s, "}:ch")
	return protocol.DocumentID(s), ok && s != ""
}

// Start sets the handler that receives deliveries.
func (b *Broker) Start(h hub.BrokerHandler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return hub.ErrBrokerClosed
	}
	if b.h != nil {
		return errors.New("redisbroker: Start called twice")
	}
	b.h = h
	return nil
}

// newTag names one publication.
func newTag() string {
	e := make([]byte, 6)
	_, _ = rand.Read(e)
	return hex.EncodeToString(e)
}

func newEpoch() string {
	e := make([]byte, 8)
	_, _ = rand.Read(e)
	return hex.EncodeToString(e)
}

// positionScript returns the stream's epoch (creating one for a stream that
// has none, so that a later loss of the key shows as a new epoch) and
// offset. KEYS: pos hash. ARGV: epoch candidate, ttl seconds.
var positionScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local off = redis.call('HGET', KEYS[1], 'o') or '0'
local tag = redis.call('HGET', KEYS[1], 't') or ''
return {epoch, off, tag}
`)

// publishScript appends a change publication to the capped log, bumps the
// offset, tags it (naming the previous tag) and publishes, in one atomic
// step. A new epoch drops a log left from an older one. KEYS: pos hash,
// log stream. ARGV: channel, origin, data, maxlen, ttl seconds, epoch
// candidate, publish command, tag.
var publishScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
end
local prev = redis.call('HGET', KEYS[1], 't') or ''
local off = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('HSET', KEYS[1], 't', ARGV[8])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], off .. '-0', 'o', ARGV[2], 'd', ARGV[3], 't', ARGV[8], 'p', prev)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call(ARGV[7], ARGV[1], 'c' .. off .. ':' .. epoch .. ':' .. ARGV[8] .. ':' .. prev .. ':' .. string.len(ARGV[2]) .. ':' .. ARGV[2] .. ARGV[3])
return {off, epoch, prev}
`)

// historyScript reads the log after an offset, or 'lost': also when the
// first entry does not follow the given tag (the stream was rolled back and
// written again). KEYS: pos hash, log stream. ARGV: epoch (” for any),
// offset, tag.
var historyScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'e')
local since = tonumber(ARGV[2])
if not epoch then
  if ARGV[1] == '' and since == 0 then return {'', {}} end
  return {'lost'}
end
if ARGV[1] ~= '' and ARGV[1] ~= epoch then return {'lost'} end
local off = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
if since > off then return {'lost'} end
if since == off then
  if since > 0 and (redis.call('HGET', KEYS[1], 't') or '') ~= ARGV[3] then return {'lost'} end
  return {epoch, {}}
end
local first = (since + 1) .. '-0'
local entries = redis.call('XRANGE', KEYS[2], first, '+')
if #entries == 0 or entries[1][1] ~= first then return {'lost'} end
if since > 0 then
  local f = entries[1][2]
  local prev = ''
  for i = 1, #f, 2 do
    if f[i] == 'p' then prev = f[i + 1] end
  end
  if prev ~= ARGV[3] then return {'lost'} end
end
return {epoch, entries}
`)

func (b *Broker) ttlSeconds() string {
	return strconv.FormatInt(int64(b.opts.HistoryTTL/time.Second)+1, 10)
}

// Subscribe subscribes to id (counted) and returns the stream's position
// once the subscription is confirmed by the server.
func (b *Broker) Subscribe(ctx context.Context, id protocol.DocumentID) (hub.StreamPosition, error) {
	if err := ctx.Err(); err != nil {
		return hub.StreamPosition{}, fmt.Errorf("failed to subscribe: %w", err)
	}
	ch := b.channel(id)
	b.mu.Lock()
	if b.closed || b.h == nil {
		b.mu.Unlock()
		return hub.StreamPosition{}, fmt.Errorf("failed to subscribe: %w", hub.ErrBrokerClosed)
	}
	b.subs[id]++
	var wait chan struct{}
	if b.subs[id] == 1 {
		b.m.Subscriptions.Inc()
		wait = make(chan struct{})
		b.waiters[ch] = append(b.waiters[ch], wait)
		if err := b.subscribeLocked(ctx, ch, false); err != nil {
			b.dropLocked(id, ch, wait)
			b.mu.Unlock()
			return hub.StreamPosition{}, fmt.Errorf("failed to subscribe: %w", err)
		}
	}
	b.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			b.mu.Lock()
			b.dropLocked(id, ch, wait)
			b.mu.Unlock()
			return hub.StreamPosition{}, fmt.Errorf("failed to subscribe: %w", ctx.Err())
		}
	}
	pos, err := b.Position(ctx, id)
	if err != nil {
		_ = b.Unsubscribe(context.WithoutCancel(ctx), id)
		return hub.StreamPosition{}, err
	}
	return pos, nil
}

// Position returns the stream position of id (creating its epoch if it has
// none yet).
func (b *Broker) Position(ctx context.Context, id protocol.DocumentID) (hub.StreamPosition, error) {
	if err := b.check(ctx); err != nil {
		return hub.StreamPosition{}, fmt.Errorf("failed to read the stream position: %w", err)
	}
	res, err := positionScript.Run(ctx, b.c, []string{b.key(id, "pos")}, newEpoch(), b.ttlSeconds()).Slice()
	if err != nil {
		return hub.StreamPosition{}, fmt.Errorf("failed to read the stream position: %w", err)
	}
	if len(res) != 3 {
		return hub.StreamPosition{}, fmt.Errorf("failed to read the stream position: bad reply %v", res)
	}
	off, err := strconv.ParseUint(fmt.Sprint(res[1]), 10, 64)
	if err != nil {
		return hub.StreamPosition{}, fmt.Errorf("failed to read the stream position: bad reply %v", res)
	}
	return hub.StreamPosition{Epoch: fmt.Sprint(res[0]), Offset: off, Tag: fmt.Sprint(res[2])}, nil
}

// dropLocked undoes a Subscribe that did not complete.
func (b *Broker) dropLocked(id protocol.DocumentID, ch string, wait chan struct{}) {
	ws := b.waiters[ch]
	for i, w := range ws {
		if w == wait {
			b.waiters[ch] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(b.waiters[ch]) == 0 {
		delete(b.waiters, ch)
	}
	b.unsubscribeLocked(id, ch)
}

// route returns the shard for channel, creating its connection and loop.
func (b *Broker) routeLocked(ctx context.Context, ch string) (*shard, error) {
	var client *redis.Client
	if b.cluster != nil {
		c, err := b.cluster.MasterForKey(ctx, ch)
		if err != nil {
			return nil, fmt.Errorf("failed to find the cluster node of %s: %w", ch, err)
		}
		client = c
	} else {
		client = b.c.(*redis.Client)
	}
	addr := client.Options().Addr
	if sh := b.shards[addr]; sh != nil {
		return sh, nil
	}
	sh := &shard{addr: addr, client: client, chans: map[string]bool{}, unsubs: map[string][]chan struct{}{}, kick: make(chan struct{}, 1)}
	sh.ps = b.newPubSub(client)
	b.shards[addr] = sh
	b.wg.Add(1)
	go b.loop(sh)
	return sh, nil
}

func (b *Broker) newPubSub(c *redis.Client) *redis.PubSub {
	if b.sharded {
		return c.SSubscribe(b.ctx)
	}
	return c.Subscribe(b.ctx)
}

// subscribeLocked sends the subscription of ch on its shard. resub tells
// whether its confirmation re-makes a subscription.
func (b *Broker) subscribeLocked(ctx context.Context, ch string, resub bool) error {
	sh, err := b.routeLocked(ctx, ch)
	if err != nil {
		return err
	}
	sh.chans[ch] = resub
	b.chShard[ch] = sh
	if b.sharded {
		err = sh.ps.SSubscribe(ctx, ch)
	} else {
		err = sh.ps.Subscribe(ctx, ch)
	}
	if err != nil {
		// Keep the channel: the shard's loop re-makes the connection and
		// every subscription on it.
		sh.chans[ch] = true
		sh.poke()
		if !resub {
			return err
		}
	}
	return nil
}

func (sh *shard) poke() {
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// Unsubscribe drops one subscription to id. When it drops the last one it
// returns once the server has confirmed it (or ctx is done): no delivery
// for id follows.
func (b *Broker) Unsubscribe(ctx context.Context, id protocol.DocumentID) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("failed to unsubscribe: %w", err)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("failed to unsubscribe: %w", hub.ErrBrokerClosed)
	}
	wait := b.unsubscribeLocked(id, b.channel(id))
	b.mu.Unlock()
	if wait == nil {
		return nil
	}
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("failed to unsubscribe: %w", ctx.Err())
	}
}

// unsubscribeLocked drops one subscription; if it was the last, it sends
// the unsubscription and returns a channel closed on its confirmation.
func (b *Broker) unsubscribeLocked(id protocol.DocumentID, ch string) chan struct{} {
	n := b.subs[id]
	if n == 0 {
		return nil
	}
	if n > 1 {
		b.subs[id] = n - 1
		return nil
	}
	delete(b.subs, id)
	b.m.Subscriptions.Dec()
	sh := b.chShard[ch]
	if sh == nil {
		return nil
	}
	delete(b.chShard, ch)
	delete(sh.chans, ch)
	wait := make(chan struct{})
	sh.unsubs[ch] = append(sh.unsubs[ch], wait)
	var err error
	if b.sharded {
		err = sh.ps.SUnsubscribe(b.ctx, ch)
	} else {
		err = sh.ps.Unsubscribe(b.ctx, ch)
	}
	if err != nil {
		sh.poke() // the re-made connection will not have it
	}
	return wait
}

// Publish publishes p on id's channel; PubChanges are logged atomically
// with the publication (one Lua script).
func (b *Broker) Publish(ctx context.Context, id protocol.DocumentID, p hub.Publication) (hub.StreamPosition, error) {
	if err := b.check(ctx); err != nil {
		return hub.StreamPosition{}, fmt.Errorf("failed to publish: %w", err)
	}
	if p.Kind == hub.PubEphemeral || p.Kind == hub.PubDeleted {
		payload := "e0::::" + strconv.Itoa(len(p.Origin)) + ":" + p.Origin + string(p.Data)
		if p.Kind == hub.PubDeleted {
			// The log and position go first: a node that catches up after
			// the notice finds the history lost and reads the (emptied) store.
			if err := b.c.Del(ctx, b.key(id, "pos"), b.key(id, "log")).Err(); err != nil {
				b.m.PublishErrors.Inc()
				return hub.StreamPosition{}, fmt.Errorf("failed to delete the stream: %w", err)
			}
			payload = "d0::::" + strconv.Itoa(len(p.Origin)) + ":" + p.Origin
		}
		var err error
		if b.sharded {
			err = b.c.SPublish(ctx, b.channel(id), payload).Err()
		} else {
			err = b.c.Publish(ctx, b.channel(id), payload).Err()
		}
		if err != nil {
			b.m.PublishErrors.Inc()
			return hub.StreamPosition{}, fmt.Errorf("failed to publish: %w", err)
		}
		return hub.StreamPosition{}, nil
	}
	if p.Kind != hub.PubChanges {
		return hub.StreamPosition{}, fmt.Errorf("failed to publish: unknown kind %q", p.Kind)
	}
	start := time.Now()
	tag := newTag()
	res, err := publishScript.Run(ctx, b.c, []string{b.key(id, "pos"), b.key(id, "log")},
		b.channel(id), joinOrigin(p.Origin, p.Trace), p.Data, b.opts.HistorySize, b.ttlSeconds(), newEpoch(), b.pubCmd, tag).Slice()
	b.m.PublishSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		b.m.PublishErrors.Inc()
		return hub.StreamPosition{}, fmt.Errorf("failed to publish: %w", err)
	}
	if len(res) != 3 {
		return hub.StreamPosition{}, fmt.Errorf("failed to publish: bad reply %v", res)
	}
	off, _ := res[0].(int64)
	return hub.StreamPosition{Epoch: fmt.Sprint(res[1]), Offset: uint64(off), Tag: tag}, nil
}

func (b *Broker) check(ctx context.Context) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return hub.ErrBrokerClosed
	}
	return ctx.Err()
}

// History returns the logged change publications of id after since.
func (b *Broker) History(ctx context.Context, id protocol.DocumentID, since hub.StreamPosition) ([]hub.Publication, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("failed to read history: %w", err)
	}
	res, err := historyScript.Run(ctx, b.c, []string{b.key(id, "pos"), b.key(id, "log")}, since.Epoch, since.Offset, since.Tag).Slice()
	if err != nil {
		return nil, fmt.Errorf("failed to read history: %w", err)
	}
	if len(res) < 1 {
		return nil, fmt.Errorf("failed to read history: bad reply %v", res)
	}
	epoch := fmt.Sprint(res[0])
	if epoch == "lost" || len(res) < 2 {
		return nil, hub.ErrHistoryLost
	}
	entries, _ := res[1].([]any)
	out := make([]hub.Publication, 0, len(entries))
	for _, e := range entries {
		p, err := decodeEntry(e, epoch)
		if err != nil {
			return nil, fmt.Errorf("failed to read history: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// joinOrigin is the origin field of a change publication: the origin, and
// after a space the publication's traceparent if it has a valid one. In
// the origin field, not a field of its own, so that nodes of an older
// version still decode the payload (they see an origin that is not
// theirs, which it is not); the field stays bounded (traceparents are 55
// bytes).
func joinOrigin(origin, trace string) string {
	if trace == "" || !hub.ValidTraceparent(trace) || strings.ContainsRune(origin, ' ') {
		return origin
	}
	return origin + " " + trace
}

// splitOrigin reads an origin field: the origin, and the traceparent if
// one valid follows it (anything else after a space is dropped).
func splitOrigin(v string) (origin, trace string) {
	origin, tp, ok := strings.Cut(v, " ")
	if !ok || !hub.ValidTraceparent(tp) {
		return origin, ""
	}
	return origin, tp
}

// decodeEntry reads one XRANGE entry: {"<offset>-0", {"o", origin, "d", data}}.
func decodeEntry(e any, epoch string) (hub.Publication, error) {
	pair, ok := e.([]any)
	if !ok || len(pair) != 2 {
		return hub.Publication{}, errors.New("malformed log entry")
	}
	idStr, _ := pair[0].(string)
	offStr, ok := strings.CutSuffix(idStr, "-0")
	if !ok {
		return hub.Publication{}, fmt.Errorf("malformed log entry id %q", idStr)
	}
	off, err := strconv.ParseUint(offStr, 10, 64)
	if err != nil {
		return hub.Publication{}, fmt.Errorf("malformed log entry id %q", idStr)
	}
	fields, _ := pair[1].([]any)
	p := hub.Publication{Kind: hub.PubChanges, Pos: hub.StreamPosition{Epoch: epoch, Offset: off}}
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "o":
			p.Origin, p.Trace = splitOrigin(v)
		case "d":
			p.Data = []byte(v)
		case "t":
			p.Pos.Tag = v
		case "p":
			p.Prev = v
		}
	}
	return p, nil
}

// Close stops the subscription loops; later calls fail.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for _, sh := range b.shards {
		_ = sh.ps.Close()
	}
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}
