package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

const (
	testDoc     DocumentID = "148vjpuxYXixb8DcbaWyeGv2q3u" // bytes 0x00, 0x11, ... 0xff
	testHead               = "2u7kS5mSQupZCjEf4PHMXZtTBDdf5wsBr4kk3HHLpWDjgBR7TM"
	testStorage            = "9e7d5c3b-1a2f-4e6d-8c0b-7a5f3e1d9c2b"
)

// roundTripCases holds one valid message of every type, and the keys Encode
// must write for it.
var roundTripCases = []struct {
	m    Message
	keys []string
}{
	{Message{Type: TypeJoin, SenderID: "a", PeerMetadata: &PeerMetadata{IsEphemeral: true}, SupportedProtocolVersions: []string{ProtocolVersion}},
		[]string{"type", "senderId", "peerMetadata", "supportedProtocolVersions"}},
	{Message{Type: TypeJoin, SenderID: "a", PeerMetadata: &PeerMetadata{}},
		[]string{"type", "senderId", "peerMetadata"}},
	{Message{Type: TypePeer, SenderID: "s", TargetID: "a", PeerMetadata: &PeerMetadata{StorageID: testStorage}, SelectedProtocolVersion: ProtocolVersion},
		[]string{"type", "senderId", "targetId", "peerMetadata", "selectedProtocolVersion"}},
	{Message{Type: TypeLeave, SenderID: "a"}, []string{"type", "senderId"}},
	{Message{Type: TypeError, SenderID: "s", TargetID: "a", ErrorMessage: "unsupported protocol version"},
		[]string{"type", "senderId", "targetId", "message"}},
	{Message{Type: TypeError}, []string{"type", "message"}},
	{Message{Type: TypeSync, SenderID: "a", TargetID: "s", DocumentID: testDoc, Data: []byte{0x42, 1}},
		[]string{"type", "senderId", "targetId", "documentId", "data"}},
	{Message{Type: TypeRequest, SenderID: "a", TargetID: "s", DocumentID: testDoc, Data: bytes.Repeat([]byte{7}, 70000)},
		[]string{"type", "senderId", "targetId", "documentId", "data"}},
	{Message{Type: TypeDocUnavailable, SenderID: "s", TargetID: "a", DocumentID: testDoc},
		[]string{"type", "senderId", "targetId", "documentId"}},
	{Message{Type: TypeEphemeral, SenderID: "a", TargetID: "s", DocumentID: testDoc, Data: []byte{0xa0}, SessionID: "x1"},
		[]string{"type", "senderId", "targetId", "documentId", "sessionId", "count", "data"}},
	{Message{Type: TypeEphemeral, SenderID: "a", TargetID: "s", DocumentID: testDoc, Data: []byte{0xa0}, SessionID: "x1", Count: MaxSafeInteger},
		[]string{"type", "senderId", "targetId", "documentId", "sessionId", "count", "data"}},
	{Message{Type: TypeRemoteSubscriptionChange, SenderID: "a", TargetID: "s"}, []string{"type", "senderId", "targetId"}},
	{Message{Type: TypeRemoteSubscriptionChange, SenderID: "a", TargetID: "s", Add: []string{}, Remove: []string{testStorage, "other"}},
		[]string{"type", "senderId", "targetId", "add", "remove"}},
	{Message{Type: TypeRemoteHeadsChanged, SenderID: "s", TargetID: "a", DocumentID: testDoc,
		NewHeads: map[string]HeadsAt{testStorage: {Heads: []string{testHead}, Timestamp: 1767225600123}, "b": {Heads: []string{}, Timestamp: 0}}},
		[]string{"type", "senderId", "targetId", "documentId", "newHeads"}},
}

func TestRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range roundTripCases {
		t.Run(c.m.Type, func(t *testing.T) {
			seen[c.m.Type] = true
			enc, err := Encode(&c.m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := Decode(enc)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, &c.m) {
				t.Fatalf("round trip\n got %+v\nwant %+v", got, &c.m)
			}
			var raw map[string]cbor.RawMessage
			if err := cbor.Unmarshal(enc, &raw); err != nil {
				t.Fatal(err)
			}
			var keys []string
			for k := range raw {
				keys = append(keys, k)
			}
			if slices.Sort(keys); !slices.Equal(keys, slices.Sorted(slices.Values(c.keys))) {
				t.Errorf("keys = %v, want %v", keys, c.keys)
			}
			if d, ok := raw["data"]; ok && d[0]>>5 != majorBytes {
				t.Errorf("data is not an untagged byte string: %x", d[:1])
			}
		})
	}
	for typ := range schema {
		if !seen[typ] {
			t.Errorf("no round trip case of type %q", typ)
		}
	}
}

func TestEncodeNumbers(t *testing.T) {
	m := Message{Type: TypeEphemeral, SenderID: "a", TargetID: "s", DocumentID: testDoc, Data: []byte{1}, SessionID: "x"}
	for _, c := range []struct {
		count uint64
		want  string
	}{
		{0, "00"}, {23, "17"}, {24, "1818"}, {math.MaxUint32, "1affffffff"},
		{math.MaxUint32 + 1, "fb41f0000000000000"}, // cbor-x decodes 0x1b integers to BigInt
		{MaxSafeInteger, "fb433fffffffffffff"},
	} {
		m.Count = c.count
		enc, err := Encode(&m)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := hex.DecodeString("65636f756e74" + c.want); !bytes.Contains(enc, want) {
			t.Errorf("count %d: %x does not contain count:%s", c.count, enc, c.want)
		}
	}
	m.Count = MaxSafeInteger + 1
	if _, err := Encode(&m); !errors.Is(err, ErrMalformed) {
		t.Errorf("Encode of count 2^53: %v, want ErrMalformed", err)
	}
}

func TestEncodeNilPeerMetadata(t *testing.T) {
	enc, err := Encode(&Message{Type: TypeJoin, SenderID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(enc)
	if err != nil || m.PeerMetadata == nil || *m.PeerMetadata != (PeerMetadata{}) {
		t.Fatalf("Decode = %+v, %v; want empty peer metadata", m, err)
	}
	if !bytes.Contains(enc, append([]byte("\x6cpeerMetadata\xa1\x6bisEphemeral"), cborFalse)) {
		t.Errorf("%x lacks peerMetadata {isEphemeral: false}", enc)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		m    Message
		want string
	}{
		{Message{}, "malformed message: message without type"},
		{Message{Type: "subscribe"}, `unknown message type "subscribe"`},
		{Message{Type: TypeSync, SenderID: "a", TargetID: "s", Data: []byte{1}}, "malformed message: sync message without documentId"},
		{Message{Type: TypeSync, SenderID: "a", TargetID: "s", DocumentID: testDoc}, "malformed message: sync message without data"},
		{Message{Type: TypeSync, SenderID: "a", TargetID: "s", DocumentID: DocumentID(testDoc.URL()), Data: []byte{1}}, "is a URL, want a bare id"},
		{Message{Type: TypeJoin}, "malformed message: join message without senderId"},
		{Message{Type: TypePeer, SenderID: "s", TargetID: "a"}, "peer message without selectedProtocolVersion"},
		{Message{Type: TypeLeave, SenderID: strings.Repeat("x", MaxIDLen+1)}, "senderId is 257 bytes long, limit 256"},
		{Message{Type: TypeLeave, SenderID: "\xff"}, "senderId is not valid UTF-8"},
		{Message{Type: TypeEphemeral, SenderID: "a", TargetID: "s", DocumentID: testDoc, Data: []byte{1}}, "ephemeral message without sessionId"},
		{Message{Type: TypeRemoteSubscriptionChange, SenderID: "a", TargetID: "s", Add: []string{""}}, "storage id is empty"},
		{Message{Type: TypeRemoteHeadsChanged, SenderID: "a", TargetID: "s", DocumentID: testDoc}, "without newHeads"},
		{Message{Type: TypeRemoteHeadsChanged, SenderID: "a", TargetID: "s", DocumentID: testDoc,
			NewHeads: map[string]HeadsAt{"x": {Heads: []string{strings.Repeat("ab", 32)}}}}, "invalid head"},
		{Message{Type: TypeRemoteHeadsChanged, SenderID: "a", TargetID: "s", DocumentID: testDoc,
			NewHeads: map[string]HeadsAt{"x": {Timestamp: 1 << 60}}}, "timestamp 1152921504606846976 exceeds 2^53-1"},
	} {
		err := c.m.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.m, err, c.want)
		}
		if _, encErr := Encode(&c.m); encErr == nil {
			t.Errorf("Encode(%+v) succeeded", c.m)
		}
	}
	if err := (*Message)(nil).Validate(); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil Validate = %v", err)
	}
}

