package protocol

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// ProtocolVersion is the only version of the automerge-repo WebSocket
// protocol this package speaks; it goes in join and peer messages.
const ProtocolVersion = "1"

// Message types of protocol version 1.
const (
	TypeJoin                     = "join"
	TypePeer                     = "peer"
	TypeLeave                    = "leave"
	TypeError                    = "error"
	TypeSync                     = "sync"
	TypeRequest                  = "request"
	TypeDocUnavailable           = "doc-unavailable"
	TypeEphemeral                = "ephemeral"
	TypeRemoteSubscriptionChange = "remote-subscription-change"
	TypeRemoteHeadsChanged       = "remote-heads-changed"
)

// ErrMalformed is wrapped by every error about a frame that is not a valid
// protocol message: bad CBOR, a field of the wrong type, a required field
// missing, an invalid id.
var ErrMalformed = errors.New("malformed message")

// ErrUnknownType is wrapped by the error about a well-formed message whose
// type this package does not know. A peer may choose to ignore such messages.
var ErrUnknownType = errors.New("unknown message type")

// MaxIDLen bounds the length in bytes of peer ids, storage ids, session ids
// and protocol version strings.
const MaxIDLen = 256

// MaxSafeInteger is the largest integer a JavaScript number holds exactly;
// counts and timestamps above it are rejected.
const MaxSafeInteger = 1<<53 - 1

// PeerMetadata is what a peer tells about itself in join and peer messages.
type PeerMetadata struct {
	// StorageID identifies the peer's storage; empty if it has none.
	StorageID string
	// IsEphemeral says the peer will not come back with the same storage, so
	// its sync state is not worth keeping.
	IsEphemeral bool
}

// HeadsAt is the heads of a document at some storage and when they were seen.
type HeadsAt struct {
	// Heads are bs58check-encoded change hashes (see EncodeHead).
	Heads []string
	// Timestamp is in milliseconds since the Unix epoch.
	Timestamp uint64
}

// Message is one protocol message. Which fields are meaningful depends on
// Type; Encode writes only those and Decode fills only those.
type Message struct {
	Type               string
	SenderID, TargetID string
	// PeerMetadata is set on join and peer; Decode never leaves it nil there.
	PeerMetadata *PeerMetadata
	// SupportedProtocolVersions is sent in join; nil means absent, which
	// the JS server treats as ["1"].
	SupportedProtocolVersions []string
	// SelectedProtocolVersion is sent in peer.
	SelectedProtocolVersion string
	// ErrorMessage is the "message" key of error.
	ErrorMessage string
	// DocumentID is set on sync, request, doc-unavailable, ephemeral and
	// remote-heads-changed.
	DocumentID DocumentID
	// Data is the Automerge sync message of sync and request, or the
	// application payload of ephemeral.
	Data []byte
	// SessionID and Count identify an ephemeral message: Count increases
	// within a session.
	SessionID string
	Count     uint64
	// Add and Remove are the storage ids of remote-subscription-change; nil
	// means absent.
	Add, Remove []string
	// NewHeads maps storage ids to their heads in remote-heads-changed.
	NewHeads map[string]HeadsAt
}

// field is a set of message keys, used to describe which keys a type has.
type field uint16

const (
	fSender field = 1 << iota
	fTarget
	fMeta      // peerMetadata
	fVersions  // supportedProtocolVersions
	fSelected  // selectedProtocolVersion
	fErrMsg    // message
	fDoc       // documentId
	fData      // data
	fEphemeral // sessionId, count
	fSubs      // add, remove
	fHeads     // newHeads
)

