package hub

import (
	"context"
	"errors"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"slices"
	"time"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// remoteOrigin is the origin, for the engine, of changes that come from
// other nodes (through the broker or the shared store).
var remoteOrigin = new(int)

func (d *document) brokerCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.h.opts.BrokerTimeout)
}

// follower is what a document knows of its stream on the broker: the
// position of the last publication it applied, the stored batches it has
// not published yet, and the timers of its retries and of the settle
// check. Only the owner touches it.
type follower struct {
	on          bool                // subscribed to the document's stream
	pos         StreamPosition      // the last publication applied (or known stored)
	recentTags  map[uint64]string   // offset -> tag of the last publications applied
	unpublished [][]byte            // stored batches not yet published
	unpubTrace  []trace.SpanContext // the span each of unpublished belongs to
	needCatchUp string              // a catch-up failed: its trigger, to retry
	retry       *time.Timer         // retries publications and catch-ups
	retrying    bool
	retryWait   backoff // 500 ms doubling to 30 s, jittered, while retries fail
	settle      *time.Timer
	settling    bool
}

func newFollower() follower {
	return follower{
		retry:     stoppedTimer(),
		retryWait: backoff{min: 500 * time.Millisecond, max: 30 * time.Second, jitter: true},
		settle:    stoppedTimer(),
	}
}

// pubAction is what a follower does with a publication of its stream.
type pubAction int

const (
	pubApply   pubAction = iota // the next one: apply it
	pubIgnore                   // applied already
	pubCatchUp                  // something was missed: catch up, for the reason given
)

// classify decides what a follower at f.pos, with the tags of the
// publications it applied recently, does with publication p. It is a
// pure function of those: the part of the stream logic most likely to
// hide a lost change, tested on its own (TestClassifyPublication).
func (f *follower) classify(p Publication) (pubAction, string) {
	switch {
	case p.Pos.Epoch != f.pos.Epoch:
		return pubCatchUp, "epoch"
	case p.Pos.Offset <= f.pos.Offset:
		// Already applied (or stored before we loaded), unless its tag is
		// not the one we applied at that offset: the broker lost its last
		// publications and handed their offsets out again (a failover).
		if tag, ok := f.recentTags[p.Pos.Offset]; ok && tag != p.Pos.Tag {
			return pubCatchUp, "rollback"
		}
		return pubIgnore, ""
	case p.Pos.Offset > f.pos.Offset+1:
		return pubCatchUp, "gap" // the log holds p too
	case p.Prev != f.pos.Tag:
		// The offset follows ours but not the publication we hold: the
		// broker lost its last publications and handed their offsets out
		// again (a failover). Ours may be lost with them.
		return pubCatchUp, "rollback"
	}
	return pubApply, ""
}

// recentTagsKept is how many of the last applied publications' tags a
// follower remembers, to recognise an offset handed out twice.
const recentTagsKept = 64

// advance records p as the last publication applied.
func (f *follower) advance(p Publication) {
	f.pos = p.Pos
	if f.recentTags == nil {
		f.recentTags = make(map[uint64]string, recentTagsKept)
	}
	f.recentTags[p.Pos.Offset] = p.Pos.Tag
	delete(f.recentTags, p.Pos.Offset-recentTagsKept)
}

// reset puts the follower at pos, forgetting the tags it saw (after a
// catch-up from the store).
func (f *follower) reset(pos StreamPosition) {
	f.pos = pos
	clear(f.recentTags)
}

// scheduleRetry arms the retry timer, unless it is armed.
func (f *follower) scheduleRetry() {
	if f.retrying {
		return
	}
	f.retrying = true
	f.retry.Reset(f.retryWait.next())
}

// settleDelay is how long after the last publication a document checks
// that it has seen the stream's end: pub/sub may lose the last publication
// of a burst, and no later one would reveal the gap.
const settleDelay = time.Second

// armSettle arms the settle check, unless it is armed.
func (f *follower) armSettle() {
	if f.on && !f.settling {
		f.settling = true
		f.settle.Reset(settleDelay)
	}
}