// frame encodes a map for negative tests; values may be cbor.RawMessage.
func frame(t *testing.T, m map[string]any) []byte {
	t.Helper()
	em, err := cbor.EncOptions{Sort: cbor.SortBytewiseLexical}.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func raw(h string) cbor.RawMessage {
	b, err := hex.DecodeString(h)
	if err != nil {
		panic(err)
	}
	return b
}

func syncFields() map[string]any {
	return map[string]any{"type": "sync", "senderId": "a", "targetId": "s", "documentId": string(testDoc), "data": []byte{0x42}}
}

func ephemeralFields() map[string]any {
	m := syncFields()
	m["type"], m["sessionId"], m["count"] = "ephemeral", "x", 1
	return m
}

func with(base map[string]any, kv ...any) map[string]any {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(base, kv[i].(string))
		} else {
			base[kv[i].(string)] = kv[i+1]
		}
	}
	return base
}

func TestDecodeErrors(t *testing.T) {
	validSync := frame(t, syncFields())
	badChecksum := []byte(testDoc)
	badChecksum[5]++
	nested := append(bytes.Repeat([]byte{0x81}, 200), 0x00)
	for _, c := range []struct {
		name  string
		frame []byte
		want  string // substring of the error; every error wraps ErrMalformed unless it says "unknown"
	}{
		{"empty", nil, "empty frame"},
		{"array", raw("8100"), "frame is not a CBOR map"},
		{"text", raw("6161"), "frame is not a CBOR map"},
		{"tagged map", raw("d818a0"), "frame is not a CBOR map"},
		{"trailing bytes", append(slices.Clone(validSync), 0x00), "extraneous data"},
		{"two maps", append(slices.Clone(validSync), validSync...), "extraneous data"},
		{"truncated", validSync[:len(validSync)-1], "invalid CBOR"},
		{"unknown type", frame(t, with(syncFields(), "type", "subscribe")), `unknown message type "subscribe"`},
		{"no type", frame(t, with(syncFields(), "type", nil)), "message without type"},
		{"type is int", frame(t, with(syncFields(), "type", 1)), "type is not a text string"},
		{"null type", frame(t, with(syncFields(), "type", raw("f6"))), "message without type"},
		{"int keys", raw("a20161610302"), "message without type"},
		{"duplicate key", raw("a2647479706564" + "73796e63" + "6474797065" + "6473796e63"), "invalid CBOR"},
		{"join without senderId", frame(t, map[string]any{"type": "join"}), "join message without senderId"},
		{"case-sensitive keys", frame(t, map[string]any{"type": "join", "SenderId": "a"}), "join message without senderId"},
		{"sync without documentId", frame(t, with(syncFields(), "documentId", nil)), "malformed message: sync message without documentId"},
		{"sync without data", frame(t, with(syncFields(), "data", nil)), "sync message without data"},
		{"sync with empty data", frame(t, with(syncFields(), "data", []byte{})), "sync message without data"},
		{"sync with undefined data", frame(t, with(syncFields(), "data", raw("f7"))), "sync message without data"},
		{"data is text", frame(t, with(syncFields(), "data", "B")), "data is not a byte string"},
		{"data is array", frame(t, with(syncFields(), "data", []int{1})), "data is not a byte string"},
		{"data tag 65", frame(t, with(syncFields(), "data", raw("d8414142"))), "data is not a byte string"},
		{"data tag 64 around text", frame(t, with(syncFields(), "data", raw("d8406142"))), "data is not a byte string"},
		{"request without targetId", frame(t, with(syncFields(), "type", "request", "targetId", nil)), "request message without targetId"},
		{"empty senderId", frame(t, with(syncFields(), "senderId", "")), "sync message without senderId"},
		{"long senderId", frame(t, with(syncFields(), "senderId", strings.Repeat("p", 300))), "senderId is 300 bytes long"},
		{"invalid UTF-8 senderId", frame(t, with(syncFields(), "senderId", raw("62c328"))), "senderId: cbor: invalid UTF-8"},
		{"senderId is bytes", frame(t, with(syncFields(), "senderId", []byte("a"))), "senderId is not a text string"},
		{"documentId bad checksum", frame(t, with(syncFields(), "documentId", string(badChecksum))), "bad checksum"},
		{"documentId 20 bytes", frame(t, with(syncFields(), "documentId", bs58checkEncode(strings.Repeat("x", 20)))), "20 bytes, want 16"},
		{"documentId URL", frame(t, with(syncFields(), "documentId", testDoc.URL())), "is a URL"},
		{"documentId not base58", frame(t, with(syncFields(), "documentId", "0OIl")), "not base58"},
		{"documentId long", frame(t, with(syncFields(), "documentId", strings.Repeat("2", 100000))), "length 100000 out of range"},
		{"documentId int", frame(t, with(syncFields(), "documentId", 7)), "documentId is not a text string"},
		{"doc-unavailable without documentId", frame(t, map[string]any{"type": "doc-unavailable", "senderId": "a", "targetId": "s"}), "doc-unavailable message without documentId"},
		{"ephemeral without count", frame(t, with(ephemeralFields(), "count", nil)), "ephemeral message without count"},
		{"ephemeral null count", frame(t, with(ephemeralFields(), "count", raw("f6"))), "ephemeral message without count"},
		{"ephemeral without sessionId", frame(t, with(ephemeralFields(), "sessionId", nil)), "ephemeral message without sessionId"},
		{"negative count", frame(t, with(ephemeralFields(), "count", -1)), "count is not a non-negative number"},
		{"negative float count", frame(t, with(ephemeralFields(), "count", -1.0)), "count -1 is not a non-negative integer"},
		{"fractional count", frame(t, with(ephemeralFields(), "count", 2.5)), "count 2.5 is not a non-negative integer"},
		{"NaN count", frame(t, with(ephemeralFields(), "count", raw("f97e00"))), "count NaN"},
		{"Inf count", frame(t, with(ephemeralFields(), "count", raw("fb7ff0000000000000"))), "count +Inf"},
		{"huge float count", frame(t, with(ephemeralFields(), "count", 1e300)), "count 1e+300"},
		{"count 2^53", frame(t, with(ephemeralFields(), "count", uint64(1<<53))), "count 9007199254740992 exceeds"},
		{"count is text", frame(t, with(ephemeralFields(), "count", "1")), "count is not a non-negative number"},
		{"count is bignum", frame(t, with(ephemeralFields(), "count", raw("c24101"))), "count is not a non-negative number"},
		{"count is bool", frame(t, with(ephemeralFields(), "count", true)), "count is not a non-negative number"},
		{"peerMetadata is array", frame(t, map[string]any{"type": "join", "senderId": "a", "peerMetadata": []string{}}), "peerMetadata is not a map"},
		{"isEphemeral is int", frame(t, map[string]any{"type": "join", "senderId": "a", "peerMetadata": map[string]any{"isEphemeral": 1}}), "isEphemeral is not a boolean"},
		{"storageId is int", frame(t, map[string]any{"type": "join", "senderId": "a", "peerMetadata": map[string]any{"storageId": 1}}), "storageId is not a text string"},
		{"versions not array", frame(t, map[string]any{"type": "join", "senderId": "a", "supportedProtocolVersions": "1"}), "supportedProtocolVersions is not an array"},
		{"versions of ints", frame(t, map[string]any{"type": "join", "senderId": "a", "supportedProtocolVersions": []int{1}}), "not an array of text strings"},
		{"peer without targetId", frame(t, map[string]any{"type": "peer", "senderId": "s", "selectedProtocolVersion": "1"}), "peer message without targetId"},
		{"add not array", frame(t, map[string]any{"type": "remote-subscription-change", "senderId": "a", "targetId": "s", "add": "x"}), "add is not an array"},
		{"add with int", frame(t, map[string]any{"type": "remote-subscription-change", "senderId": "a", "targetId": "s", "add": []any{"x", 1}}), "add is not an array of text strings"},
		{"remove with empty id", frame(t, map[string]any{"type": "remote-subscription-change", "senderId": "a", "targetId": "s", "remove": []string{""}}), "storage id is empty"},
		{"newHeads missing", frame(t, map[string]any{"type": "remote-heads-changed", "senderId": "a", "targetId": "s", "documentId": string(testDoc)}), "without newHeads"},
		{"newHeads not map", frame(t, map[string]any{"type": "remote-heads-changed", "senderId": "a", "targetId": "s", "documentId": string(testDoc), "newHeads": []string{}}), "newHeads is not a map"},
		{"newHeads int key", frame(t, map[string]any{"type": "remote-heads-changed", "senderId": "a", "targetId": "s", "documentId": string(testDoc), "newHeads": map[int]any{1: map[string]any{}}}), "newHeads: cbor"},
		{"newHeads without heads", frame(t, map[string]any{"type": "remote-heads-changed", "senderId": "a", "targetId": "s", "documentId": string(testDoc),
			"newHeads": map[string]any{"x": map[string]any{"timestamp": 1}}}), "newHeads[x] without heads"},
		{"newHeads without timestamp", frame(t, map[string]any{"type": "remote-heads-changed", "senderId": "a", "targetId": "s", "documentId": string(testDoc),
			"newHeads": map[string]any{"x": map[string]any{"heads": []string{}}}}), "newHeads[x] without timestamp"},
		{"newHeads null entry", frame(t, map[string]any{"type": "remote-heads-changed", "senderId": "a", "targetId": "s", "documentId": string(testDoc),
			"newHeads": map[string]any{"x": nil}}), "newHeads[x] is empty"},
		{"negative timestamp", frame(t, map[string]any{"type": "remote-heads-changed", "senderId": "a", "targetId": "s", "documentId": string(testDoc),
			"newHeads": map[string]any{"x": map[string]any{"heads": []string{}, "timestamp": -5.0}}}), "timestamp -5 is not"},
		{"hex head", frame(t, map[string]any{"type": "remote-heads-changed", "senderId": "a", "targetId": "s", "documentId": string(testDoc),
			"newHeads": map[string]any{"x": map[string]any{"heads": []string{strings.Repeat("0f", 32)}, "timestamp": 1}}}), "invalid head"},
		{"deeply nested junk", frame(t, with(syncFields(), "junk", raw(hex.EncodeToString(nested)))), "exceeded max nested level"},
		{"huge byte string", raw("a164646174615affffffff00"), "invalid CBOR"},
		{"huge array", raw("a1616a9b7fffffffffffffff"), "invalid CBOR"},
		{"huge map", raw("bb0000000100000000"), "invalid CBOR"},
		{"many array elements", frame(t, with(syncFields(), "junk", make([]int, MaxArrayElements+1))), "exceeded max number of elements"},
		{"indefinite map without break", raw("bf6474797065"), "invalid CBOR"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(c.frame)
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", m)
			}
			if m != nil {
				t.Errorf("Decode returned a message with the error")
			}
			sentinel := ErrMalformed
			if strings.HasPrefix(c.want, "unknown") {
				sentinel = ErrUnknownType
			}
			if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Decode error %q, want %q wrapping %v", err, c.want, sentinel)
			}
		})
	}
}

