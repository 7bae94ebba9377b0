package hub

import (
	"context"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
)

// ConnInfo describes a connection for logs.
type ConnInfo struct {
	// RemoteAddr is the client's address as the transport saw it.
	RemoteAddr string
	// RequestID identifies the HTTP request that opened the connection.
	RequestID string
	// Trace is the span of that HTTP request, if it was traced: the
	// session's log lines carry its trace id and each message's span
	// links to it.
	Trace trace.SpanContext
	// Identity is who the transport authenticated; the zero value is an
	// anonymous peer.
	Identity Identity
	// UserLimit, if set, is the user's message rate limit, shared by all
	// of the user's connections on this node: a connection that finds it
	// exhausted is closed as rate limited, like one over its own limit.
	UserLimit *UserLimiter
}

// maxEphemeralSessions bounds the per-connection memory of ephemeral
// de-duplication: the most recent sessions are remembered.
const maxEphemeralSessions = 64

// maxSubscriptions bounds the storage ids one connection may subscribe to
// with remote-subscription-change.
const maxSubscriptions = 1024

// session is one joined peer on one connection. Its fields without a lock
// are owned by the Serve goroutine (the read loop).
type session struct {
	h         *Hub
	conn      Conn
	log       *slog.Logger
	peerID    string
	storageID string // empty for peers without storage
	ephemeral bool   // the peer keeps no storage: its sync state is not persisted
	identity  Identity
	info      ConnInfo
	id        uint64 // the "conn" of logs

	ephSeen map[string]uint64 // ephemeral sessionId -> highest count
	ephLRU  []string
	limit   *rate.Limiter // messages per second; nil: no limit
	budget  *byteBudget   // bytes of this connection's messages not yet handled

	closed     atomic.Bool  // set once the connection is failed or its read loop ended
	stateBytes atomic.Int64 // bytes of peer-supplied sync state its documents keep

	mu      sync.Mutex
	watched map[string]struct{}              // storage ids whose heads this peer wants
	docs    map[protocol.DocumentID]struct{} // documents this peer has open: added by the read loop, removed by a document that does not keep it
}

// Serve runs one connection: it waits for the join message, answers with
// peer, then reads and dispatches messages until the connection ends or ctx
// is done. It closes conn before returning. Serve is safe to call from many
// goroutines, one per connection.
func (h *Hub) Serve(ctx context.Context, conn Conn, info ConnInfo) error {
	cid := h.nextID.Add(1)
	log := h.log.With("conn", cid, "remote", info.RemoteAddr)
	if info.RequestID != "" {
		log = log.With("request_id", info.RequestID)
	}
	if info.Trace.HasTraceID() {
		log = log.With("trace_id", info.Trace.TraceID().String())
	}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		conn.Close(protocol.CloseServiceRestart, "server shutting down")
		return ErrHubClosed
	}
	h.sessWG.Add(1)
	h.mu.Unlock()
	defer h.sessWG.Done()
	defer conn.Close(protocol.CloseNormal, "")
	h.m.Connections.Inc()
	h.m.ConnectionsTotal.Inc()
	defer h.m.Connections.Dec()

	s, err := h.join(ctx, conn, log, info, cid)
	if err != nil {
		log.Debug("connection closed before join", "err", err)
		return err
	}
	defer h.unregister(s)
	err = s.readLoop(ctx)
	s.closed.Store(true)
	s.leaveAll()
	s.log.Debug("connection closed", "err", err)
	return err
}

