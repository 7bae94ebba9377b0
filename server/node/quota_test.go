package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// bigDoc is a document whose one change carries about size bytes.
func bigDoc(t *testing.T, size int) *automerge.Doc {
	t.Helper()
	doc := automerge.New()
	if err := doc.RootMap().Set("blob", strings.Repeat("x", size)); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit("big"); err != nil {
		t.Fatal(err)
	}
	return doc
}

// pushRefused sends doc's changes for id and expects the node to refuse
// them: it returns the error message and the close code.
func pushRefused(t *testing.T, p *goPeer, id protocol.DocumentID, doc *automerge.Doc) (string, websocket.StatusCode) {
	t.Helper()
	ss := automerge.NewSyncState(doc)
	for range 10 { // bounded: the first messages carry heads, then the changes
		if sm, ok := ss.GenerateMessage(); ok {
			p.send(&protocol.Message{Type: protocol.TypeSync, SenderID: p.id, TargetID: p.server, DocumentID: id, Data: sm.Bytes()})
		}
		m, err := p.next(5e9)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				t.Fatalf("closed without an error message first: %v", err)
			}
			t.Fatal(err)
		}
		if m.Type == protocol.TypeError {
			_, code := p.expectClose()
			return m.ErrorMessage, code
		}
		if m.Type == protocol.TypeSync {
			if _, err := ss.ReceiveMessage(m.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Fatal("the node took the change")
	return "", 0
}

// TestQuotas: --max-docs-per-user refuses a user's next document with 429
// and a JSON error, a user override raises it; --max-doc-bytes refuses an
// edit past it with an error naming the bound and close 4413, nothing
// stored; a user's override applies to the documents they own, a
// document's override to that document; both limits are counted.
func TestQuotas(t *testing.T) {
	e := startOIDC(t)
	free := protocol.NewDocumentID()
	qf := filepath.Join(t.TempDir(), "quotas.json")
	if err := os.WriteFile(qf, fmt.Appendf(nil, `{"users": {"oidc:bella": {"maxDocs": 3, "maxDocBytes": 1048576}},
		"documents": {%q: {"maxDocBytes": 0}}}`, string(free)), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, t.TempDir(), e.configure(""), func(c *Config) {
		c.MaxDocBytes, c.MaxDocsPerUser, c.QuotaFile = 64<<10, 2, qf
	})
	_, olive, _ := login(t, e, n, n, "olive")
	_, bella, _ := login(t, e, n, n, "bella")
	_, cara, _ := login(t, e, n, n, "cara")
	claim := func(tok string, id protocol.DocumentID) (int, map[string]any) {
		return api(t, "POST", n.HTTP+"/api/docs", tok, map[string]string{"documentId": string(id)})
	}
	var oliveDoc, bellaDoc protocol.DocumentID
	for i := range 3 {
		id := protocol.NewDocumentID()
		code, out := claim(olive, id)
		if i < 2 && code != 201 {
			t.Fatalf("olive's document %d: %d %v", i, code, out)
		}
		if i == 2 && (code != 429 || !strings.Contains(fmt.Sprint(out["error"]), "max-docs-per-user 2")) {
			t.Fatalf("olive's third document: %d %v, want 429 naming the limit", code, out)
		}
		if i == 0 {
			oliveDoc = id
		}
	}
	for i := range 4 {
		id := protocol.NewDocumentID()
		code, out := claim(bella, id)
		if (i < 3 && code != 201) || (i == 3 && code != 429) {
			t.Fatalf("bella's document %d: %d %v", i, code, out)
		}
		if i == 0 {
			bellaDoc = id
		}
	}
	if code, out := claim(cara, free); code != 201 {
		t.Fatalf("cara's document: %d %v", code, out)
	}
	if v := metricValue(t, n, `plait_limit_hits_total{limit="docs_per_user"}`); v != 2 {
		t.Fatalf("document quota hits counted: %v, want 2", v)
	}

	// Size: 100 KiB is past --max-doc-bytes (64 KiB), within bella's 1 MiB
	// and the free document's none.
	msg, code := pushRefused(t, dialPeer(t, withToken(n, olive), "olive-go"), oliveDoc, bigDoc(t, 100<<10))
	if code != websocket.StatusCode(protocol.CloseLimitExceeded) || !strings.Contains(msg, "MaxBytes is 65536") {
		t.Fatalf("an edit past max-doc-bytes: %q, close %d; want an error naming the bound and %d", msg, code, protocol.CloseLimitExceeded)
	}
	if sd, err := n.be.store.LoadDoc(context.Background(), oliveDoc); !errors.Is(err, hub.ErrNotFound) {
		// The first (empty) sync message created the record; the refused
		// change is not in it.
		raws, cerr := sd.Changes()
		if err != nil || cerr != nil || len(raws) != 0 {
			t.Fatalf("the refused edit was stored: %d changes, %v, %v", len(raws), err, cerr)
		}
	}
	if v := metricValue(t, n, `plait_limit_hits_total{limit="doc_bytes"}`); v != 1 {
		t.Fatalf("size limit hits counted: %v, want 1", v)
	}
	for _, c := range []struct {
		tok string
		id  protocol.DocumentID
	}{{bella, bellaDoc}, {cara, free}} {
		doc := bigDoc(t, 100<<10)
		dialPeer(t, withToken(n, c.tok), "go-"+string(c.id)[:6]).syncDoc(c.id, doc, automerge.NewSyncState(doc), false)
		if _, err := n.be.store.LoadDoc(context.Background(), c.id); err != nil {
			t.Fatalf("the edit within the override was not stored: %v", err)
		}
	}
}

// TestQuotaFileInvalid: a quota file with an unknown field, a bad id or a
// negative bound stops the node from starting, with the reason.
func TestQuotaFileInvalid(t *testing.T) {
	for _, body := range []string{
		`{"users": {"u": {"maxDocs": -1}}}`,
		`{"documents": {"not-an-id": {"maxDocBytes": 1}}}`,
		`{"users": {"u": {"maxDocz": 1}}}`,
		`{"documents": {"` + string(protocol.NewDocumentID()) + `": {}}}`,
		`[`,
	} {
		f := filepath.Join(t.TempDir(), "q.json")
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readQuotaFile(f); err == nil || !strings.Contains(err.Error(), "quota-file") {
			t.Fatalf("quota file %s: %v, want an error", body, err)
		}
	}
}

// TestQuotasCluster: two login nodes on one real Redis share the counts
// and bounds: a user at their document quota through node A is refused on
// node B, and an edit past the size bound is refused on B as on A.
func TestQuotasCluster(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	e := startOIDC(t)
	mod := func(c *Config) { c.RedisURL, c.MaxDocBytes, c.MaxDocsPerUser = rs.URL(), 64<<10, 1 }
	b := startNode(t, t.TempDir(), mod, e.configure(""))
	a := startNode(t, t.TempDir(), mod, e.configure(b.cfg.PublicURL))
	_, olive, _ := login(t, e, a, b, "olive")
	id := protocol.NewDocumentID()
	if code, out := api(t, "POST", a.HTTP+"/api/docs", olive, map[string]string{"documentId": string(id)}); code != 201 {
		t.Fatalf("claim on A: %d %v", code, out)
	}
	if code, out := api(t, "POST", b.HTTP+"/api/docs", olive, nil); code != 429 || !strings.Contains(fmt.Sprint(out["error"]), "max-docs-per-user 1") {
		t.Fatalf("a second document through B: %d %v, want 429", code, out)
	}
	msg, code := pushRefused(t, dialPeer(t, withToken(b, olive), "olive-b"), id, bigDoc(t, 100<<10))
	if code != websocket.StatusCode(protocol.CloseLimitExceeded) || !strings.Contains(msg, "MaxBytes is 65536") {
		t.Fatalf("an edit past max-doc-bytes on B: %q, close %d", msg, code)
	}
	small := newDoc(t, "title", "small")
	dialPeer(t, withToken(a, olive), "olive-a").syncDoc(id, small, automerge.NewSyncState(small), false)
}
