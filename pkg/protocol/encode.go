package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
)

// Encode validates m and encodes it as one CBOR map with string keys, the
// way the JS client does: exactly the keys the TypeScript type of m.Type
// declares, byte strings untagged, and numbers of 2^32 or more as float64,
// since cbor-x decodes 64-bit integers to BigInt. Optional keys are omitted
// when empty (senderId, targetId of error; peerMetadata.storageId) or nil
// (supportedProtocolVersions, add, remove).
func Encode(m *Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("failed to encode message: %w", err)
	}
	has, _, _ := lookupType(m.Type)
	e := encoder{b: make([]byte, 1, 128+len(m.Data))} // b[0]: map header, patched below
	n := 0
	key := func(k string) { e.str(k); n++ }
	key("type")
	e.str(m.Type)
	if has&fSender != 0 && m.SenderID != "" {
		key("senderId")
		e.str(m.SenderID)
	}
	if has&fTarget != 0 && m.TargetID != "" {
		key("targetId")
		e.str(m.TargetID)
	}
	if has&fMeta != 0 {
		key("peerMetadata")
		md := m.PeerMetadata
		if md == nil {
			md = &PeerMetadata{}
		}
		if md.StorageID != "" {
			e.head(majorMap, 2)
			e.str("storageId")
			e.str(md.StorageID)
		} else {
			e.head(majorMap, 1)
		}
		e.str("isEphemeral")
		e.bool(md.IsEphemeral)
	}
	if has&fVersions != 0 && m.SupportedProtocolVersions != nil {
		key("supportedProtocolVersions")
		e.strs(m.SupportedProtocolVersions)
	}
	if has&fSelected != 0 {
		key("selectedProtocolVersion")
		e.str(m.SelectedProtocolVersion)
	}
	if has&fErrMsg != 0 {
		key("message")
		e.str(m.ErrorMessage)
	}
	if has&fDoc != 0 {
		key("documentId")
		e.str(string(m.DocumentID))
	}
	if has&fEphemeral != 0 {
		key("sessionId")
		e.str(m.SessionID)
		key("count")
		e.number(m.Count)
	}
	if has&fData != 0 {
		key("data")
		e.head(majorBytes, uint64(len(m.Data)))
		e.b = append(e.b, m.Data...)
	}
	if has&fSubs != 0 {
		if m.Add != nil {
			key("add")
			e.strs(m.Add)
		}
		if m.Remove != nil {
			key("remove")
			e.strs(m.Remove)
		}
	}
	if has&fHeads != 0 {
		key("newHeads")
		e.head(majorMap, uint64(len(m.NewHeads)))
		for _, sid := range slices.Sorted(maps.Keys(m.NewHeads)) {
			h := m.NewHeads[sid]
			e.str(sid)
			e.head(majorMap, 2)
			e.str("heads")
			e.strs(h.Heads)
			e.str("timestamp")
			e.number(h.Timestamp)
		}
	}
	e.b[0] = majorMap<<5 | byte(n) // n <= 9 always fits the initial byte
	return e.b, nil
}

// encoder appends CBOR data items in their shortest form.
type encoder struct{ b []byte }

func (e *encoder) head(major byte, n uint64) {
	m := major << 5
	switch {
	case n < 24:
		e.b = append(e.b, m|byte(n))
	case n <= math.MaxUint8:
		e.b = append(e.b, m|24, byte(n))
	case n <= math.MaxUint16:
		e.b = binary.BigEndian.AppendUint16(append(e.b, m|25), uint16(n))
	case n <= math.MaxUint32:
		e.b = binary.BigEndian.AppendUint32(append(e.b, m|26), uint32(n))
	default:
		e.b = binary.BigEndian.AppendUint64(append(e.b, m|27), n)
	}
}

func (e *encoder) str(s string) {
	e.head(majorText, uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) strs(ss []string) {
	e.head(majorArray, uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, cborTrue)
	} else {
		e.b = append(e.b, cborFalse)
	}
}

// number writes v as cbor-x writes a JavaScript number: an unsigned integer
// below 2^32, a float64 above (exact, as Validate bounds v by 2^53-1).
func (e *encoder) number(v uint64) {
	if v <= math.MaxUint32 {
		e.head(majorUint, v)
		return
	}
	e.b = binary.BigEndian.AppendUint64(append(e.b, 0xfb), math.Float64bits(float64(v)))
}

// Targeted is a message encoded once for many receivers: the frames differ
// only in their targetId. Make it with EncodeTargeted.
type Targeted struct {
	prefix, suffix []byte // the frame before and after targetId's value
}

// EncodeTargeted encodes m (whose type carries a targetId, such as
// ephemeral or sync) once, so that the frame for each receiver costs a
// copy instead of an encoding. m.TargetID must be set (to anything); it is
// replaced by each For call.
func EncodeTargeted(m *Message) (*Targeted, error) {
	has, _, _ := lookupType(m.Type)
	if has&fTarget == 0 || m.TargetID == "" {
		return nil, fmt.Errorf("failed to encode message: a %q message with a targetId is required", m.Type)
	}
	b, err := Encode(m)
	if err != nil {
		return nil, err
	}
	// Encode writes type, senderId, then targetId: find targetId's value.
	e := encoder{b: []byte{b[0]}}
	e.str("type")
	e.str(m.Type)
	if has&fSender != 0 && m.SenderID != "" {
		e.str("senderId")
		e.str(m.SenderID)
	}
	e.str("targetId")
	start := len(e.b)
	e.str(m.TargetID)
	end := len(e.b)
	if end > len(b) || string(b[:end]) != string(e.b) {
		return nil, errors.New("failed to encode message: unexpected key order") // Encode changed; see its order
	}
	return &Targeted{prefix: b[:start], suffix: b[end:]}, nil
}

// For returns the frame for the receiver target: a new slice each call.
func (t *Targeted) For(target string) []byte {
	e := encoder{b: make([]byte, 0, len(t.prefix)+len(target)+9+len(t.suffix))}
	e.b = append(e.b, t.prefix...)
	e.str(target)
	e.b = append(e.b, t.suffix...)
	return e.b
}
