package node

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/protocol"
)

func writeKeyFile(t *testing.T, ids ...string) string {
	t.Helper()
	var b strings.Builder
	for _, id := range ids {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		b.WriteString(id + ":" + base64.StdEncoding.EncodeToString(k) + "\n")
	}
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// storeWithSecret syncs a document holding secret into a node on dir (with
// the key file, or none), stops the node and returns the store file's bytes.
func storeWithSecret(t *testing.T, dir, keyFile, secret string) (protocol.DocumentID, []byte) {
	t.Helper()
	n := startNode(t, dir, func(c *Config) { c.EncryptionKeys = keyFile })
	id := protocol.NewDocumentID()
	p := dialPeer(t, n.URL, "writer")
	doc := newDoc(t, "secret", secret)
	p.syncDoc(id, doc, automerge.NewSyncState(doc), false)
	n.stop()
	b, err := os.ReadFile(filepath.Join(dir, "plait.db"))
	if err != nil {
		t.Fatal(err)
	}
	return id, b
}

// TestEncryptionAtRest: with a key file the store file holds no plaintext
// of a document (without one it does: the check can fail); a restarted
// node with the key serves the document; with another key it refuses it.
func TestEncryptionAtRest(t *testing.T) {
	secret := "the-launch-code-is-" + time.Now().Format("150405.000000")
	if _, plain := storeWithSecret(t, t.TempDir(), "", secret); !bytes.Contains(plain, []byte(secret)) {
		t.Fatal("control: without encryption the secret should be in the store file")
	}
	dir := t.TempDir()
	keys := writeKeyFile(t, "k1")
	id, sealed := storeWithSecret(t, dir, keys, secret)
	if bytes.Contains(sealed, []byte(secret)) {
		t.Fatal("the store file holds the document's plaintext although encryption is on")
	}

	n := startNode(t, dir, func(c *Config) { c.EncryptionKeys = keys })
	r := dialPeer(t, n.URL, "reader")
	doc := automerge.New()
	r.syncDoc(id, doc, automerge.NewSyncState(doc), true)
	if got := getString(t, doc, "secret"); got != secret {
		t.Fatalf("after a restart with the key: %q", got)
	}
	n.stop()

	wrong := startNode(t, dir, func(c *Config) { c.EncryptionKeys = writeKeyFile(t, "k1") })
	w := dialPeer(t, wrong.URL, "reader-2")
	doc2 := automerge.New()
	sm, _ := automerge.NewSyncState(doc2).GenerateMessage()
	w.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: "reader-2", TargetID: w.server, DocumentID: id, Data: sm.Bytes()})
	for {
		m := w.recv()
		if m.Type == protocol.TypeDocUnavailable {
			break // the node cannot read it, and says so; it serves no garbage
		}
		if m.Type == protocol.TypeSync {
			t.Fatal("a node with the wrong key served the document")
		}
	}
}

func TestEncryptionKeyFileErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad")
	_ = os.WriteFile(bad, []byte("k1:c2hvcnQ=\n"), 0o600)
	for name, path := range map[string]string{"missing": filepath.Join(t.TempDir(), "nope"), "short key": bad} {
		cfg, err := ParseConfig([]string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--encryption-key-file", path}, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "encryption-key-file") {
			t.Errorf("%s: New = %v, want an error naming encryption-key-file", name, err)
		}
	}
}
