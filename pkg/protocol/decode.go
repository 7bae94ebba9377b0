package protocol

import (
	"math"

	"github.com/fxamacker/cbor/v2"
)

// Decoder limits. A frame is already size-capped by the transport; these
// bound what a hostile frame can make the decoder allocate or recurse into.
const (
	MaxNestedLevels  = 16   // a valid message nests 4 deep (newHeads.<id>.heads[])
	MaxArrayElements = 1024 // heads of one storage, add, remove, versions
	MaxMapPairs      = 1024 // top-level keys, newHeads entries
)

var decMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   MaxNestedLevels,
		MaxArrayElements:  MaxArrayElements,
		MaxMapPairs:       MaxMapPairs,
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// wireMessage holds the raw value of every key this package knows; other
// keys are skipped.
type wireMessage struct {
	Type                      cbor.RawMessage `cbor:"type"`
	SenderID                  cbor.RawMessage `cbor:"senderId"`
	TargetID                  cbor.RawMessage `cbor:"targetId"`
	PeerMetadata              cbor.RawMessage `cbor:"peerMetadata"`
	SupportedProtocolVersions cbor.RawMessage `cbor:"supportedProtocolVersions"`
	SelectedProtocolVersion   cbor.RawMessage `cbor:"selectedProtocolVersion"`
	Message                   cbor.RawMessage `cbor:"message"`
	DocumentID                cbor.RawMessage `cbor:"documentId"`
	Data                      cbor.RawMessage `cbor:"data"`
	SessionID                 cbor.RawMessage `cbor:"sessionId"`
	Count                     cbor.RawMessage `cbor:"count"`
	Add                       cbor.RawMessage `cbor:"add"`
	Remove                    cbor.RawMessage `cbor:"remove"`
	NewHeads                  cbor.RawMessage `cbor:"newHeads"`
}

type wirePeerMetadata struct {
	StorageID   cbor.RawMessage `cbor:"storageId"`
	IsEphemeral cbor.RawMessage `cbor:"isEphemeral"`
}

type wireHeadsAt struct {
	Heads     cbor.RawMessage `cbor:"heads"`
	Timestamp cbor.RawMessage `cbor:"timestamp"`
}

// CBOR major types and simple values used by the decoder.
const (
	majorUint   = 0
	majorBytes  = 2
	majorText   = 3
	majorArray  = 4
	majorMap    = 5
	cborFalse   = 0xf4
	cborTrue    = 0xf5
	cborNull    = 0xf6
	cborUndef   = 0xf7
	tagUint8Arr = 64 // RFC 8746 uint8 typed array, emitted by cbor-x's default encoder
)