func (h *Hub) join(ctx context.Context, conn Conn, log *slog.Logger, info ConnInfo, cid uint64) (*session, error) {
	rejectWith := func(code protocol.CloseCode, reason string, err error) {
		h.reject(conn, log, code, reason)
		h.report(SecurityEvent{Kind: kindOfClose(code), Conn: info, ConnID: cid, Code: code, Err: err})
	}
	jctx, cancel := context.WithTimeout(ctx, h.opts.JoinTimeout)
	frame, err := conn.Read(jctx)
	cancel()
	if err != nil {
		if jctx.Err() != nil && ctx.Err() == nil {
			rejectWith(protocol.CloseJoinTimeout, "no join message within "+h.opts.JoinTimeout.String(), err)
		} else {
			conn.Close(protocol.CloseNormal, "")
		}
		return nil, err
	}
	h.m.countIn("", len(frame))
	msg, err := protocol.Decode(frame)
	if err != nil {
		rejectWith(protocol.CloseMalformedMessage, err.Error(), err)
		return nil, err
	}
	h.m.countIn(msg.Type, 0)
	if msg.Type != protocol.TypeJoin {
		err := fmt.Errorf("expected join, got %q", msg.Type)
		rejectWith(protocol.CloseMalformedMessage, err.Error(), err)
		return nil, err
	}
	// A join without versions predates version negotiation: it means "1",
	// as the official server takes it.
	if len(msg.SupportedProtocolVersions) > 0 && !slices.Contains(msg.SupportedProtocolVersions, protocol.ProtocolVersion) {
		err := fmt.Errorf("unsupported protocol versions %q: this server speaks %q", msg.SupportedProtocolVersions, protocol.ProtocolVersion)
		rejectWith(protocol.CloseUnsupportedVersion, err.Error(), err)
		return nil, err
	}
	s := &session{
		h:        h,
		conn:     conn,
		peerID:   msg.SenderID,
		identity: info.Identity,
		info:     info,
		id:       cid,
		docs:     make(map[protocol.DocumentID]struct{}),
		ephSeen:  make(map[string]uint64),
		watched:  make(map[string]struct{}),
		budget:   newByteBudget(h.opts.MaxConnBytes),
	}
	if h.opts.MessageRate > 0 {
		s.limit = rate.NewLimiter(rate.Limit(h.opts.MessageRate), h.opts.MessageBurst)
	}
	s.ephemeral = true
	if md := msg.PeerMetadata; md != nil {
		s.storageID = md.StorageID
		s.ephemeral = md.IsEphemeral || md.StorageID == ""
	}
	s.log = log.With("peer", s.peerID)
	h.mu.Lock()
	h.conns[s] = struct{}{}
	h.mu.Unlock()
	if err := h.register(s); err != nil {
		h.unregister(s)
		conn.Close(protocol.CloseServiceRestart, "server shutting down")
		return nil, err
	}
	s.send(&protocol.Message{
		Type:                    protocol.TypePeer,
		SenderID:                h.opts.PeerID,
		TargetID:                s.peerID,
		PeerMetadata:            &protocol.PeerMetadata{StorageID: h.storageID, IsEphemeral: false},
		SelectedProtocolVersion: protocol.ProtocolVersion,
	})
	s.log.Debug("peer joined", "storage_id", s.storageID, "ephemeral", s.ephemeral)
	return s, nil
}

// reject sends an error message and closes conn; used before a session exists.
func (h *Hub) reject(conn Conn, log *slog.Logger, code protocol.CloseCode, reason string) {
	log.Warn("rejecting connection", "code", code, "reason", reason)
	h.m.Disconnects.WithLabelValues(code.String()).Inc()
	if frame, err := protocol.Encode(&protocol.Message{Type: protocol.TypeError, SenderID: h.opts.PeerID, ErrorMessage: reason}); err == nil {
		h.m.countOut(protocol.TypeError, len(frame))
		_ = conn.Send(frame)
	}
	conn.Close(code, closeReason(reason))
}

// closeReason trims a reason to fit a WebSocket close frame (123 bytes).
func closeReason(s string) string {
	if len(s) <= 120 {
		return s
	}
	return s[:117] + "..."
}

