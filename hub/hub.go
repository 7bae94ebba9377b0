package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plaithub/plait/pkg/protocol"
)

// ErrHubClosed is returned by Serve once Shutdown has begun.
var ErrHubClosed = errors.New("hub is shutting down")

// Options configures a Hub. The zero value of every field is a documented
// default, filled in by New.
type Options struct {
	// Store persists documents. Required. Nodes that share a Broker must
	// share the Store too.
	Store Store

	// Broker carries new changes and ephemeral messages to the other nodes
	// that have a document open. Default: none (a single node; the node
	// wiring passes the in-memory broker).
	Broker Broker

	// Authorizer decides what each peer may do with each document.
	// Default: none, every peer may read and change every document (an
	// anonymous node; the node refuses to listen beyond loopback that way
	// unless told to).
	Authorizer Authorizer

	// BrokerTimeout bounds each broker call. Default: 5s.
	BrokerTimeout time.Duration

	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger

	// Metrics records counters and gauges. Default: metrics that are not
	// registered anywhere (so tests need no registry).
	Metrics *Metrics

	// PeerID is the senderId the hub uses on the wire. Default:
	// "plait-" plus a random suffix (one per process).
	PeerID string

	// JoinTimeout bounds how long a new connection may take to send its
	// join message. Default: 10s.
	JoinTimeout time.Duration

	// IdleDocTimeout is how long a document with no connected peers stays
	// in memory before it is evicted. Default: 30s.
	IdleDocTimeout time.Duration

	// DocQueueLen bounds each document's inbox (messages). A session whose
	// document inbox is full waits (backpressure on that client's reads).
	// Default: 64.
	DocQueueLen int

	// MinCompactBytes is the size of stored incremental changes below which
	// a document is never compacted; above it, a document is compacted when
	// its incremental changes outgrow its snapshot. Default: 64 KiB.
	MinCompactBytes int

	// StoreTimeout bounds each store call. Default: 10s.
	StoreTimeout time.Duration

	// MessageRate is how many messages per second one connection may send
	// after join, sustained (a token bucket refilled at this rate). A
	// connection that exceeds it gets an error message and is closed with
	// protocol.CloseRateLimited. Default: 500; negative: no limit.
	MessageRate float64

	// MessageBurst is the token bucket's size: how many messages a
	// connection may send at once above MessageRate, for example when it
	// (re)opens many documents (about two messages each). Default:
	// 20*MessageRate (10,000 with the default rate), at least 1; ignored
	// without a MessageRate limit.
	MessageBurst int

	// OnSecurityEvent, if set, is told of each denial, refused change,
	// rate limit and malformed input, for an audit log. The hub calls it
	// synchronously from session and document goroutines: it must be
	// quick, safe for concurrent use, and must not call the hub.
	OnSecurityEvent func(SecurityEvent)

	// AfterGC, if set, runs after the collection that follows evictions; a
	// node uses it to hand freed C memory back to the operating system.
	AfterGC func()
}