// publishPending publishes the stored batches that the other nodes have
// not been sent yet, oldest first. A failure keeps them for a retry: they
// are stored, so this node's peers are served meanwhile, and a node that
// lost its subscription catches up from the store anyway.
func (d *document) publishPending() {
	for len(d.stream.unpublished) > 0 {
		_, sp := d.h.startSpan(d.stream.unpubTrace[0], spanPublish, trace.SpanKindProducer, attrDoc.String(string(d.id)),
			attrBytes.Int(len(d.stream.unpublished[0])))
		ctx, cancel := d.brokerCtx()
		pos, err := d.h.opts.Broker.Publish(ctx, d.id, Publication{Kind: PubChanges, Origin: d.h.opts.PeerID,
			Data: d.stream.unpublished[0], Trace: formatTraceparent(sp.SpanContext())})
		cancel()
		if err == nil {
			sp.SetAttributes(attrOffset.Int64(int64(pos.Offset)))
		}
		endSpan(sp, err)
		if err != nil {
			d.h.m.BrokerErrors.WithLabelValues("publish").Inc()
			d.log.Warn("failed to publish changes; will retry", "batches", len(d.stream.unpublished), "err", err, traceAttr(sp.SpanContext()))
			d.stream.scheduleRetry()
			return
		}
		d.stream.unpublished[0] = nil
		d.stream.unpublished = d.stream.unpublished[1:]
		d.stream.unpubTrace = d.stream.unpubTrace[1:]
		d.stream.armSettle()
	}
}

// checkPosition compares the stream's position with the one applied and
// catches up if they differ.
func (d *document) checkPosition() {
	if !d.stream.on {
		return
	}
	ctx, cancel := d.brokerCtx()
	pos, err := d.h.opts.Broker.Position(ctx, d.id)
	cancel()
	if err != nil {
		d.h.m.BrokerErrors.WithLabelValues("position").Inc()
		return // a broker in trouble makes its own catch-ups (resubscribed)
	}
	if pos != d.stream.pos {
		d.catchUp("settle")
	}
}

// receivePub takes a publication from another node (or our own, echoed).
func (d *document) receivePub(p Publication, sc trace.SpanContext) {
	if p.Kind == PubEphemeral {
		msg, err := protocol.Decode(p.Data)
		if err != nil || msg.Type != protocol.TypeEphemeral || msg.DocumentID != d.id {
			d.h.m.BrokerErrors.WithLabelValues("bad_publication").Inc()
			return
		}
		d.relayEphemeral(nil, msg)
		return
	}
	if d.log.Enabled(context.Background(), slog.LevelDebug) { // no boxing on the hot path
		d.log.Debug("publication", "origin", p.Origin, "pos", p.Pos, "prev", p.Prev, "have", d.stream.pos)
	}
	d.stream.armSettle()
	switch action, reason := d.stream.classify(p); action {
	case pubApply:
		d.applyPub(p, sc)
	case pubCatchUp:
		d.catchUp(reason)
	}
}

// applyPub applies the next publication of the stream.
// parent is the span it arrived in (or, from a catch-up, the publisher's).
func (d *document) applyPub(p Publication, parent trace.SpanContext) {
	d.stream.advance(p)
	if p.Origin == d.h.opts.PeerID {
		return // our own changes: applied already
	}
	_, sp := d.h.startSpan(parent, spanApply, trace.SpanKindInternal, attrDoc.String(string(d.id)),
		attrOrigin.String(p.Origin), attrOffset.Int64(int64(p.Pos.Offset)), attrBytes.Int(len(p.Data)))
	raws, err := amsync.SplitChunks(p.Data)
	if err == nil {
		err = d.applyRemote(raws)
	}
	endSpan(sp, err)
	if err != nil {
		d.h.m.BrokerErrors.WithLabelValues("bad_publication").Inc()
		d.log.Error("dropped a publication that does not apply", "origin", p.Origin, "offset", p.Pos.Offset, "err", err, traceAttr(sp.SpanContext()))
	}
}

// applyRemote applies changes that another node accepted and stored.
func (d *document) applyRemote(raws [][]byte) error {
	applied, err := d.eng.AddChanges(remoteOrigin, raws...)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		d.h.m.ChangesRemote.Add(float64(len(applied)))
		d.exists, d.stored = true, true
		for _, ps := range d.peers {
			ps.dirty = true
		}
	}
	return nil
}