func (s *session) readLoop(ctx context.Context) error {
	for {
		frame, err := s.conn.Read(ctx)
		if err != nil {
			return err
		}
		at := time.Now()
		s.h.m.countIn("", len(frame))
		if s.limit != nil && !s.limit.Allow() {
			s.h.m.LimitHits.WithLabelValues(LimitMessages).Inc()
			err := fmt.Errorf("%w: more than %g messages/s (burst %d) on this connection", errRateLimited, s.h.opts.MessageRate, s.h.opts.MessageBurst)
			s.fail(protocol.CloseRateLimited, err)
			return err
		}
		if u := s.info.UserLimit; u != nil && !u.Allow() {
			s.h.m.LimitHits.WithLabelValues(LimitUserMessages).Inc()
			err := fmt.Errorf("%w: more than %g messages/s (burst %d) from this user", errRateLimited, float64(u.Limit()), u.Burst())
			s.fail(protocol.CloseRateLimited, err)
			return err
		}
		msg, err := protocol.Decode(frame)
		if err != nil {
			s.fail(protocol.CloseMalformedMessage, err)
			return err
		}
		s.h.m.countIn(msg.Type, 0)
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("received", "type", msg.Type, "doc", string(msg.DocumentID), "bytes", len(frame), "sync", syncSummary(msg))
		}
		if err := s.dispatch(ctx, msg, at); err != nil {
			return err
		}
	}
}

// errProtocol marks a message that is well-formed but not allowed here.
var errProtocol = errors.New("protocol violation")

// errRateLimited marks a connection that sent messages too fast.
var errRateLimited = errors.New("rate limited")