func TestDecodeLenient(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame []byte
		check func(*Message) bool
	}{
		{"indefinite data", frame(t, with(syncFields(), "data", raw("5f420102410340ff"))),
			func(m *Message) bool { return bytes.Equal(m.Data, []byte{1, 2, 3}) }},
		{"tag 64 data", frame(t, with(syncFields(), "data", raw("d8404142"))),
			func(m *Message) bool { return bytes.Equal(m.Data, []byte{0x42}) }},
		{"float32 count", frame(t, with(ephemeralFields(), "count", raw("fa40400000"))),
			func(m *Message) bool { return m.Count == 3 }},
		{"negative zero count", frame(t, with(ephemeralFields(), "count", raw("f98000"))),
			func(m *Message) bool { return m.Count == 0 }},
		{"count 2^53-1 as float", frame(t, with(ephemeralFields(), "count", float64(MaxSafeInteger))),
			func(m *Message) bool { return m.Count == MaxSafeInteger }},
		{"unknown keys of any shape", frame(t, with(syncFields(), "x", map[string]any{"a": []any{1.5, nil, raw("f7")}}, "y", raw("c11a5f000000"))),
			func(m *Message) bool { return m.Type == TypeSync }},
		{"fields foreign to the type are dropped", frame(t, map[string]any{"type": "leave", "senderId": "a", "data": 5, "documentId": 1}),
			func(m *Message) bool { return reflect.DeepEqual(m, &Message{Type: TypeLeave, SenderID: "a"}) }},
		{"null peerMetadata", frame(t, map[string]any{"type": "join", "senderId": "a", "peerMetadata": nil}),
			func(m *Message) bool { return m.PeerMetadata != nil && *m.PeerMetadata == PeerMetadata{} }},
		{"supportedProtocolVersions null", frame(t, map[string]any{"type": "join", "senderId": "a", "supportedProtocolVersions": nil}),
			func(m *Message) bool { return m.SupportedProtocolVersions == nil }},
		{"non-minimal lengths as cbor-x writes them", raw("b90002647479706565657272" + "6f72" + "676d657373616765" + "7900026869"),
			func(m *Message) bool { return m.Type == TypeError && m.ErrorMessage == "hi" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(c.frame)
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(m) {
				t.Fatalf("unexpected %+v", m)
			}
		})
	}
}

