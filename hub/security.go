package hub

import (
	"errors"

	"golang.org/x/time/rate"

	"github.com/plaithub/plait/pkg/protocol"
)

// SecurityEventKind names what a SecurityEvent records.
type SecurityEventKind string

// Security event kinds.
const (
	// EventDenied: a peer asked for a document it may not read.
	EventDenied SecurityEventKind = "denied"
	// EventReadOnly: a viewer sent changes (refused; the peer is closed).
	EventReadOnly SecurityEventKind = "read_only"
	// EventRateLimited: a connection or a user sent messages too fast.
	EventRateLimited SecurityEventKind = "rate_limited"
	// EventMalformed: a frame was not a valid protocol message, or not
	// allowed where it came (before or after join).
	EventMalformed SecurityEventKind = "malformed"
	// EventInvalidSync: a sync message's data was not valid Automerge.
	EventInvalidSync SecurityEventKind = "invalid_sync"
	// EventJoinTimeout: a connection sent no join in time.
	EventJoinTimeout SecurityEventKind = "join_timeout"
	// EventUnsupportedVersion: a join offered no protocol version we speak.
	EventUnsupportedVersion SecurityEventKind = "unsupported_version"
	// EventLimitExceeded: a peer hit a resource bound of its own (a
	// document's size, a sync message's size, its documents open, its
	// ephemeral messages); see Err for which.
	EventLimitExceeded SecurityEventKind = "limit_exceeded"
	// EventCapacity: the node refused a peer because it is full (open
	// documents); not the peer's fault.
	EventCapacity SecurityEventKind = "capacity"
)

// SecurityEvent is something an operator's audit log records about one
// connection.
type SecurityEvent struct {
	Kind   SecurityEventKind
	Conn   ConnInfo
	ConnID uint64              // the "conn" of the hub's logs
	Peer   string              // the peer's senderId ("" before join)
	Doc    protocol.DocumentID // the document, where one is concerned
	Code   protocol.CloseCode  // the close code, if the connection was closed
	Err    error
}

var errDenied = errors.New("document unavailable to this peer")

// kindOfClose maps the close codes the hub sends on a peer's fault to an
// event kind; "" for the others (a restart, a storage failure).
func kindOfClose(code protocol.CloseCode) SecurityEventKind {
	switch code {
	case protocol.CloseReadOnly:
		return EventReadOnly
	case protocol.CloseRateLimited:
		return EventRateLimited
	case protocol.CloseMalformedMessage:
		return EventMalformed
	case protocol.CloseInvalidSyncData:
		return EventInvalidSync
	case protocol.CloseJoinTimeout:
		return EventJoinTimeout
	case protocol.CloseUnsupportedVersion:
		return EventUnsupportedVersion
	case protocol.CloseLimitExceeded:
		return EventLimitExceeded
	case protocol.CloseTryAgainLater:
		return EventCapacity
	}
	return ""
}

// report hands ev, completed with the session's connection, to
// Options.OnSecurityEvent.
func (s *session) report(ev SecurityEvent) {
	ev.Conn, ev.ConnID, ev.Peer = s.info, s.id, s.peerID
	s.h.report(ev)
}

func (h *Hub) report(ev SecurityEvent) {
	if h.opts.OnSecurityEvent != nil && ev.Kind != "" {
		h.opts.OnSecurityEvent(ev)
	}
}

// UserLimiter is a message rate limit shared by every connection of one
// user (ConnInfo.UserLimit); the transport makes one per user.
type UserLimiter = rate.Limiter