// dispatch handles msg, read off the connection at at.
func (s *session) dispatch(ctx context.Context, msg *protocol.Message, at time.Time) error {
	if msg.SenderID != s.peerID {
		// automerge-repo clients re-send relayed ephemeral messages to all
		// their peers, keeping the original senderId: such an echo must not
		// be relayed again (it would loop). Like the official server, drop
		// every message whose senderId is not the joined peer, and count it.
		s.h.m.Dropped.WithLabelValues("foreign_sender").Inc()
		s.log.Debug("dropped a message with a foreign senderId", "type", msg.Type, "sender", msg.SenderID)
		return nil
	}
	switch msg.Type {
	case protocol.TypeSync, protocol.TypeRequest:
		if max := s.h.opts.MaxDocsPerConn; max > 0 && !s.hasDoc(msg.DocumentID) && s.docCount() >= max {
			s.refuseDoc(msg.DocumentID, LimitDocsPerConn, fmt.Errorf("%w: this connection has %d documents open (at most %d); document %s refused", ErrLimitExceeded, max, max, msg.DocumentID))
			return nil
		}
		cost := len(msg.Data)
		if err := s.reserve(ctx, cost); err != nil {
			return err
		}
		d, err := s.h.openDocument(msg.DocumentID)
		if err != nil {
			s.unreserve(cost)
		}
		if errors.Is(err, errTooManyDocs) {
			s.refuseDoc(msg.DocumentID, LimitOpenDocs, fmt.Errorf("%w: document %s refused", err, msg.DocumentID))
			return nil
		}
		if err != nil {
			return err
		}
		s.addDoc(msg.DocumentID)
		_, sp := s.h.startSpan(trace.SpanContext{}, spanMessage, trace.SpanKindServer, attrDoc.String(string(msg.DocumentID)),
			attrMsgType.String(msg.Type), attrConn.Int64(int64(s.id)), attrRequestID.String(s.info.RequestID), attrBytes.Int(len(msg.Data)))
		if s.info.Trace.IsValid() {
			sp.AddLink(trace.Link{SpanContext: s.info.Trace}) // the upgrade that opened the connection
		}
		err = s.post(ctx, d, docMsg{kind: kindSync, s: s, msg: msg, cost: cost, trace: sp.SpanContext(), at: at})
		endSpan(sp, err)
		return err
	case protocol.TypeEphemeral:
		if max := s.h.opts.MaxEphemeralBytes; len(msg.Data) > max {
			s.h.m.LimitHits.WithLabelValues(LimitEphemeralBytes).Inc()
			err := fmt.Errorf("%w: ephemeral message of %d bytes dropped (at most %d)", ErrLimitExceeded, len(msg.Data), max)
			s.report(SecurityEvent{Kind: EventLimitExceeded, Doc: msg.DocumentID, Err: err})
			s.sendError(err)
			return nil
		}
		if !s.freshEphemeral(msg.SessionID, msg.Count) {
			s.h.m.Dropped.WithLabelValues("ephemeral_duplicate").Inc()
			return nil
		}
		if !s.hasDoc(msg.DocumentID) {
			s.h.m.Dropped.WithLabelValues("ephemeral_not_a_peer").Inc()
			return nil // only peers of a document may speak to its other peers
		}
		cost := len(msg.Data)
		if err := s.reserve(ctx, cost); err != nil {
			return err
		}
		d := s.h.document(msg.DocumentID, false)
		if d == nil {
			s.unreserve(cost)
			s.h.m.Dropped.WithLabelValues("ephemeral_no_peers").Inc()
			return nil
		}
		return s.post(ctx, d, docMsg{kind: kindEphemeral, s: s, msg: msg, cost: cost})
	case protocol.TypeRemoteSubscriptionChange:
		s.mu.Lock()
		for _, id := range msg.Remove {
			delete(s.watched, id)
		}
		for _, id := range msg.Add {
			s.watched[id] = struct{}{}
		}
		n := len(s.watched)
		s.mu.Unlock()
		if n > maxSubscriptions {
			err := fmt.Errorf("%w: more than %d storage ids subscribed", errProtocol, maxSubscriptions)
			s.fail(protocol.CloseMalformedMessage, err)
			return err
		}
		if len(msg.Add) == 0 {
			return nil
		}
		// Tell the peer what is known of the newly subscribed storages for
		// the documents it has open.
		for _, id := range s.openDocs() {
			if d := s.h.document(id, false); d != nil {
				if err := s.post(ctx, d, docMsg{kind: kindWatch, s: s, storageIDs: msg.Add}); err != nil {
					return err
				}
			}
		}
		return nil
	case protocol.TypeRemoteHeadsChanged:
		if !s.hasDoc(msg.DocumentID) {
			return nil // gossip about a document this peer does not sync with us
		}
		cost := 0 // what the decoded message holds
		for sid, ha := range msg.NewHeads {
			cost += len(sid) + 16
			for _, h := range ha.Heads {
				cost += len(h) + 16
			}
		}
		if err := s.reserve(ctx, cost); err != nil {
			return err
		}
		if d := s.h.document(msg.DocumentID, false); d != nil {
			return s.post(ctx, d, docMsg{kind: kindRemoteHeads, s: s, msg: msg, cost: cost})
		}
		s.unreserve(cost)
		return nil
	case protocol.TypeDocUnavailable:
		// The peer lacks a document we offered; the hub never asks peers for
		// documents, so there is nothing to do.
		return nil
	case protocol.TypeLeave:
		s.conn.Close(protocol.CloseNormal, "peer left")
		return nil
	case protocol.TypeError:
		s.log.Debug("peer reported an error", "message", msg.ErrorMessage)
		return nil
	default: // join, peer: only valid as the first message / from a server
		err := fmt.Errorf("%w: unexpected %q message after join", errProtocol, msg.Type)
		s.fail(protocol.CloseMalformedMessage, err)
		return err
	}
}

// freshEphemeral reports whether an ephemeral message is new, remembering
// the highest count per ephemeral session (bounded).
func (s *session) freshEphemeral(sessionID string, count uint64) bool {
	last, ok := s.ephSeen[sessionID]
	if ok && count <= last {
		return false
	}
	if !ok {
		if len(s.ephLRU) >= maxEphemeralSessions {
			delete(s.ephSeen, s.ephLRU[0])
			s.ephLRU = s.ephLRU[1:]
		}
		s.ephLRU = append(s.ephLRU, sessionID)
	}
	s.ephSeen[sessionID] = count
	return true
}

