package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.go.cbor from Encode")

// goldenExpect is the "expect" object of a golden NAME.json, in the JS
// field names; gen.mjs writes it from the message the JS side encoded.
type goldenExpect struct {
	Type         string `json:"type"`
	SenderID     string `json:"senderId"`
	TargetID     string `json:"targetId"`
	PeerMetadata *struct {
		StorageID   string `json:"storageId"`
		IsEphemeral bool   `json:"isEphemeral"`
	} `json:"peerMetadata"`
	SupportedProtocolVersions []string `json:"supportedProtocolVersions"`
	SelectedProtocolVersion   string   `json:"selectedProtocolVersion"`
	Message                   string   `json:"message"`
	DocumentID                string   `json:"documentId"`
	Data                      string   `json:"data"`
	SessionID                 string   `json:"sessionId"`
	Count                     uint64   `json:"count"`
	Add                       []string `json:"add"`
	Remove                    []string `json:"remove"`
	NewHeads                  map[string]struct {
		Heads     []string `json:"heads"`
		Timestamp uint64   `json:"timestamp"`
	} `json:"newHeads"`
}

func (e goldenExpect) message(t *testing.T) *Message {
	t.Helper()
	data, err := hex.DecodeString(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	m := &Message{
		Type: e.Type, SenderID: e.SenderID, TargetID: e.TargetID,
		SupportedProtocolVersions: e.SupportedProtocolVersions,
		SelectedProtocolVersion:   e.SelectedProtocolVersion,
		ErrorMessage:              e.Message, DocumentID: DocumentID(e.DocumentID),
		SessionID: e.SessionID, Count: e.Count, Add: e.Add, Remove: e.Remove,
	}
	if len(data) > 0 {
		m.Data = data
	}
	if e.PeerMetadata != nil || e.Type == TypeJoin || e.Type == TypePeer {
		m.PeerMetadata = &PeerMetadata{}
		if e.PeerMetadata != nil {
			*m.PeerMetadata = PeerMetadata{StorageID: e.PeerMetadata.StorageID, IsEphemeral: e.PeerMetadata.IsEphemeral}
		}
	}
	if e.NewHeads != nil {
		m.NewHeads = map[string]HeadsAt{}
		for k, v := range e.NewHeads {
			m.NewHeads[k] = HeadsAt{Heads: v.Heads, Timestamp: v.Timestamp}
		}
	}
	return m
}

func goldenNames(t testing.TB) []string {
	files, err := filepath.Glob("testdata/golden/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden vectors: %v", err)
	}
	for i, f := range files {
		files[i] = strings.TrimSuffix(f, ".json")
	}
	return files
}

// TestGolden decodes every frame the real JS encoder produced, checks every
// field, and checks that Encode writes the recorded Go encoding, which
// `node gen.mjs --check` verified the JS decoder reads back correctly.
func TestGolden(t *testing.T) {
	seen := map[string]bool{}
	for _, base := range goldenNames(t) {
		t.Run(filepath.Base(base), func(t *testing.T) {
			var desc struct {
				Description string       `json:"description"`
				Expect      goldenExpect `json:"expect"`
			}
			raw, err := os.ReadFile(base + ".json")
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields() // a JS field Go does not model fails here
			if err := dec.Decode(&desc); err != nil {
				t.Fatal(err)
			}
			frame, err := os.ReadFile(base + ".cbor")
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(frame)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if want := desc.Expect.message(t); !reflect.DeepEqual(got, want) {
				t.Fatalf("Decode mismatch (%s)\n got %+v\nwant %+v", desc.Description, got, want)
			}
			seen[got.Type] = true

			enc, err := Encode(got)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if *update {
				if err := os.WriteFile(base+".go.cbor", enc, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			wantEnc, err := os.ReadFile(base + ".go.cbor")
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if !bytes.Equal(enc, wantEnc) {
				t.Fatalf("Encode changed:\n got %x\nwant %x", enc, wantEnc)
			}
			again, err := Decode(enc)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("Decode(Encode(m)) = %+v, %v; want %+v", again, err, got)
			}
		})
	}
	for typ := range schema {
		if !seen[typ] {
			t.Errorf("no golden vector of type %q", typ)
		}
	}
}
