package hub

import (
	"context"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plaithub/plait/pkg/protocol"
)

// ErrHubClosed is returned by Serve once Shutdown has begun.
var ErrHubClosed = errors.New("hub is shutting down")

// ErrLimitExceeded is wrapped by the errors a peer is told about when it
// hits a resource bound of Options (a document's size, documents open,
// ephemeral size, sync state); the error message says which.
var ErrLimitExceeded = errors.New("limit exceeded")

// errTooManyDocs refuses opening a document past Options.MaxOpenDocs.
var errTooManyDocs = fmt.Errorf("%w: too many documents open on this node", ErrLimitExceeded)

// Unlimited turns off a bound of Options that says it may be off (any
// negative value does). Zero is always the documented default: a command
// line whose 0 means "off" maps it to Unlimited.
const Unlimited = -1

// Options configures a Hub. The zero value of every field is a documented
// default, filled in by New; bounds that may be off take Unlimited.
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

	// Tracer makes the spans of a message's way through the node and of
	// a publication's arrival on another (trace.go). Default: none (no
	// span is started: nothing to pay on the hot path).
	Tracer   trace.Tracer
	untraced bool // Tracer was nil

	// Metrics records counters and gauges. Default: metrics that are not
	// registered anywhere (so tests need no registry).
	Metrics *Metrics

	// PeerID is the senderId the hub uses on the wire. Default:
	// "plait-" plus a random suffix (one per process).
	PeerID string

	// JoinTimeout bounds how long a new connection may take to send its
	// join message. Default: 10s.
	JoinTimeout time.Duration

	// PendingWait is how long a request for a document that does not exist
	// waits for it to appear before it is answered doc-unavailable: the
	// creator's first changes may still be on their way, on another
	// connection or through another node. A document that appears meanwhile
	// is sent at once. Waiting requests count against MaxDocsPerConn and
	// MaxOpenDocs. Default: 2s.
	PendingWait time.Duration

	// IdleDocTimeout is how long a document with no connected peers stays
	// in memory before it is evicted. Default: 30s.
	IdleDocTimeout time.Duration

	// DocQueueLen bounds each document's inbox (messages). A session whose
	// document inbox is full waits (backpressure on that client's reads).
	// Default: 64.
	DocQueueLen int

	// MinCompactBytes is the size of stored incremental changes below which
	// a document is never compacted; above it, a document is compacted when
	// the changes stored since its last snapshot are half of it (so a
	// compaction's cost per stored change stays constant as the history
	// grows). Default: 64 KiB.
	MinCompactBytes int

	// StoreTimeout bounds each store call. Default: 10s.
	StoreTimeout time.Duration

	// MessageRate is how many messages per second one connection may send
	// after join, sustained (a token bucket refilled at this rate). A
	// connection that exceeds it gets an error message and is closed with
	// protocol.CloseRateLimited. Default: 500; Unlimited: no limit.
	MessageRate float64

	// MessageBurst is the token bucket's size: how many messages a
	// connection may send at once above MessageRate, for example when it
	// (re)opens many documents (about two messages each). Default:
	// 20*MessageRate (10,000 with the default rate), at least 1; ignored
	// without a MessageRate limit.
	MessageBurst int

	// MaxDocBytes bounds a document's size: the uncompressed bytes of its
	// changes. A sync message whose changes would take a document past it
	// is refused whole (an error message, close protocol.CloseLimitExceeded),
	// never stored or relayed. A document already larger (stored before the
	// limit) opens read-only: it is served, and refuses every new change.
	// Default: 128 MiB; Unlimited: no limit.
	MaxDocBytes int

	// DocMaxBytes, if set, returns the size bound of document id in place
	// of MaxDocBytes: a per-user or per-document quota. 0 means
	// MaxDocBytes, Unlimited (any negative value) no bound. The
	// document's owner calls it when it loads the document and after each
	// Reauthorize (its owners may have changed), with a ctx bounded by
	// StoreTimeout; on an error it keeps the bound it had (MaxDocBytes at
	// first) and logs it. It must be safe for concurrent use.
	DocMaxBytes func(ctx context.Context, id protocol.DocumentID) (int, error)

	// MaxInflatedBytes bounds what the compressed changes of one sync
	// message may inflate to; more: close protocol.CloseLimitExceeded.
	// Default: 64 MiB.
	MaxInflatedBytes int

	// MaxSendBytes bounds the bytes of changes the hub puts into one sync
	// message it sends; a longer history goes out as several messages, one
	// per round trip. Default: 8 MiB.
	MaxSendBytes int

	// MaxDocsPerConn bounds the documents one connection may have open;
	// the next one gets doc-unavailable and an error message (the
	// connection stays). Documents it asked for that do not exist do not
	// count once answered. Default: 4096; Unlimited: no limit.
	MaxDocsPerConn int

	// MaxOpenDocs bounds the documents open on this node (each has an
	// owner goroutine); beyond it a sync or request for a document not
	// open gets doc-unavailable and an error message. Default: 50,000;
	// Unlimited: no limit.
	MaxOpenDocs int

	// MaxConnBytes bounds the bytes one connection has in flight: received
	// messages not yet handled by their documents, plus the sync state its
	// peers keep (their Bloom filters and hash lists). Past it, reading
	// from the connection waits for its documents (backpressure); sync
	// state past it closes the connection with protocol.CloseLimitExceeded.
	// Default: 64 MiB.
	MaxConnBytes int

	// MaxInflightBytes bounds the bytes of received messages not yet
	// handled, over all connections of the node: past it, every read loop
	// waits until documents catch up. Default: 512 MiB.
	MaxInflightBytes int

	// MaxStateBytes bounds the sync state (peers' Bloom filters and hash
	// lists) that the node keeps over all connections: a message that adds
	// to it past the bound closes its connection with
	// protocol.CloseTryAgainLater. Default: 256 MiB.
	MaxStateBytes int

	// BudgetWait bounds how long a received message waits for room in
	// MaxConnBytes and MaxInflightBytes (in turn with other connections'
	// messages): past it the connection is closed with
	// protocol.CloseTryAgainLater. It stays below the transport's pong
	// timeout, since a waiting connection is not read. Default: 10s.
	BudgetWait time.Duration

	// MaxEphemeralBytes bounds the data of one ephemeral message; a larger
	// one is dropped, counted, and its sender told with an error message.
	// Default: 64 KiB.
	MaxEphemeralBytes int

	// EphemeralRelayBytes is each document's relay budget for ephemeral
	// messages, in bytes per second (payload times receivers); relays
	// past it are dropped and counted. Default: 16 MiB.
	EphemeralRelayBytes int

	// MaxCompactBytes is the largest document (as MaxDocBytes counts it)
	// that is compacted: building a snapshot indexes the whole history in
	// the sync engine, whose memory is a multiple of it (BenchmarkOpenLargeDocument:
	// about 6.5 KB per change, transient). A
	// larger document keeps its changes as they are, and is reported once
	// per opening. It also bounds the documents compacting at once on the
	// node, by their bytes together: a compaction that does not fit waits
	// for the next write. Default: 32 MiB.
	MaxCompactBytes int

	// OnSecurityEvent, if set, is told of each denial, refused change,
	// rate limit and malformed input, for an audit log. The hub calls it
	// synchronously from session and document goroutines: it must be
	// quick, safe for concurrent use, and must not call the hub.
	OnSecurityEvent func(SecurityEvent)

	// OnStored, if set, is told each time a document's owner stored a
	// batch of changes from this node's peers (not those other nodes
	// stored and published), and when it created a document's record;
	// created reports the latter. Webhooks use it. The hub calls it
	// synchronously from document goroutines, after the store confirmed
	// the write: it must not block, and must not call the hub.
	OnStored func(id protocol.DocumentID, created bool)

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
	if o.Tracer == nil {
		o.Tracer = defaultTracer()
		o.untraced = true
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.PeerID == "" {
		o.PeerID = "plait-" + protocol.RandomHex(8)
	}
	if o.JoinTimeout <= 0 {
		o.JoinTimeout = 10 * time.Second
	}
	if o.PendingWait <= 0 {
		o.PendingWait = 2 * time.Second
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
	if o.BudgetWait <= 0 {
		o.BudgetWait = 10 * time.Second
	}
	for _, f := range []struct {
		v   *int
		def int
	}{
		{&o.MaxDocBytes, 128 << 20}, {&o.MaxInflatedBytes, 64 << 20}, {&o.MaxSendBytes, 8 << 20},
		{&o.MaxDocsPerConn, 4096}, {&o.MaxOpenDocs, 50_000}, {&o.MaxConnBytes, 64 << 20},
		{&o.MaxInflightBytes, 512 << 20}, {&o.MaxStateBytes, 256 << 20}, {&o.MaxEphemeralBytes, 64 << 10},
		{&o.EphemeralRelayBytes, 16 << 20}, {&o.MaxCompactBytes, 32 << 20},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if o.MaxInflatedBytes < 0 || o.MaxSendBytes < 0 || o.MaxConnBytes < 0 || o.MaxInflightBytes < 0 || o.MaxStateBytes < 0 ||
		o.MaxEphemeralBytes < 0 || o.EphemeralRelayBytes < 0 || o.MaxCompactBytes < 0 {
		return errors.New("hub: MaxInflatedBytes, MaxSendBytes, MaxConnBytes, MaxInflightBytes, MaxStateBytes, MaxEphemeralBytes, EphemeralRelayBytes and MaxCompactBytes must not be negative")
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
	sessions map[clientKey]*session // logged-in sessions, by peer id and user
	conns    map[*session]struct{}
	docs     map[protocol.DocumentID]*document
	// waiters are peers told a document does not exist, by document: if
	// it appears while they are connected, its owner lets them in. They
	// cost a map entry, not an open document (see document.receiveSync).
	waiters  map[protocol.DocumentID]map[*session]struct{}
	nWaiters atomic.Int64

	sessWG   sync.WaitGroup // running Serve calls
	docWG    sync.WaitGroup // running document owners
	inflight *byteBudget    // bytes of received messages not yet handled, all connections
	compacts *byteBudget    // bytes of the documents compacting now
	// stateBytes is the peer-supplied sync state all documents keep
	// (Options.MaxStateBytes).
	stateBytes atomic.Int64
	// compactFailed remembers documents whose compaction failed, across
	// evictions, so that reopening one does not retry at once (bounded by
	// maxCompactFailures; under mu).
	compactFailed map[protocol.DocumentID]compactBackoff
	nextID        atomic.Uint64
	gcPending     atomic.Bool
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
		opts:          opts,
		log:           opts.Logger,
		m:             opts.Metrics,
		storageID:     sid,
		ctx:           hctx,
		cancel:        cancel,
		sessions:      make(map[clientKey]*session),
		conns:         make(map[*session]struct{}),
		docs:          make(map[protocol.DocumentID]*document),
		waiters:       make(map[protocol.DocumentID]map[*session]struct{}),
		inflight:      newByteBudget(opts.MaxInflightBytes),
		compacts:      newByteBudget(opts.MaxCompactBytes),
		compactFailed: make(map[protocol.DocumentID]compactBackoff),
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
	if (p.Kind == PubEphemeral || p.Kind == PubDeleted) && p.Origin == h.opts.PeerID {
		return // our own, already relayed to our peers (or detached from them)
	}
	if p.Kind == PubDeleted {
		go h.detachDeleted(id, p) // never dropped for a full inbox, as notify would
		return
	}
	m := docMsg{kind: kindRemote, pub: &p}
	if p.Kind == PubChanges && p.Origin != h.opts.PeerID {
		// One edit is one trace across nodes: this span continues the
		// publisher's (Publication.Trace).
		_, sp := h.startSpan(parseTraceparent(p.Trace), spanDeliver, trace.SpanKindConsumer, attrDoc.String(string(id)),
			attrOrigin.String(p.Origin), attrOffset.Int64(int64(p.Pos.Offset)))
		m.trace = sp.SpanContext()
		defer sp.End()
	}
	h.notify(id, m)
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
	if d == nil && h.hasWaiters(id) {
		// Peers refused a document that does not exist yet wait for it:
		// the new permissions may let them in (a creator that claims its
		// document after syncing it).
		d = h.document(id, true)
	}
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

// InflightBytes returns the bytes of received messages not yet handled by
// their documents (what Options.MaxInflightBytes bounds).
func (h *Hub) InflightBytes() int64 { return h.inflight.inUse() }

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

// register records s; a logged-in session replaces (closes) an older one
// of the same user with the same peer id.
func (h *Hub) register(s *session) error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrHubClosed
	}
	// Peer ids are public (every peer of a document sees them), so a join
	// with a known id proves nothing by itself: only a session of the same
	// logged-in user is replaced (a reconnect that raced the old socket's
	// close). Otherwise both sessions live, and the older one ends by
	// itself (its client leaves, or its pings time out).
	if s.identity.User == "" {
		h.mu.Unlock()
		return nil
	}
	key := clientKey{peer: s.peerID, user: s.identity.User}
	old := h.sessions[key]
	h.sessions[key] = s
	h.mu.Unlock()
	if old != nil {
		old.log.Debug("replaced by a newer connection of the same user with the same peer id")
		old.conn.Close(protocol.CloseReplaced, "replaced by a newer connection with the same peer id")
	}
	return nil
}

// clientKey identifies a client that the hub can recognise on a new
// connection: its peer id and its user.
type clientKey struct{ peer, user string }

func (h *Hub) unregister(s *session) {
	h.mu.Lock()
	if key := (clientKey{peer: s.peerID, user: s.identity.User}); h.sessions[key] == s {
		delete(h.sessions, key)
	}
	delete(h.conns, s)
	h.mu.Unlock()
}

// openDocument returns the owner of id, starting it if needed, unless the
// node has Options.MaxOpenDocs documents open (errTooManyDocs) or is
// shutting down (ErrHubClosed). The caller must hand it a message
// (document.post), which ends the hold it takes.
func (h *Hub) openDocument(id protocol.DocumentID) (*document, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.docs[id]
	if d == nil {
		if h.closing {
			return nil, ErrHubClosed
		}
		if h.opts.MaxOpenDocs > 0 && len(h.docs) >= h.opts.MaxOpenDocs {
			return nil, errTooManyDocs
		}
		d = h.startLocked(id)
	}
	d.pending.Add(1)
	return d, nil
}

// maxWaiters bounds the waiters of all documents together (about 100
// bytes each); each connection's are bounded by MaxDocsPerConn too.
const maxWaiters = 1 << 20

// addWaiter records that s waits for document id to appear. It reports
// false if s is gone or the node has maxWaiters already.
func (h *Hub) addWaiter(id protocol.DocumentID, s *session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed.Load() || h.nWaiters.Load() >= maxWaiters {
		return false // a closed session's leaveAll may have run already
	}
	w := h.waiters[id]
	if w == nil {
		w = make(map[*session]struct{})
		h.waiters[id] = w
	}
	if _, ok := w[s]; !ok {
		w[s] = struct{}{}
		h.nWaiters.Add(1)
	}
	return true
}

// dropWaiter forgets that s waits for id.
func (h *Hub) dropWaiter(id protocol.DocumentID, s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w := h.waiters[id]; w != nil {
		if _, ok := w[s]; ok {
			delete(w, s)
			h.nWaiters.Add(-1)
		}
		if len(w) == 0 {
			delete(h.waiters, id)
		}
	}
}

// takeWaiters returns and forgets the peers waiting for id.
// hasWaiters reports whether peers wait for document id.
func (h *Hub) hasWaiters(id protocol.DocumentID) bool {
	if h.nWaiters.Load() == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.waiters[id]) > 0
}

func (h *Hub) takeWaiters(id protocol.DocumentID) []*session {
	if h.nWaiters.Load() == 0 {
		return nil // the usual case, without the lock
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.waiters[id]
	delete(h.waiters, id)
	h.nWaiters.Add(-int64(len(w)))
	out := make([]*session, 0, len(w))
	for s := range w {
		out = append(out, s)
	}
	return out
}

// startLocked starts the owner of id; h.mu is held.
func (h *Hub) startLocked(id protocol.DocumentID) *document {
	d := newDocument(h, id)
	h.docs[id] = d
	h.m.OpenDocuments.Inc()
	h.docWG.Add(1)
	go d.run()
	return d
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
		d = h.startLocked(id)
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

// compactBackoff is when a document whose compaction failed may try again.
type compactBackoff struct {
	after time.Time
	wait  backoff
}

// maxCompactFailures bounds Hub.compactFailed.
const maxCompactFailures = 4096

// rememberCompactFailure records (or, with a backoff that is not failing,
// forgets) that a document's compaction failed.
func (h *Hub) rememberCompactFailure(id protocol.DocumentID, after time.Time, wait backoff) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !wait.failing() {
		delete(h.compactFailed, id)
		return
	}
	if _, ok := h.compactFailed[id]; !ok && len(h.compactFailed) >= maxCompactFailures {
		for k := range h.compactFailed { // forget one at random
			delete(h.compactFailed, k)
			break
		}
	}
	h.compactFailed[id] = compactBackoff{after: after, wait: wait}
}

// compactFailure returns what rememberCompactFailure recorded for id.
func (h *Hub) compactFailure(id protocol.DocumentID) (compactBackoff, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f, ok := h.compactFailed[id]
	return f, ok
}