// schema lists, per type, the keys the TypeScript type declares (has) and
// those a valid message must carry (req).
var schema = map[string]struct{ has, req field }{
	TypeJoin:                     {fSender | fMeta | fVersions, fSender},
	TypePeer:                     {fSender | fTarget | fMeta | fSelected, fSender | fTarget | fSelected},
	TypeLeave:                    {fSender, fSender},
	TypeError:                    {fSender | fTarget | fErrMsg, 0},
	TypeSync:                     {fSender | fTarget | fDoc | fData, fSender | fTarget | fDoc | fData},
	TypeRequest:                  {fSender | fTarget | fDoc | fData, fSender | fTarget | fDoc | fData},
	TypeDocUnavailable:           {fSender | fTarget | fDoc, fSender | fTarget | fDoc},
	TypeEphemeral:                {fSender | fTarget | fDoc | fData | fEphemeral, fSender | fTarget | fDoc | fData | fEphemeral},
	TypeRemoteSubscriptionChange: {fSender | fTarget | fSubs, fSender | fTarget},
	TypeRemoteHeadsChanged:       {fSender | fTarget | fDoc | fHeads, fSender | fTarget | fDoc | fHeads},
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func lookupType(t string) (has, req field, err error) {
	s, ok := schema[t]
	if !ok {
		if t == "" {
			return 0, 0, malformed("message without type")
		}
		return 0, 0, fmt.Errorf("%w %q", ErrUnknownType, truncate(t))
	}
	return s.has, s.req, nil
}

// Validate reports whether m is a valid message of its type: required fields
// are present and ids are well-formed. Fields the type does not have are
// ignored. Errors wrap ErrMalformed or ErrUnknownType.
func (m *Message) Validate() error {
	if m == nil {
		return malformed("nil message")
	}
	has, req, err := lookupType(m.Type)
	if err != nil {
		return err
	}
	for _, r := range [...]struct {
		f   field
		key string
		ok  bool
	}{
		{fSender, "senderId", m.SenderID != ""},
		{fTarget, "targetId", m.TargetID != ""},
		{fSelected, "selectedProtocolVersion", m.SelectedProtocolVersion != ""},
		{fDoc, "documentId", m.DocumentID != ""},
		{fData, "data", len(m.Data) > 0},
		{fEphemeral, "sessionId", m.SessionID != ""},
		{fHeads, "newHeads", m.NewHeads != nil},
	} {
		if req&r.f != 0 && !r.ok {
			return malformed("%s message without %s", m.Type, r.key)
		}
	}
	check := func(key, v string) error {
		if err := checkID(v); err != nil {
			return malformed("%s message: %s %v", m.Type, key, err)
		}
		return nil
	}
	if has&fSender != 0 && m.SenderID != "" {
		if err := check("senderId", m.SenderID); err != nil {
			return err
		}
	}
	if has&fTarget != 0 && m.TargetID != "" {
		if err := check("targetId", m.TargetID); err != nil {
			return err
		}
	}
	if has&fMeta != 0 && m.PeerMetadata != nil && m.PeerMetadata.StorageID != "" {
		if err := check("peerMetadata.storageId", m.PeerMetadata.StorageID); err != nil {
			return err
		}
	}
	if has&fVersions != 0 {
		for _, v := range m.SupportedProtocolVersions {
			if err := check("supportedProtocolVersions element", v); err != nil {
				return err
			}
		}
	}
	if has&fSelected != 0 {
		if err := check("selectedProtocolVersion", m.SelectedProtocolVersion); err != nil {
			return err
		}
	}
	if has&fErrMsg != 0 && !utf8.ValidString(m.ErrorMessage) {
		return malformed("error message: message is not valid UTF-8")
	}
	if has&fDoc != 0 {
		if d, err := ParseDocumentID(string(m.DocumentID)); err != nil {
			return fmt.Errorf("%w: %s message: documentId: %w", ErrMalformed, m.Type, err)
		} else if d != m.DocumentID {
			return malformed("%s message: documentId %q is a URL, want a bare id", m.Type, truncate(string(m.DocumentID)))
		}
	}
	if has&fEphemeral != 0 {
		if err := check("sessionId", m.SessionID); err != nil {
			return err
		}
		if m.Count > MaxSafeInteger {
			return malformed("ephemeral message: count %d exceeds 2^53-1", m.Count)
		}
	}
	if has&fSubs != 0 {
		for _, ids := range [][]string{m.Add, m.Remove} {
			for _, id := range ids {
				if err := check("storage id", id); err != nil {
					return err
				}
			}
		}
	}
	if has&fHeads != 0 {
		for sid, h := range m.NewHeads {
			if err := check("newHeads storage id", sid); err != nil {
				return err
			}
			if h.Timestamp > MaxSafeInteger {
				return malformed("remote-heads-changed message: timestamp %d exceeds 2^53-1", h.Timestamp)
			}
			for _, head := range h.Heads {
				if _, err := DecodeHead(head); err != nil {
					return fmt.Errorf("%w: remote-heads-changed message: %w", ErrMalformed, err)
				}
			}
		}
	}
	return nil
}

// checkID checks a peer id, storage id, session id or version string.
func checkID(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > MaxIDLen:
		return fmt.Errorf("is %d bytes long, limit %d", len(s), MaxIDLen)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	}
	return nil
}
