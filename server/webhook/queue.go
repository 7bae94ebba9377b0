package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Event is what a delivery's body holds.
type Event struct {
	ID         string    `json:"id"` // the idempotency key (also the Plait-Webhook-Id header)
	Type       string    `json:"type"`
	DocumentID string    `json:"documentId"`
	User       string    `json:"user,omitempty"` // who did it, when the node knows
	At         time.Time `json:"at"`
}

// delivery is one event for one endpoint: what the queue holds.
type delivery struct {
	Event Event  `json:"e"`
	URL   string `json:"u"`
}

// maxDeliveryBytes bounds an encoded delivery (ids and URLs are short).
const maxDeliveryBytes = 8 << 10

// decodeDelivery reads a delivery from the queue (a Redis stream entry:
// anyone with access to Redis writes it, so it is checked).
func decodeDelivery(s string) (delivery, error) {
	if len(s) > maxDeliveryBytes {
		return delivery{}, fmt.Errorf("delivery of %d bytes (at most %d)", len(s), maxDeliveryBytes)
	}
	var d delivery
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return delivery{}, fmt.Errorf("malformed delivery: %w", err)
	}
	if d.Event.ID == "" || d.Event.Type == "" || d.URL == "" {
		return delivery{}, errors.New("malformed delivery: id, type and url are required")
	}
	return d, nil
}

// job is a delivery taken from a queue, until it is acked.
type job struct {
	d  delivery
	id string // the stream entry's id (Redis)
}

// queue holds the deliveries waiting. Contract: push never blocks past
// ctx and drops what does not fit (reported as not accepted); next blocks
// until a delivery is taken or ctx is done; a taken delivery is the
// caller's until ack (or, for Redis, until it is idle for ClaimAfter and
// another node takes it over: touch resets that clock).
type queue interface {
	push(ctx context.Context, d delivery) (accepted bool, err error)
	next(ctx context.Context) (job, error)
	ack(ctx context.Context, j job) error
	touch(ctx context.Context, j job) error
}

// memQueue is a single node's queue.
type memQueue struct{ ch chan delivery }

func newMemQueue(size int) *memQueue { return &memQueue{ch: make(chan delivery, size)} }

func (q *memQueue) push(_ context.Context, d delivery) (bool, error) {
	select {
	case q.ch <- d:
		return true, nil
	default:
		return false, nil
	}
}

func (q *memQueue) next(ctx context.Context) (job, error) {
	select {
	case d := <-q.ch:
		return job{d: d}, nil
	case <-ctx.Done():
		return job{}, ctx.Err()
	}
}

func (q *memQueue) ack(context.Context, job) error   { return nil }
func (q *memQueue) touch(context.Context, job) error { return nil }

// redisQueue is a cluster's queue: one stream, one consumer group, each
// node a consumer. XREADGROUP hands each entry to one node; XAUTOCLAIM
// hands an entry whose node went silent for claimAfter to another.
type redisQueue struct {
	c          redis.UniversalClient
	key, group string
	consumer   string
	size       int
	claimAfter time.Duration

	mu        sync.Mutex
	lastClaim time.Time
	claimed   []job
}

// pushScript adds a delivery unless the stream holds size entries.
// KEYS: stream. ARGV: size, delivery.
var pushScript = redis.NewScript(`
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'd', ARGV[2])
return 1
`)

func newRedisQueue(ctx context.Context, c redis.UniversalClient, prefix, consumer string, size int, claimAfter time.Duration) (*redisQueue, error) {
	q := &redisQueue{c: c, key: prefix + ":webhooks", group: "deliveries", consumer: consumer, size: size, claimAfter: claimAfter}
	err := c.XGroupCreateMkStream(ctx, q.key, q.group, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return nil, fmt.Errorf("failed to create the webhook consumer group: %w", err)
	}
	return q, nil
}