// watches reports whether the peer asked for the heads of storageID
// (remote-subscription-change).
func (s *session) watches(storageID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.watched[storageID]
	return ok
}

// send encodes and queues m. Errors are logged; a slow consumer is closed
// by the transport.
func (s *session) send(m *protocol.Message) {
	frame, err := protocol.Encode(m)
	if err != nil {
		s.log.Error("failed to encode message", "type", m.Type, "err", err)
		return
	}
	if !s.sendFrame(m.Type, frame) {
		return
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("sent", "type", m.Type, "doc", string(m.DocumentID), "bytes", len(frame), "sync", syncSummary(m))
	}
}

// trySend queues m if the connection's write queue has room for it, for a
// message that can wait (a sync message the document keeps until then).
// It reports false only if the queue is too full: a message that cannot
// be encoded, or a closed connection, counts as sent (dropped).
func (s *session) trySend(m *protocol.Message) bool {
	ts, ok := s.conn.(interface{ TrySend([]byte) (bool, error) })
	if !ok {
		s.send(m)
		return true
	}
	frame, err := protocol.Encode(m)
	if err != nil {
		s.log.Error("failed to encode message", "type", m.Type, "err", err)
		return true
	}
	queued, err := ts.TrySend(frame)
	if err != nil {
		return true
	}
	if queued {
		s.h.m.countOut(m.Type, len(frame))
	}
	return queued
}

// sendFrame queues an encoded message of type typ; it reports whether the
// transport took it.
func (s *session) sendFrame(typ string, frame []byte) bool {
	if err := s.conn.Send(frame); err != nil {
		if errors.Is(err, ErrSlowConsumer) {
			s.h.m.Disconnects.WithLabelValues(protocol.CloseSlowConsumer.String()).Inc()
			s.log.Warn("closed slow consumer")
		}
		return false
	}
	s.h.m.countOut(typ, len(frame))
	return true
}

// fail tells the peer what went wrong and closes its connection.
func (s *session) fail(code protocol.CloseCode, err error) {
	if s.closed.Swap(true) {
		return
	}
	s.log.Warn("closing connection", "code", code, "err", err)
	s.h.m.Disconnects.WithLabelValues(code.String()).Inc()
	s.report(SecurityEvent{Kind: kindOfClose(code), Code: code, Err: err})
	s.send(&protocol.Message{Type: protocol.TypeError, SenderID: s.h.opts.PeerID, TargetID: s.peerID, ErrorMessage: err.Error()})
	s.conn.Close(code, closeReason(err.Error()))
}

// leaveAll detaches the session from every document it touched, so their
// owners persist its sync state and stop syncing with it.
func (s *session) leaveAll() {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.opts.StoreTimeout)
	defer cancel()
	for _, id := range s.openDocs() {
		s.h.dropWaiter(id, s)
		if d := s.h.document(id, false); d != nil {
			_ = d.post(ctx, docMsg{kind: kindLeave, s: s})
		}
	}
}

// reserve takes n bytes of the connection's and the node's budgets of
// messages in flight, before the message is handed to a document: a
// connection that sends faster than its documents handle waits (its
// socket stops being read), in turn with the node's other connections. A
// wait ends when the connection closes; one longer than
// Options.BudgetWait closes it with 1013 (try again later), so that a
// stalled reader never runs into the ping timeout instead.
func (s *session) reserve(ctx context.Context, n int) error {
	if n == 0 {
		return nil
	}
	if s.budget.tryAcquire(n) {
		if s.h.inflight.tryAcquire(n) {
			return nil
		}
		s.budget.release(n)
	}
	wctx, cancel := context.WithTimeout(ctx, s.h.opts.BudgetWait)
	defer cancel()
	if dc, ok := s.conn.(interface{ Done() <-chan struct{} }); ok {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-dc.Done():
				cancel()
			case <-stop:
			}
		}()
	}
	err := s.budget.acquire(wctx, n)
	if err == nil {
		if err = s.h.inflight.acquire(wctx, n); err != nil {
			s.budget.release(n)
		}
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(wctx.Err(), context.DeadlineExceeded):
		s.h.m.LimitHits.WithLabelValues(LimitBudgetWait).Inc()
		err := fmt.Errorf("%w: a message of %d bytes waited more than %s for the node to handle earlier ones; reconnect later", ErrLimitExceeded, n, s.h.opts.BudgetWait)
		s.fail(protocol.CloseTryAgainLater, err)
		return err
	default:
		return ErrConnClosed
	}
}