// Decode parses one binary WebSocket frame and validates it. The frame must
// be exactly one CBOR map with string keys; unknown keys are ignored, and
// null or undefined values count as absent. Errors wrap ErrMalformed or, for
// a well-formed message of another type, ErrUnknownType. The returned message
// does not alias frame.
func Decode(frame []byte) (*Message, error) {
	if len(frame) == 0 {
		return nil, malformed("empty frame")
	}
	if frame[0]>>5 != majorMap {
		return nil, malformed("frame is not a CBOR map")
	}
	var w wireMessage
	if err := decMode.Unmarshal(frame, &w); err != nil {
		return nil, malformed("invalid CBOR: %v", err)
	}
	typ, err := decodeString(w.Type, "type")
	if err != nil {
		return nil, err
	}
	has, _, err := lookupType(typ)
	if err != nil {
		return nil, err
	}
	m := &Message{Type: typ}
	strs := []struct {
		f   field
		raw cbor.RawMessage
		key string
		dst *string
	}{
		{fSender, w.SenderID, "senderId", &m.SenderID},
		{fTarget, w.TargetID, "targetId", &m.TargetID},
		{fSelected, w.SelectedProtocolVersion, "selectedProtocolVersion", &m.SelectedProtocolVersion},
		{fErrMsg, w.Message, "message", &m.ErrorMessage},
		{fDoc, w.DocumentID, "documentId", (*string)(&m.DocumentID)},
		{fEphemeral, w.SessionID, "sessionId", &m.SessionID},
	}
	for _, s := range strs {
		if has&s.f != 0 {
			if *s.dst, err = decodeString(s.raw, s.key); err != nil {
				return nil, err
			}
		}
	}
	if has&fMeta != 0 {
		if m.PeerMetadata, err = decodePeerMetadata(w.PeerMetadata); err != nil {
			return nil, err
		}
	}
	if has&fVersions != 0 {
		if m.SupportedProtocolVersions, err = decodeStrings(w.SupportedProtocolVersions, "supportedProtocolVersions"); err != nil {
			return nil, err
		}
	}
	if has&fData != 0 {
		if m.Data, err = decodeBytes(w.Data, "data"); err != nil {
			return nil, err
		}
	}
	if has&fEphemeral != 0 {
		var ok bool
		if m.Count, ok, err = decodeNumber(w.Count, "count"); err != nil {
			return nil, err
		} else if !ok {
			return nil, malformed("ephemeral message without count")
		}
	}
	if has&fSubs != 0 {
		if m.Add, err = decodeStrings(w.Add, "add"); err != nil {
			return nil, err
		}
		if m.Remove, err = decodeStrings(w.Remove, "remove"); err != nil {
			return nil, err
		}
	}
	if has&fHeads != 0 {
		if m.NewHeads, err = decodeNewHeads(w.NewHeads); err != nil {
			return nil, err
		}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func absent(raw []byte) bool {
	return len(raw) == 0 || raw[0] == cborNull || raw[0] == cborUndef
}

func decodeString(raw []byte, key string) (string, error) {
	if absent(raw) {
		return "", nil
	}
	var s string
	if raw[0]>>5 != majorText {
		return "", malformed("%s is not a text string", key)
	}
	if err := decMode.Unmarshal(raw, &s); err != nil {
		return "", malformed("%s: %v", key, err)
	}
	return s, nil
}

// decodeStrings returns nil if raw is absent and a non-nil slice otherwise.
func decodeStrings(raw []byte, key string) ([]string, error) {
	if absent(raw) {
		return nil, nil
	}
	if raw[0]>>5 != majorArray {
		return nil, malformed("%s is not an array", key)
	}
	s := []string{}
	if err := decMode.Unmarshal(raw, &s); err != nil {
		return nil, malformed("%s is not an array of text strings", key)
	}
	return s, nil
}

// decodeBytes accepts a byte string, optionally wrapped in tag 64. A
// definite-length string is returned as a subslice of raw, which Unmarshal
// into a RawMessage already copied out of the frame.
func decodeBytes(raw []byte, key string) ([]byte, error) {
	if absent(raw) {
		return nil, nil
	}
	if len(raw) >= 2 && raw[0] == 0xd8 && raw[1] == tagUint8Arr {
		raw = raw[2:]
	}
	if len(raw) == 0 || raw[0]>>5 != majorBytes {
		return nil, malformed("%s is not a byte string", key)
	}
	switch ai := raw[0] & 0x1f; {
	case ai < 24:
		return raw[1:], nil
	case ai <= 27: // 1, 2, 4 or 8 length bytes follow
		return raw[1+1<<(ai-24):], nil
	}
	var b []byte // indefinite length: let the library join the chunks
	if err := decMode.Unmarshal(raw, &b); err != nil {
		return nil, malformed("%s: %v", key, err)
	}
	return b, nil
}

// decodeNumber accepts what JavaScript sends for a non-negative integer: a
// CBOR unsigned integer, or an integral float (cbor-x encodes every number
// of 2^32 or more as float64). ok reports whether the key was present.
func decodeNumber(raw []byte, key string) (v uint64, ok bool, err error) {
	if absent(raw) {
		return 0, false, nil
	}
	switch raw[0] {
	case 0xf9, 0xfa, 0xfb:
		var f float64
		if err := decMode.Unmarshal(raw, &f); err != nil {
			return 0, false, malformed("%s: %v", key, err)
		}
		if !(f >= 0 && f <= MaxSafeInteger && f == math.Trunc(f)) {
			return 0, false, malformed("%s %v is not a non-negative integer up to 2^53-1", key, f)
		}
		return uint64(f), true, nil
	}
	if raw[0]>>5 != majorUint {
		return 0, false, malformed("%s is not a non-negative number", key)
	}
	if err := decMode.Unmarshal(raw, &v); err != nil {
		return 0, false, malformed("%s: %v", key, err)
	}
	if v > MaxSafeInteger {
		return 0, false, malformed("%s %d exceeds 2^53-1", key, v)
	}
	return v, true, nil
}

func decodeMap(raw []byte, key string, v any) error {
	if raw[0]>>5 != majorMap {
		return malformed("%s is not a map", key)
	}
	if err := decMode.Unmarshal(raw, v); err != nil {
		return malformed("%s: %v", key, err)
	}
	return nil
}

// decodePeerMetadata never returns nil metadata without an error.
func decodePeerMetadata(raw []byte) (*PeerMetadata, error) {
	md := &PeerMetadata{}
	if absent(raw) {
		return md, nil
	}
	var w wirePeerMetadata
	if err := decodeMap(raw, "peerMetadata", &w); err != nil {
		return nil, err
	}
	var err error
	if md.StorageID, err = decodeString(w.StorageID, "peerMetadata.storageId"); err != nil {
		return nil, err
	}
	switch {
	case absent(w.IsEphemeral):
	case len(w.IsEphemeral) == 1 && (w.IsEphemeral[0] == cborFalse || w.IsEphemeral[0] == cborTrue):
		md.IsEphemeral = w.IsEphemeral[0] == cborTrue
	default:
		return nil, malformed("peerMetadata.isEphemeral is not a boolean")
	}
	return md, nil
}

func decodeNewHeads(raw []byte) (map[string]HeadsAt, error) {
	if absent(raw) {
		return nil, nil // Validate reports the missing key
	}
	var w map[string]cbor.RawMessage
	if err := decodeMap(raw, "newHeads", &w); err != nil {
		return nil, err
	}
	out := make(map[string]HeadsAt, len(w))
	for sid, raw := range w {
		key := "newHeads[" + truncate(sid) + "]"
		if absent(raw) {
			return nil, malformed("%s is empty", key)
		}
		var e wireHeadsAt
		if err := decodeMap(raw, key, &e); err != nil {
			return nil, err
		}
		heads, err := decodeStrings(e.Heads, key+".heads")
		if err != nil {
			return nil, err
		} else if heads == nil {
			return nil, malformed("%s without heads", key)
		}
		ts, ok, err := decodeNumber(e.Timestamp, key+".timestamp")
		if err != nil {
			return nil, err
		} else if !ok {
			return nil, malformed("%s without timestamp", key)
		}
		out[sid] = HeadsAt{Heads: heads, Timestamp: ts}
	}
	return out, nil
}