func (q *redisQueue) push(ctx context.Context, d delivery) (bool, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return false, err
	}
	n, err := pushScript.Run(ctx, q.c, []string{q.key}, q.size, string(b)).Int()
	if err != nil {
		return false, fmt.Errorf("failed to queue a webhook delivery: %w", err)
	}
	return n == 1, nil
}

func (q *redisQueue) next(ctx context.Context) (job, error) {
	for {
		if err := ctx.Err(); err != nil {
			return job{}, err
		}
		if j, ok, err := q.reclaimed(ctx); ok || err != nil {
			return j, err
		}
		res, err := q.c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: q.group, Consumer: q.consumer, Streams: []string{q.key, ">"}, Count: 1, Block: time.Second}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return job{}, ctx.Err()
			}
			if strings.Contains(err.Error(), "NOGROUP") { // the stream was deleted (FLUSHALL): make it again
				_ = q.c.XGroupCreateMkStream(ctx, q.key, q.group, "0").Err()
			}
			return job{}, err
		}
		for _, s := range res {
			for _, m := range s.Messages {
				if j, ok := q.decode(ctx, m); ok {
					return j, nil
				}
			}
		}
	}
}

// reclaimed returns an entry taken over from a silent node, looking for
// them at most every claimAfter/4.
func (q *redisQueue) reclaimed(ctx context.Context) (job, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.claimed) == 0 && time.Since(q.lastClaim) >= q.claimAfter/4 {
		q.lastClaim = time.Now()
		msgs, _, err := q.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: q.key, Group: q.group, Consumer: q.consumer, MinIdle: q.claimAfter, Start: "0-0", Count: 16}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return job{}, false, fmt.Errorf("failed to take over webhook deliveries: %w", err)
		}
		for _, m := range msgs {
			if j, ok := q.decode(ctx, m); ok {
				q.claimed = append(q.claimed, j)
			}
		}
	}
	if len(q.claimed) == 0 {
		return job{}, false, nil
	}
	j := q.claimed[0]
	q.claimed = q.claimed[1:]
	return j, true, nil
}

// decode reads an entry; a malformed one is acked away (it would fail
// on every node forever).
func (q *redisQueue) decode(ctx context.Context, m redis.XMessage) (job, bool) {
	s, _ := m.Values["d"].(string)
	d, err := decodeDelivery(s)
	if err != nil {
		_ = q.ack(ctx, job{id: m.ID})
		return job{}, false
	}
	return job{d: d, id: m.ID}, true
}

func (q *redisQueue) ack(ctx context.Context, j job) error {
	_, err := q.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, q.key, q.group, j.id)
		p.XDel(ctx, q.key, j.id)
		return nil
	})
	return err
}

func (q *redisQueue) touch(ctx context.Context, j job) error {
	return q.c.XClaimJustID(ctx, &redis.XClaimArgs{Stream: q.key, Group: q.group, Consumer: q.consumer, MinIdle: 0, Messages: []string{j.id}}).Err()
}

// window decides which node sends a document's next document.changed:
// the first to claim the document's window.
type window interface {
	claim(ctx context.Context, doc string, d time.Duration) (bool, error)
}

// memWindow is a single node's.
type memWindow struct {
	mu   sync.Mutex
	open map[string]time.Time // doc -> end of its window
}

func (w *memWindow) claim(_ context.Context, doc string, d time.Duration) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if end, ok := w.open[doc]; ok && now.Before(end) {
		return false, nil
	}
	if len(w.open) > 100_000 {
		for k, end := range w.open {
			if !now.Before(end) {
				delete(w.open, k)
			}
		}
	}
	w.open[doc] = now.Add(d)
	return true, nil
}

// redisWindow is a cluster's: SET NX PX.
type redisWindow struct {
	c      redis.UniversalClient
	prefix string
}

func (w *redisWindow) claim(ctx context.Context, doc string, d time.Duration) (bool, error) {
	return w.c.SetNX(ctx, w.prefix+":webhooks:changed:{"+doc+"}", "1", d).Result()
}
