package protocol

import "strconv"

// CloseCode is a WebSocket close status code sent when a connection ends.
// Codes below 4000 are defined by RFC 6455; 4000-4999 are Plait's own, and
// their last three digits echo the nearest HTTP status.
type CloseCode int

// Standard close codes (RFC 6455 section 7.4.1 and the IANA registry).
const (
	// CloseNormal means the work is done, for example the client left.
	CloseNormal CloseCode = 1000
	// CloseGoingAway means the endpoint is going away (a browser tab closing).
	CloseGoingAway CloseCode = 1001
	// CloseProtocolError means the WebSocket framing itself was violated.
	CloseProtocolError CloseCode = 1002
	// ClosePolicyViolation means the peer may not do what it tried, for
	// example it lacks permission; reconnecting will not help.
	ClosePolicyViolation CloseCode = 1008
	// CloseMessageTooBig means a frame exceeded the read limit.
	CloseMessageTooBig CloseCode = 1009
	// CloseInternalError means the server failed; the client may reconnect.
	CloseInternalError CloseCode = 1011
	// CloseServiceRestart means the node is shutting down: reconnect, and a
	// load balancer will send the client to another node.
	CloseServiceRestart CloseCode = 1012
	// CloseTryAgainLater means the node is overloaded: a message waited
	// too long for the node to handle the ones before it. Reconnect after
	// a pause (with backoff); nothing the client sent was lost that it
	// will not send again on its next sync.
	CloseTryAgainLater CloseCode = 1013
)

// Plait close codes.
const (
	// CloseReadOnly means the client sent changes to a document it may
	// only read (a viewer); an error message precedes the close, and the
	// changes were neither applied, stored nor relayed.
	CloseReadOnly CloseCode = 4403
	// CloseMalformedMessage means a frame was not a valid protocol message
	// (Decode failed with ErrMalformed).
	CloseMalformedMessage CloseCode = 4400
	// CloseJoinTimeout means the client sent no join in time after connecting.
	CloseJoinTimeout CloseCode = 4408
	// CloseReplaced means a newer connection joined with the same peer id.
	CloseReplaced CloseCode = 4409
	// CloseLimitExceeded means a message or a change exceeded a resource
	// bound of the node: a sync message's lists or Bloom filters too large,
	// its compressed changes inflating past the per-message budget, a
	// document that would grow past its maximum size, or sync state past
	// the connection's budget. An error message naming the bound precedes
	// the close; nothing of the refused message was applied, stored or
	// relayed. Reconnecting and sending the same thing again fails again.
	CloseLimitExceeded CloseCode = 4413
	// CloseInvalidSyncData means the data of a sync or request message is
	// not a valid Automerge sync message.
	CloseInvalidSyncData CloseCode = 4422
	// CloseUnsupportedVersion means the join offered no protocol version
	// this server speaks; an error message precedes the close.
	CloseUnsupportedVersion CloseCode = 4426
	// CloseSlowConsumer means the client read too slowly and its write
	// queue overflowed.
	CloseSlowConsumer CloseCode = 4429
	// CloseRateLimited means the client sent messages faster than its
	// connection's rate limit allows; an error message precedes the close.
	// (4429 was taken by the slow consumer: 430 is next to HTTP's 429.)
	CloseRateLimited CloseCode = 4430
	// CloseTokenExpired means the access token the connection was opened
	// with expired (after a short grace): refresh it and reconnect. An
	// error message precedes the close.
	CloseTokenExpired CloseCode = 4401
	// CloseRevoked means the user or the login session was revoked (logged
	// out, a refresh token reused, an operator's revocation): log in again.
	// An error message precedes the close.
	CloseRevoked CloseCode = 4410
)

var closeCodeNames = map[CloseCode]string{
	CloseNormal:             "normal",
	CloseGoingAway:          "going away",
	CloseProtocolError:      "protocol error",
	ClosePolicyViolation:    "policy violation",
	CloseMessageTooBig:      "message too big",
	CloseInternalError:      "internal error",
	CloseServiceRestart:     "service restart",
	CloseTryAgainLater:      "try again later",
	CloseMalformedMessage:   "malformed message",
	CloseJoinTimeout:        "join timeout",
	CloseReplaced:           "replaced by a newer connection",
	CloseInvalidSyncData:    "invalid sync data",
	CloseLimitExceeded:      "limit exceeded",
	CloseUnsupportedVersion: "unsupported protocol version",
	CloseSlowConsumer:       "slow consumer",
	CloseRateLimited:        "rate limited",
	CloseReadOnly:           "read-only document",
	CloseTokenExpired:       "access token expired",
	CloseRevoked:            "access revoked",
}

// String returns a short description, such as "slow consumer (4429)".
func (c CloseCode) String() string {
	name, ok := closeCodeNames[c]
	if !ok {
		name = "close code"
	}
	return name + " (" + strconv.Itoa(int(c)) + ")"
}