// catchUp brings the document up to date with the other nodes after a
// gap, an epoch change, a re-made subscription or a dropped delivery: from
// the broker's log if it still has every publication since d.stream.pos, else
// from the store. If the store lost changes this node holds (a Redis
// restarted empty), it stores and publishes them again.
func (d *document) catchUp(trigger string) {
	b := d.h.opts.Broker
	if b == nil || !d.stream.on {
		return
	}
	d.stream.needCatchUp = ""
	ctx, cancel := d.brokerCtx()
	pubs, err := b.History(ctx, d.id, d.stream.pos)
	cancel()
	if err == nil {
		d.log.Debug("caught up from the log", "trigger", trigger, "publications", len(pubs))
		d.h.m.BrokerRecoveries.WithLabelValues(trigger, "log").Inc()
		for _, p := range pubs {
			if p.Pos.Offset > d.stream.pos.Offset {
				d.applyPub(p, parseTraceparent(p.Trace))
			}
		}
		return
	}
	if !errors.Is(err, ErrHistoryLost) {
		d.catchUpFailed(trigger, "history", err)
		return
	}
	ctx, cancel = d.brokerCtx()
	pos, err := b.Position(ctx, d.id)
	cancel()
	if err != nil {
		d.catchUpFailed(trigger, "position", err)
		return
	}
	ctx, cancel = d.storeCtx()
	sd, err := d.h.opts.Store.LoadDoc(ctx, d.id)
	cancel()
	if err != nil && !errors.Is(err, ErrNotFound) {
		d.catchUpFailed(trigger, "load", err)
		return
	}
	raws, err := sd.Changes()
	if err == nil {
		err = d.applyRemote(raws)
	}
	if err != nil {
		d.catchUpFailed(trigger, "load", err)
		return
	}
	d.stream.reset(pos)
	d.log.Info("caught up from the store", "trigger", trigger, "changes", len(raws))
	d.h.m.BrokerRecoveries.WithLabelValues(trigger, "store").Inc()
	stored := make(map[syncengine.Hash]struct{}, len(raws))
	for _, raw := range raws {
		if c, err := amsync.ParseChange(raw); err == nil {
			stored[syncengine.Hash(c.Hash)] = struct{}{}
		}
	}
	onTheirWay := d.unsaved
	if d.writing != nil {
		onTheirWay = append(slices.Clip(d.writing.raws), d.unsaved...)
	}
	for _, raw := range onTheirWay { // on their way to the store already
		if c, err := amsync.ParseChange(raw); err == nil {
			stored[syncengine.Hash(c.Hash)] = struct{}{}
		}
	}
	var lost [][]byte
	d.eng.All(func(raw []byte) bool {
		if c, err := amsync.ParseChange(raw); err == nil {
			if _, ok := stored[syncengine.Hash(c.Hash)]; !ok {
				lost = append(lost, raw)
			}
		}
		return true
	})
	if len(lost) > 0 && d.exists {
		d.log.Warn("the store lacks changes this node holds; storing them again", "changes", len(lost), "trigger", trigger)
		d.unsaved = append(d.unsaved, lost...)
		d.stored = false // (re)create the record in flush
	}
}

func (d *document) catchUpFailed(trigger, op string, err error) {
	d.h.m.BrokerErrors.WithLabelValues(op).Inc()
	d.log.Warn("failed to catch up; will retry", "trigger", trigger, "err", err)
	d.stream.needCatchUp = trigger
	d.stream.scheduleRetry()
}

func (d *document) unsubscribe() {
	d.stream.retry.Stop()
	d.stream.settle.Stop()
	if !d.stream.on {
		return
	}
	d.stream.on = false
	ctx, cancel := d.brokerCtx()
	defer cancel()
	if err := d.h.opts.Broker.Unsubscribe(ctx, d.id); err != nil {
		d.h.m.BrokerErrors.WithLabelValues("unsubscribe").Inc()
		d.log.Warn("failed to unsubscribe", "err", err)
	}
}