// TestDecodeDoesNotAlias checks that the message survives reuse of the frame
// buffer, as a transport reading into a pooled buffer would do.
func TestDecodeDoesNotAlias(t *testing.T) {
	f := frame(t, syncFields())
	m, err := Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	clear(f)
	if !bytes.Equal(m.Data, []byte{0x42}) || m.SenderID != "a" {
		t.Fatalf("message changed with its frame: %+v", m)
	}
}

func TestCloseCodeString(t *testing.T) {
	for c, want := range map[CloseCode]string{
		CloseNormal:         "normal (1000)",
		CloseServiceRestart: "service restart (1012)",
		CloseSlowConsumer:   "slow consumer (4429)",
		CloseCode(4999):     "close code (4999)",
	} {
		if got := c.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(c), got, want)
		}
	}
	for c := range closeCodeNames {
		if c < 1000 || c > 4999 || (c >= 1016 && c < 4000) {
			t.Errorf("close code %d outside the sendable ranges", int(c))
		}
	}
}

// TestEncodeTargeted: a frame made for a receiver decodes to the message
// with that receiver as targetId, byte for byte what Encode makes.
func TestEncodeTargeted(t *testing.T) {
	m := &Message{Type: TypeEphemeral, SenderID: "sender", TargetID: "-", DocumentID: NewDocumentID(), SessionID: "s", Count: 7, Data: []byte{1, 2, 3}}
	tg, err := EncodeTargeted(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"a", "peer-" + strings.Repeat("x", 200)} {
		want := *m
		want.TargetID = target
		wantB, err := Encode(&want)
		if err != nil {
			t.Fatal(err)
		}
		got := tg.For(target)
		if !bytes.Equal(got, wantB) {
			t.Fatalf("frame for %q differs from Encode's", target[:min(len(target), 10)])
		}
		dm, err := Decode(got)
		if err != nil || dm.TargetID != target || !bytes.Equal(dm.Data, m.Data) {
			t.Fatalf("decoded %+v, %v", dm, err)
		}
	}
	if _, err := EncodeTargeted(&Message{Type: TypeEphemeral, SenderID: "s", DocumentID: m.DocumentID, SessionID: "s", Data: []byte{1}}); err == nil {
		t.Fatal("a message without targetId was encoded")
	}
}
