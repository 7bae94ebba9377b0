package hub

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the hub's Prometheus collectors. Create them with NewMetrics.
type Metrics struct {
	Connections      prometheus.Gauge
	ConnectionsTotal prometheus.Counter
	Disconnects      *prometheus.CounterVec // by close code: protocol errors, slow consumers, ...
	OpenDocuments    prometheus.Gauge
	DocumentsLoaded  prometheus.Counter
	DocumentsEvicted prometheus.Counter
	DocumentsDeleted *prometheus.CounterVec // by where the deletion came from: "local" (Hub.DeleteDocument) or "remote" (another node)
	Compactions      prometheus.Counter
	ChangesAccepted  prometheus.Counter
	MessagesIn       *prometheus.CounterVec // by message type
	MessagesOut      *prometheus.CounterVec // by message type
	BytesIn          prometheus.Counter
	BytesOut         prometheus.Counter
	Dropped          *prometheus.CounterVec // messages dropped on purpose, by reason
	StoreSeconds     *prometheus.HistogramVec
	RelaySeconds     prometheus.Histogram
	SendSeconds      prometheus.Histogram
	StoreErrors      *prometheus.CounterVec
	BrokerRecoveries *prometheus.CounterVec // catch-ups, by trigger and source
	BrokerLagged     prometheus.Counter
	BrokerErrors     *prometheus.CounterVec
	ChangesRemote    prometheus.Counter
	LimitHits        *prometheus.CounterVec // requests and connections refused by a limit, by limit
	Denials          prometheus.Counter
}

// NewMetrics creates the hub's collectors and registers them with reg,
// unless reg is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "plait_connections", Help: "Open client connections."}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_connections_total", Help: "Client connections accepted."}),
		Disconnects:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_disconnects_total", Help: "Connections closed by the server, by close code."}, []string{"code"}),
		OpenDocuments:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "plait_open_documents", Help: "Documents held in memory."}),
		DocumentsLoaded:  prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_documents_loaded_total", Help: "Documents opened (loaded from the store or created)."}),
		DocumentsEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_documents_evicted_total", Help: "Idle documents evicted from memory."}),
		DocumentsDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_documents_deleted_total", Help: "Documents deleted and detached from their peers, by origin: local (deleted through this node) or remote (another node's deletion, detached here)."}, []string{"origin"}),
		Compactions:      prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_compactions_total", Help: "Documents compacted into a new snapshot."}),
		ChangesAccepted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_changes_accepted_total", Help: "Changes from peers that passed every check and were applied."}),
		MessagesIn:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_messages_in_total", Help: "Protocol messages received, by type."}, []string{"type"}),
		MessagesOut:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_messages_out_total", Help: "Protocol messages queued for sending, by type."}, []string{"type"}),
		BytesIn:          prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_bytes_in_total", Help: "Bytes of protocol frames received."}),
		BytesOut:         prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_bytes_out_total", Help: "Bytes of protocol frames queued for sending."}),
		Dropped:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_messages_dropped_total", Help: "Messages dropped on purpose (duplicate or echoed ephemeral, no peers to relay to), by reason."}, []string{"reason"}),
		StoreSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "plait_store_seconds", Help: "Latency of store operations.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"op"}),
		RelaySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "plait_relay_seconds",
			Help:    "From reading a peer's changes off its connection to their store write's confirmation, which releases them to the other peers: one observation per write, from its earliest message.",
			Buckets: relayBuckets,
		}),
		SendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "plait_send_seconds",
			Help:    "From queuing messages for a connection to the end of the socket write that carries them: one observation per run of the connection's writer, from its oldest message.",
			Buckets: relayBuckets,
		}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_store_errors_total", Help: "Failed store operations."}, []string{"op"}),
		BrokerRecoveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_broker_recoveries_total",
			Help: "Documents that caught up with the other nodes, by trigger (gap, epoch, rollback, resubscribed, lagged, settle, retry) and source (log, store)."}, []string{"trigger", "source"}),
		BrokerLagged:  prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_broker_lagged_total", Help: "Broker deliveries dropped because a document's inbox was full (the document catches up from the log)."}),
		BrokerErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_broker_errors_total", Help: "Failed broker calls, by operation."}, []string{"op"}),
		ChangesRemote: prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_changes_remote_total", Help: "Changes applied from other nodes (through the broker or the store)."}),
		Denials:       prometheus.NewCounter(prometheus.CounterOpts{Name: "plait_denials_total", Help: "Peers refused a document by the authorizer (told it is unavailable)."}),
		LimitHits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plait_limit_hits_total",
			Help: "Connections closed, upgrades and HTTP requests refused because a limit was hit, by limit (messages, user_messages, connections_per_ip, connections_per_user, http_rate, doc_bytes, inflated_bytes, sync_bounds, docs_per_conn, open_docs, conn_bytes, ephemeral_bytes, ephemeral_relay, compact_bytes, and the node's connection caps)."}, []string{"limit"}),
	}
	for _, l := range []string{LimitMessages, LimitDocBytes, LimitInflatedBytes, LimitSyncBounds, LimitDocsPerConn,
		LimitOpenDocs, LimitConnBytes, LimitEphemeralBytes, LimitEphemeralRelay, LimitCompactBytes} {
		m.LimitHits.WithLabelValues(l) // shown at 0 before the first hit
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.ConnectionsTotal, m.Disconnects, m.OpenDocuments,
			m.DocumentsLoaded, m.DocumentsEvicted, m.DocumentsDeleted, m.Compactions, m.ChangesAccepted, m.MessagesIn, m.MessagesOut,
			m.BytesIn, m.BytesOut, m.Dropped, m.StoreSeconds, m.RelaySeconds, m.SendSeconds, m.StoreErrors,
			m.BrokerRecoveries, m.BrokerLagged, m.BrokerErrors, m.ChangesRemote, m.LimitHits, m.Denials)
	}
	return m
}