// unreserve returns bytes taken by reserve for a message not handed on.
func (s *session) unreserve(n int) {
	if n > 0 {
		s.budget.release(n)
		s.h.inflight.release(n)
	}
}

// post hands m to d (its cost already reserved) and ends the hold that
// Hub.document or Hub.openDocument took; a message not handed on gives
// its bytes back.
func (s *session) post(ctx context.Context, d *document, m docMsg) error {
	if err := d.post(ctx, m); err != nil {
		m.done()
		return err
	}
	return nil
}

// hasDoc reports whether the peer has document id open.
func (s *session) hasDoc(id protocol.DocumentID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.docs[id]
	return ok
}

func (s *session) docCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.docs)
}

func (s *session) addDoc(id protocol.DocumentID) {
	s.mu.Lock()
	s.docs[id] = struct{}{}
	s.mu.Unlock()
}

// dropDoc forgets document id: a document that does not exist does not
// keep the peer that asked for it, nor count against its bound.
func (s *session) dropDoc(id protocol.DocumentID) {
	s.mu.Lock()
	delete(s.docs, id)
	s.mu.Unlock()
}

func (s *session) openDocs() []protocol.DocumentID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]protocol.DocumentID, 0, len(s.docs))
	for id := range s.docs {
		ids = append(ids, id)
	}
	return ids
}

// refuseDoc answers a sync or request that a bound refuses: doc-unavailable
// (what the automerge-repo client understands) and an error message that
// says which bound. The connection stays open.
func (s *session) refuseDoc(id protocol.DocumentID, limit string, err error) {
	s.h.m.LimitHits.WithLabelValues(limit).Inc()
	kind := EventLimitExceeded
	if limit == LimitOpenDocs {
		kind = EventCapacity // the node is full: not this peer's fault
	}
	s.report(SecurityEvent{Kind: kind, Doc: id, Err: err})
	s.send(&protocol.Message{Type: protocol.TypeDocUnavailable, SenderID: s.h.opts.PeerID, TargetID: s.peerID, DocumentID: id})
	s.sendError(err)
}

// sendError tells the peer about a refused message without closing.
func (s *session) sendError(err error) {
	s.send(&protocol.Message{Type: protocol.TypeError, SenderID: s.h.opts.PeerID, TargetID: s.peerID, ErrorMessage: err.Error()})
}

// syncSummary describes a sync message for debug logs.
func syncSummary(m *protocol.Message) string {
	if m.Type != protocol.TypeSync && m.Type != protocol.TypeRequest {
		return ""
	}
	sm, err := amsync.ParseMessageLimits(m.Data, syncBounds)
	if err != nil {
		return "unparsable: " + err.Error()
	}
	short := func(hs []amsync.Hash) string {
		var b strings.Builder
		for _, h := range hs {
			b.WriteString(h.String()[:6] + " ")
		}
		return b.String()
	}
	var deps strings.Builder
	for _, c := range sm.Changes {
		if ch, err := amsync.ParseChangeLimit(c, 1<<20); err == nil { // no inflating bombs for a debug line
			fmt.Fprintf(&deps, "%s<-[%s] ", ch.Hash.String()[:6], short(ch.Deps))
		}
	}
	return fmt.Sprintf("heads=[%s] need=[%s] have=%d changes=%d %s", short(sm.Heads), short(sm.Need), len(sm.Have), len(sm.Changes), deps.String())
}
