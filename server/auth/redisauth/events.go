package redisauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/server/auth"
)

// Tuning of Events.
const (
	// StreamMaxLen is about how many events the stream keeps (XADD MAXLEN
	// ~, which trims whole macro nodes, so a few more): a watcher that
	// falls further behind than that, during an outage, misses the oldest
	// of the events it had not read.
	StreamMaxLen = 10000

	// readBlock is how long one XREAD waits for events: the bound on how
	// long Watch takes to notice that its ctx is done.
	readBlock = time.Second
	// readCount is the most events one XREAD returns.
	readCount = 100
	// minBackoff and maxBackoff bound the wait between attempts after a
	// Redis error; it doubles from one to the other while errors go on.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// streamField is the field of a stream entry that holds the event (JSON).
const streamField = "ev"

var _ auth.Events = (*Events)(nil)

// Events is auth.Events on a Redis stream shared by every node with the
// same prefix. Create it with NewEvents; the zero value is not usable.
type Events struct {
	c   redis.UniversalClient
	key string
	log *slog.Logger
}

// NewEvents returns Events on the stream "<prefix>:auth:events" (empty
// prefix: DefaultPrefix). log receives the errors Watch retries (nil:
// discarded). The caller keeps owning client.
func NewEvents(client redis.UniversalClient, prefix string, log *slog.Logger) *Events {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := prefix + ":auth:events"
	return &Events{c: client, key: key, log: log.With("stream", key)}
}

// Publish appends ev to the stream (XADD, trimming it to about
// StreamMaxLen entries) and returns once Redis has stored it.
func (e *Events) Publish(ctx context.Context, ev auth.Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("failed to publish %s event: %w", ev.Kind, err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("failed to encode %s event: %w", ev.Kind, err)
	}
	err = e.c.XAdd(ctx, &redis.XAddArgs{
		Stream: e.key,
		MaxLen: StreamMaxLen,
		Approx: true,
		Values: []any{streamField, data},
	}).Err()
	if err != nil {
		return fmt.Errorf("failed to publish %s event: %w", ev.Kind, err)
	}
	return nil
}

// Watch first reads the id of the stream's last entry ("0-0" for no
// stream yet): the events after it are the ones published after Watch
// started. Then it reads on from there (XREAD BLOCK, readCount at a time),
// calling fn for each event and remembering its id, so that after a Redis
// error (logged, then retried after a backoff of 100ms doubling to 2s) it
// goes on exactly where it stopped. It returns ctx.Err() within about a
// second of ctx's end. An entry that does not decode is logged and
// skipped.
func (e *Events) Watch(ctx context.Context, fn func(auth.Event)) error {
	last, err := e.start(ctx)
	if err != nil {
		return err
	}
	backoff := minBackoff
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		streams, err := e.c.XRead(ctx, &redis.XReadArgs{
			Streams: []string{e.key, last},
			Count:   readCount,
			Block:   readBlock,
		}).Result()
		if errors.Is(err, redis.Nil) { // nothing new within readBlock
			backoff = minBackoff
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.log.Warn("failed to read auth events; retrying", "after", last, "backoff", backoff, "err", err)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		for _, st := range streams {
			for _, m := range st.Messages {
				last = m.ID
				ev, err := decodeEvent(m)
				if err != nil {
					e.log.Error("skipping a malformed auth event", "id", m.ID, "err", err)
					continue
				}
				fn(ev)
			}
		}
	}
}

// start returns the id of the stream's last entry, retrying Redis errors
// with backoff until ctx is done. A concrete id, not "$": each XREAD of
// "$" would mean "after the last entry now", and events published between
// two XREADs (or while the connection was down) would be missed.
func (e *Events) start(ctx context.Context) (string, error) {
	backoff := minBackoff
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		msgs, err := e.c.XRevRangeN(ctx, e.key, "+", "-", 1).Result()
		if err == nil {
			if len(msgs) == 0 {
				return "0-0", nil
			}
			return msgs[0].ID, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		e.log.Warn("failed to read the auth event stream's last id; retrying", "backoff", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return "", ctx.Err()
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func decodeEvent(m redis.XMessage) (auth.Event, error) {
	v, ok := m.Values[streamField].(string)
	if !ok {
		return auth.Event{}, fmt.Errorf("no %q field", streamField)
	}
	var ev auth.Event
	if err := json.Unmarshal([]byte(v), &ev); err != nil {
		return auth.Event{}, err
	}
	return ev, nil
}

// sleep waits d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
