package hub

import (
	"context"
	"errors"

	"github.com/plaithub/plait/pkg/protocol"
)

// ErrHistoryLost is returned by Broker.History when the publications after
// the given position are no longer all in the log: it was trimmed, it
// expired, or its epoch changed (the broker lost its data). The caller
// catches up from the Store instead.
var ErrHistoryLost = errors.New("broker history lost")

// ErrBrokerClosed is returned by a Broker's methods once it is closed.
var ErrBrokerClosed = errors.New("broker is closed")

// PublicationKind tells what a Publication carries.
type PublicationKind byte

const (
	// PubChanges carries Automerge change chunks (concatenated raw chunks)
	// that the publishing node accepted and stored. Logged: it has an
	// offset in the document's stream.
	PubChanges PublicationKind = 'c'
	// PubEphemeral carries one encoded automerge-repo ephemeral message.
	// Not logged: at most once, offset 0.
	PubEphemeral PublicationKind = 'e'
	// PubDeleted tells the nodes that have the document open that it was
	// deleted (Hub.DeleteDocument): they detach its peers. Publishing it
	// first removes the document's log (its stream), so a later
	// publication of changes starts a new epoch. Not logged: at most
	// once, offset 0, no data.
	PubDeleted PublicationKind = 'd'
)

// StreamPosition is a place in a document's stream of PubChanges
// publications. Offsets start at 1 and grow by one per publication within
// an epoch; a new epoch (the broker lost its log) restarts them. Tag
// names the publication at Offset ("" at offset 0): a broker that lost its
// last publications but not its epoch (a failover to a replica that lacked
// them) hands their offsets out again, with other tags.
type StreamPosition struct {
	Epoch  string
	Offset uint64
	Tag    string
}

// Publication is what one node publishes about one document.
type Publication struct {
	Kind   PublicationKind
	Origin string // the publishing node's id (Hub.PeerID)
	Data   []byte
	// Position in the stream: set for PubChanges only.
	Pos StreamPosition
	// Prev is the tag of the publication before this one: a receiver
	// holding another tag at Pos.Offset-1 missed a rollback and catches up.
	Prev string
	// Trace is the W3C traceparent of the span that published it ("" for
	// none): the receiving node's spans join the publisher's trace. A
	// broker carries it if it is valid (ValidTraceparent) and may drop it;
	// receivers ignore a malformed one.
	Trace string
}

// BrokerHandler receives what a Broker delivers. The Hub implements it.
// Its methods are called from the broker's delivery goroutines and must not
// block.
type BrokerHandler interface {
	// HandlePublication delivers a publication for a subscribed document.
	// Publications of one document arrive in the order of their offsets,
	// but some may be missing (pub/sub is at most once): the receiver
	// detects gaps by offset and epoch and asks History.
	HandlePublication(id protocol.DocumentID, p Publication)
	// HandleResubscribed tells that the subscription to id was re-made (a
	// lost connection, a failed probe): publications in between may be
	// lost, so the receiver catches up from its last position. The new
	// subscription is active when it is called.
	HandleResubscribed(id protocol.DocumentID)
}

// Broker carries what one node learns about a document to the other nodes
// that have it open: new changes (logged, so that a node that missed some
// can catch up) and ephemeral messages (at most once).
//
// Contract (every implementation must pass brokertest.RunBrokerTests):
//   - Start is called once, before any other method, with the handler that
//     receives every delivery. Other methods are safe for concurrent use.
//   - Subscriptions are counted: a document stays subscribed until as many
//     Unsubscribe calls as Subscribe calls have been made; the last
//     Unsubscribe returns once no delivery for the document can follow.
//   - Subscribe returns once the subscription is active, with the stream's
//     position at that moment: every PubChanges publication with a greater
//     offset is delivered (or its loss is signalled by a gap or by
//     HandleResubscribed), every one up to it is in the log or was
//     published before Subscribe returned.
//   - Publish of PubChanges appends to the document's log and publishes
//     atomically and returns the publication's position; the publisher
//     receives its own publications too. Publish of PubDeleted removes
//     the document's log and position (History then reports
//     ErrHistoryLost for any earlier position, Position starts a new
//     epoch) and then delivers the notice to every subscriber.
//   - Position returns the stream's current position: every PubChanges
//     publication up to it was published before the call. A publisher
//     stores its changes before it publishes them, so after Position the
//     Store holds everything up to that position.
//   - History returns the logged publications after since, in order, the
//     first one's Prev equal to since.Tag; or ErrHistoryLost.
//   - Every call takes a context and returns when it is done.
type Broker interface {
	Start(h BrokerHandler) error
	Subscribe(ctx context.Context, id protocol.DocumentID) (StreamPosition, error)
	Unsubscribe(ctx context.Context, id protocol.DocumentID) error
	Publish(ctx context.Context, id protocol.DocumentID, p Publication) (StreamPosition, error)
	Position(ctx context.Context, id protocol.DocumentID) (StreamPosition, error)
	History(ctx context.Context, id protocol.DocumentID, since StreamPosition) ([]Publication, error)
	Close() error
}
