package node

import (
	"bytes"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/protocol"
)

// TestGoPeerCreateAndFetch: one peer creates a document, another fetches it,
// and after a restart a third loads it from storage.
func TestGoPeerCreateAndFetch(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	id := protocol.NewDocumentID()
	a := dialPeer(t, n.URL, "peer-a")
	docA := newDoc(t, "title", "hello")
	a.syncDoc(id, docA, automerge.NewSyncState(docA), false)

	b := dialPeer(t, n.URL, "peer-b")
	docB := automerge.New()
	b.syncDoc(id, docB, automerge.NewSyncState(docB), true)
	if got := getString(t, docB, "title"); got != "hello" {
		t.Fatalf("peer b sees title %q", got)
	}
	n.stop()

	n2 := startNode(t, dir)
	c := dialPeer(t, n2.URL, "peer-c")
	docC := automerge.New()
	c.syncDoc(id, docC, automerge.NewSyncState(docC), true)
	if got := getString(t, docC, "title"); got != "hello" {
		t.Fatalf("after restart peer c sees title %q", got)
	}
}

func TestRequestUnknownDocument(t *testing.T) {
	n := startNode(t, t.TempDir())
	p := dialPeer(t, n.URL, "peer-a")
	doc := automerge.New()
	sm, _ := automerge.NewSyncState(doc).GenerateMessage()
	id := protocol.NewDocumentID()
	p.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: p.id, TargetID: p.server, DocumentID: id, Data: sm.Bytes()})
	m := p.recv()
	if m.Type != protocol.TypeDocUnavailable || m.DocumentID != id {
		t.Fatalf("expected doc-unavailable for %s, got %+v", id, m)
	}
}

// TestBadInputClosesOnlyThatConnection sends each kind of bad frame on its
// own connection and checks the documented error and close code, while a
// second client on the same node keeps syncing.
func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) { c.MaxMessageBytes = 64 << 10 })
	good := dialPeer(t, n.URL, "good")
	id := protocol.NewDocumentID()
	doc := newDoc(t, "k", "v0")
	ss := automerge.NewSyncState(doc)
	good.syncDoc(id, doc, ss, false)

	enc := func(m *protocol.Message) []byte {
		b, err := protocol.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name    string
		typ     websocket.MessageType
		frame   []byte
		code    protocol.CloseCode
		errText string // substring of the error message sent before the close ("" = none expected)
	}{
		{"malformed CBOR", websocket.MessageBinary, []byte{0xa1, 0x64, 't', 'y'}, protocol.CloseMalformedMessage, "malformed"},
		{"not a map", websocket.MessageBinary, []byte{0x83, 1, 2, 3}, protocol.CloseMalformedMessage, "malformed"},
		{"unknown type", websocket.MessageBinary, unknownTypeFrame(), protocol.CloseMalformedMessage, "unknown"},
		{"garbage automerge bytes", websocket.MessageBinary, enc(&protocol.Message{Type: protocol.TypeSync, SenderID: "bad", TargetID: "x", DocumentID: id, Data: []byte("definitely not an automerge sync message")}), protocol.CloseInvalidSyncData, "invalid sync data"},
		{"oversized frame", websocket.MessageBinary, bytes.Repeat([]byte{0xff}, 100<<10), protocol.CloseMessageTooBig, ""},
		{"text frame", websocket.MessageText, []byte(`{"type":"sync"}`), protocol.CloseMalformedMessage, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := dialPeer(t, n.URL, "bad")
			if err := bad.sendRaw(tc.typ, tc.frame); err != nil && tc.code != protocol.CloseMessageTooBig {
				t.Fatalf("send: %v", err) // (an oversized frame may be cut off by the close)
			}
			msg, code := bad.expectClose()
			if code != websocket.StatusCode(tc.code) {
				t.Fatalf("close code %d, want %d (%s); error message %q", code, tc.code, tc.code, msg)
			}
			if tc.errText != "" && !strings.Contains(strings.ToLower(msg), tc.errText) {
				t.Fatalf("error message %q does not mention %q", msg, tc.errText)
			}
			// The good client still syncs a new change.
			if err := doc.RootMap().Set("k", tc.name); err != nil {
				t.Fatal(err)
			}
			doc.Commit("edit", automerge.CommitOptions{AllowEmpty: true})
			good.syncDoc(id, doc, ss, false)
			check := dialPeer(t, n.URL, "check-"+string(rune('a'+i)))
			docC := automerge.New()
			check.syncDoc(id, docC, automerge.NewSyncState(docC), true)
			if got := getString(t, docC, "k"); got != tc.name {
				t.Fatalf("after %s the node holds k=%q", tc.name, got)
			}
		})
	}
}

// unknownTypeFrame is a well-formed CBOR map with an unknown message type
// (built by hand: Encode refuses unknown types).
func unknownTypeFrame() []byte {
	// {"type": "frobnicate", "senderId": "bad"}
	var b bytes.Buffer
	b.WriteByte(0xa2)
	writeText(&b, "type")
	writeText(&b, "frobnicate")
	writeText(&b, "senderId")
	writeText(&b, "bad")
	return b.Bytes()
}

func writeText(b *bytes.Buffer, s string) {
	b.WriteByte(0x60 | byte(len(s)))
	b.WriteString(s)
}

func TestHTTPEndpoints(t *testing.T) {
	n := startNode(t, t.TempDir())
	for path, want := range map[string]string{"/healthz": `"ok"`, "/readyz": `"ready"`, "/metrics": "plait_connections"} {
		body, code := httpGet(t, n.HTTP+path, nil)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d %q, want 200 containing %q", path, code, trunc(body), want)
		}
	}
	body, code := httpGet(t, n.HTTP+"/ws", nil)
	if code != 426 {
		t.Errorf("plain GET /ws: %d %q, want 426", code, body)
	}
	_, code = httpGet(t, n.HTTP+"/ws", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "https://evil.example"})
	if code != 403 {
		t.Errorf("cross-origin handshake: %d, want 403", code)
	}
}
