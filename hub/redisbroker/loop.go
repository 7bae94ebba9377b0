package redisbroker

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
)

// loop reads one shard's subscription connection. It probes the connection
// when it has been silent for ProbeInterval (a PING, answered in the
// subscription stream) and re-makes it on an error or an unanswered probe.
func (b *Broker) loop(sh *shard) {
	defer b.wg.Done()
	var pinged time.Time // when the outstanding probe was sent; zero if none
	for b.ctx.Err() == nil {
		select {
		case <-sh.kick:
			b.remake(sh, "requested")
			pinged = time.Time{}
			continue
		default:
		}
		b.mu.Lock()
		ps := sh.ps
		b.mu.Unlock()
		msg, err := ps.ReceiveTimeout(b.ctx, b.opts.ProbeInterval)
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pinged.IsZero() {
					pinged = time.Now()
					if err := ps.Ping(b.ctx); err == nil {
						continue
					}
				}
				b.m.ProbeFailures.Inc()
				b.log.Warn("subscription connection silent: probe unanswered", "addr", sh.addr, "since", time.Since(pinged).Round(time.Millisecond))
			} else {
				b.log.Warn("subscription connection failed", "addr", sh.addr, "err", err)
			}
			b.remake(sh, "connection lost")
			pinged = time.Time{}
			continue
		}
		pinged = time.Time{}
		b.dispatch(sh, msg)
	}
}

// remake replaces the shard's connection and subscribes every channel
// again, one command per channel (a Redis Cluster refuses one command for
// channels of several slots). Each confirmation then makes the document
// catch up (HandleResubscribed). It retries with backoff until it succeeds
// or the broker closes.
func (b *Broker) remake(sh *shard, why string) {
	b.m.Reconnects.Inc()
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := b.remakeOnce(sh)
		if err == nil {
			b.log.Info("subscription connection re-made", "addr", sh.addr, "why", why, "attempt", attempt)
			return
		}
		b.log.Warn("failed to re-make the subscription connection", "addr", sh.addr, "attempt", attempt, "err", err)
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (b *Broker) remakeOnce(sh *shard) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	_ = sh.ps.Close()
	sh.ps = b.newPubSub(sh.client)
	for _, ws := range sh.unsubs { // the new connection has none of these
		for _, w := range ws {
			close(w)
		}
	}
	clear(sh.unsubs)
	if len(sh.chans) == 0 {
		return sh.ps.Ping(b.ctx) // connect now, so that a dead server shows
	}
	for ch := range sh.chans {
		sh.chans[ch] = true
		if b.cluster != nil {
			// The slot may have moved to another master.
			if nsh, err := b.routeLocked(b.ctx, ch); err == nil && nsh != sh {
				delete(sh.chans, ch)
				if err := b.subscribeLocked(b.ctx, ch, true); err != nil {
					return err
				}
				continue
			}
		}
		var err error
		if b.sharded {
			err = sh.ps.SSubscribe(b.ctx, ch)
		} else {
			err = sh.ps.Subscribe(b.ctx, ch)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *Broker) dispatch(sh *shard, msg any) {
	switch m := msg.(type) {
	case *redis.Message:
		id, ok := b.docOf(m.Channel)
		if !ok {
			b.m.BadPayloads.Inc()
			return
		}
		p, err := decodePayload(m.Payload)
		if err != nil {
			b.m.BadPayloads.Inc()
			b.log.Warn("dropped an undecodable publication", "channel", m.Channel, "err", err)
			return
		}
		b.handler().HandlePublication(id, p)
	case *redis.Subscription:
		switch m.Kind {
		case "subscribe", "ssubscribe":
			b.mu.Lock()
			ws := b.waiters[m.Channel]
			delete(b.waiters, m.Channel)
			resub := sh.chans[m.Channel]
			if _, ok := sh.chans[m.Channel]; ok {
				sh.chans[m.Channel] = false
			}
			b.mu.Unlock()
			for _, w := range ws {
				close(w)
			}
			if id, ok := b.docOf(m.Channel); ok && resub {
				b.m.Resubscribed.Inc()
				b.handler().HandleResubscribed(id)
			}
		case "unsubscribe", "sunsubscribe":
			b.mu.Lock()
			defer b.mu.Unlock()
			if ws := sh.unsubs[m.Channel]; len(ws) > 0 {
				close(ws[0])
				if len(ws) == 1 {
					delete(sh.unsubs, m.Channel)
				} else {
					sh.unsubs[m.Channel] = ws[1:]
				}
				return
			}
			// Not ours: the server dropped it (a cluster slot moved).
			if _, want := sh.chans[m.Channel]; want && !b.closed {
				b.log.Info("subscription dropped by the server; subscribing again", "channel", m.Channel)
				delete(sh.chans, m.Channel)
				delete(b.chShard, m.Channel)
				_ = b.subscribeLocked(b.ctx, m.Channel, true)
			}
		}
	case *redis.Pong:
	}
}

func (b *Broker) handler() hub.BrokerHandler {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.h
}

// decodePayload reads a pub/sub payload:
//
//	<kind><offset>:<epoch>:<tag>:<prev>:<len(origin)>:<origin><data>
//
// A change publication's origin may carry its traceparent (joinOrigin).
//
// kind is 'c' (changes), 'e' (ephemeral: offset 0, no epoch nor tags) or
// 'd' (deleted: like ephemeral, without data).
func decodePayload(s string) (hub.Publication, error) {
	if len(s) < 1 {
		return hub.Publication{}, errors.New("empty payload")
	}
	p := hub.Publication{Kind: hub.PublicationKind(s[0])}
	if p.Kind != hub.PubChanges && p.Kind != hub.PubEphemeral && p.Kind != hub.PubDeleted {
		return hub.Publication{}, fmt.Errorf("unknown kind %q", s[0])
	}
	// Five header fields, then origin and data (which may hold ':').
	f := strings.SplitN(s[1:], ":", 6)
	if len(f) != 6 {
		return hub.Publication{}, fmt.Errorf("%d of the 5 header fields", len(f)-1)
	}
	offStr, epoch, tag, prev, nStr, rest := f[0], f[1], f[2], f[3], f[4], f[5]
	off, err := strconv.ParseUint(offStr, 10, 64)
	if err != nil {
		return hub.Publication{}, fmt.Errorf("bad offset %q", offStr)
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 || n > len(rest) {
		return hub.Publication{}, fmt.Errorf("bad origin length %q", nStr)
	}
	if (p.Kind == hub.PubChanges) != (off > 0 && epoch != "" && tag != "") {
		return hub.Publication{}, errors.New("offset, epoch and tag do not match the kind")
	}
	if p.Kind != hub.PubChanges && prev != "" {
		return hub.Publication{}, errors.New("an ephemeral or deleted publication with a previous tag")
	}
	p.Origin = rest[:n]
	if p.Kind == hub.PubChanges {
		p.Origin, p.Trace = splitOrigin(p.Origin)
	}
	p.Data = []byte(rest[n:])
	if p.Kind == hub.PubDeleted && len(p.Data) > 0 {
		return hub.Publication{}, errors.New("a deleted publication with data")
	}
	if p.Kind == hub.PubChanges {
		p.Pos = hub.StreamPosition{Epoch: epoch, Offset: off, Tag: tag}
		p.Prev = prev
	}
	return p, nil
}