// LimitMessages is the plait_limit_hits_total label of the per-connection
// message rate limit.
const LimitMessages = "messages"

// Labels of plait_limit_hits_total for the resource bounds of Options.
const (
	LimitDocBytes       = "doc_bytes"       // a change would take a document past MaxDocBytes
	LimitInflatedBytes  = "inflated_bytes"  // a message's compressed changes inflate past MaxInflatedBytes
	LimitSyncBounds     = "sync_bounds"     // a sync message's hash lists, haves or Bloom filters too large
	LimitDocsPerConn    = "docs_per_conn"   // a connection opened more than MaxDocsPerConn documents
	LimitOpenDocs       = "open_docs"       // the node has MaxOpenDocs documents open
	LimitConnBytes      = "conn_bytes"      // a connection's sync state past MaxConnBytes
	LimitEphemeralBytes = "ephemeral_bytes" // an ephemeral message larger than MaxEphemeralBytes
	LimitEphemeralRelay = "ephemeral_relay" // a document's ephemeral relays past EphemeralRelayBytes per second
	LimitCompactBytes   = "compact_bytes"   // a document too large to compact (MaxCompactBytes), left as it is
	LimitStateBytes     = "state_bytes"     // the node's sync state past MaxStateBytes; connection closed 1013
	LimitBudgetWait     = "budget_wait"     // a message waited past BudgetWait for bytes in flight; connection closed 1013
)

// LimitUserMessages is the plait_limit_hits_total label of the per-user
// message rate limit (ConnInfo.UserLimit).
const LimitUserMessages = "user_messages"

// countIn records an incoming frame of n bytes (typ "" counts bytes only).
func (m *Metrics) countIn(typ string, n int) {
	if typ != "" {
		m.MessagesIn.WithLabelValues(typ).Inc()
	}
	m.BytesIn.Add(float64(n))
}

func (m *Metrics) countOut(typ string, n int) {
	m.MessagesOut.WithLabelValues(typ).Inc()
	m.BytesOut.Add(float64(n))
}

func (m *Metrics) observeStore(op string, start time.Time) {
	m.StoreSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// relayBuckets are plait_relay_seconds' bounds: 0.25 ms to about 4 s,
// doubling, fine enough to read a p99 of a few milliseconds.
var relayBuckets = prometheus.ExponentialBuckets(0.00025, 2, 15)

// ObserveSend records in plait_send_seconds how long a connection's queued
// messages waited for their socket write (wstransport's OnWritten).
func (m *Metrics) ObserveSend(wait time.Duration) { m.SendSeconds.Observe(wait.Seconds()) }