func (o *Options) fill() error {
	if o.Store == nil {
		return errors.New("hub: Options.Store is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.PeerID == "" {
		o.PeerID = "plait-" + randomID(8)
	}
	if o.JoinTimeout <= 0 {
		o.JoinTimeout = 10 * time.Second
	}
	if o.IdleDocTimeout <= 0 {
		o.IdleDocTimeout = 30 * time.Second
	}
	if o.DocQueueLen <= 0 {
		o.DocQueueLen = 64
	}
	if o.MinCompactBytes <= 0 {
		o.MinCompactBytes = 64 << 10
	}
	if o.StoreTimeout <= 0 {
		o.StoreTimeout = 10 * time.Second
	}
	if o.BrokerTimeout <= 0 {
		o.BrokerTimeout = 5 * time.Second
	}
	if o.MessageRate == 0 {
		o.MessageRate = 500
	}
	if o.MessageRate > 0 && o.MessageBurst <= 0 {
		o.MessageBurst = max(int(min(20*o.MessageRate, 1<<30)), 1)
	}
	return nil
}

// Hub holds the sessions of connected peers and the open documents. See the
// package documentation for its concurrency contract.
type Hub struct {
	opts      Options
	log       *slog.Logger
	m         *Metrics
	storageID string

	ctx    context.Context // cancelled by Shutdown: stops document owners
	cancel context.CancelFunc

	mu       sync.Mutex
	closing  bool
	sessions map[string]*session // by peer id
	conns    map[*session]struct{}
	docs     map[protocol.DocumentID]*document

	sessWG    sync.WaitGroup // running Serve calls
	docWG     sync.WaitGroup // running document owners
	nextID    atomic.Uint64
	gcPending atomic.Bool
}

// New returns a Hub. It reads the store's StorageID, so it takes a context.
func New(ctx context.Context, opts Options) (*Hub, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	sid, err := opts.Store.StorageID(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read storage id: %w", err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		opts:      opts,
		log:       opts.Logger,
		m:         opts.Metrics,
		storageID: sid,
		ctx:       hctx,
		cancel:    cancel,
		sessions:  make(map[string]*session),
		conns:     make(map[*session]struct{}),
		docs:      make(map[protocol.DocumentID]*document),
	}
	if opts.Broker != nil {
		if err := opts.Broker.Start(h); err != nil {
			cancel()
			return nil, fmt.Errorf("failed to start the broker: %w", err)
		}
	}
	return h, nil
}

// HandlePublication implements BrokerHandler: it hands p to the owner of
// the open document id without blocking. If the owner's inbox is full the
// publication is dropped and the document marked lagged: its owner catches
// up from the broker's log once it has drained the inbox.
func (h *Hub) HandlePublication(id protocol.DocumentID, p Publication) {
	if p.Kind == PubEphemeral && p.Origin == h.opts.PeerID {
		return // our own, already relayed to our peers
	}
	h.notify(id, docMsg{kind: kindRemote, pub: &p})
}

// HandleResubscribed implements BrokerHandler: the document catches up.
func (h *Hub) HandleResubscribed(id protocol.DocumentID) {
	h.notify(id, docMsg{kind: kindCatchUp})
}

// Reauthorize makes the open document id ask the Authorizer again about
// each of its peers, so that a permission change takes effect on open
// sessions: a peer that lost its role is told the document is unavailable
// and no longer synced; a peer that became a viewer has its next changes
// refused. Whoever changes a permission calls it; a document not open on
// this node needs nothing. It returns once the document's owner has the
// request, or when ctx is done.
func (h *Hub) Reauthorize(ctx context.Context, id protocol.DocumentID) error {
	d := h.document(id, false)
	if d == nil {
		return nil
	}
	return d.post(ctx, docMsg{kind: kindReauthorize})
}

func (h *Hub) notify(id protocol.DocumentID, m docMsg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.docs[id]
	if d == nil {
		return // not open here (any more): nothing to catch up
	}
	select {
	case d.inbox <- m:
	default:
		if m.kind != kindRemote || m.pub.Kind == PubChanges {
			d.lagged.Store(true)
		}
		h.m.BrokerLagged.Inc()
	}
}

// PeerID returns the senderId the hub uses on the wire.
func (h *Hub) PeerID() string { return h.opts.PeerID }

// StorageID returns the storageId the hub announces to its peers.
func (h *Hub) StorageID() string { return h.storageID }

// OpenDocuments returns the number of documents currently in memory.
func (h *Hub) OpenDocuments() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.docs)
}

// Shutdown closes every session with protocol.CloseServiceRestart (clients
// reconnect elsewhere or later), then waits until every document owner has
// written its sync states and stopped, or ctx is done. Serve calls that
// start after Shutdown return ErrHubClosed. Every change a client was told
// about is already durable: the hub never advertises heads it has not stored.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	conns := make([]*session, 0, len(h.conns))
	for s := range h.conns {
		conns = append(conns, s)
	}
	h.mu.Unlock()
	for _, s := range conns {
		s.conn.Close(protocol.CloseServiceRestart, "server shutting down")
	}
	if err := waitGroup(ctx, &h.sessWG); err != nil {
		return fmt.Errorf("failed to drain sessions: %w", err)
	}
	h.cancel()
	if err := waitGroup(ctx, &h.docWG); err != nil {
		return fmt.Errorf("failed to stop documents: %w", err)
	}
	return nil
}

func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// register makes s the session of its peer id, closing an older session
// with the same id (a reconnect that raced the old socket's close).
func (h *Hub) register(s *session) error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrHubClosed
	}
	old := h.sessions[s.peerID]
	h.sessions[s.peerID] = s
	h.mu.Unlock()
	if old != nil {
		old.log.Info("replaced by a newer connection with the same peer id")
		old.conn.Close(protocol.CloseReplaced, "replaced by a newer connection with the same peer id")
	}
	return nil
}

func (h *Hub) unregister(s *session) {
	h.mu.Lock()
	if h.sessions[s.peerID] == s {
		delete(h.sessions, s.peerID)
	}
	delete(h.conns, s)
	h.mu.Unlock()
}

// document returns the owner of id, starting it if needed. If open is false
// and the document is not in memory it returns nil. The caller must call
// release once it has handed its message over (see document.exit).
func (h *Hub) document(id protocol.DocumentID, open bool) *document {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.docs[id]
	if d == nil {
		if !open || h.closing {
			return nil
		}
		d = newDocument(h, id)
		h.docs[id] = d
		h.m.OpenDocuments.Inc()
		h.docWG.Add(1)
		go d.run()
	}
	d.pending.Add(1)
	return d
}

// tryRemove removes d from the open documents if nobody is about to send it
// a message. It reports whether d may exit.
func (h *Hub) tryRemove(d *document) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d.pending.Load() != 0 || len(d.inbox) != 0 {
		return false
	}
	if h.docs[d.id] == d {
		delete(h.docs, d.id)
		h.m.OpenDocuments.Dec()
	}
	return true
}
