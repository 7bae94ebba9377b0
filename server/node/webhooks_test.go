package node

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/server/webhook"
)

const hookSecret = "test-webhook-secret-0123456789"

// hookReceiver is the test's webhook endpoint: a real HTTP server on
// loopback that verifies each delivery's signature and records it; it
// answers 503 while down.
type hookReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	down     bool
	attempts int
	bad      int
	got      map[string]webhook.Event // delivered (2xx), by idempotency key
	dups     int                      // keys delivered (2xx) more than once
}

func startHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{got: map[string]webhook.Event{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		r.mu.Lock()
		defer r.mu.Unlock()
		r.attempts++
		if err := webhook.Verify([]byte(hookSecret), req.Header.Get(webhook.HeaderTimestamp), req.Header.Get(webhook.HeaderSignature), body, time.Now(), 0); err != nil {
			r.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var ev webhook.Event
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID != req.Header.Get(webhook.HeaderID) {
			r.bad++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if _, seen := r.got[ev.ID]; seen {
			r.dups++
		}
		r.got[ev.ID] = ev
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// count returns how many delivered events have typ and doc.
func (r *hookReceiver) count(typ, doc string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.got {
		if ev.Type == typ && ev.DocumentID == doc {
			n++
		}
	}
	return n
}

func writeHooksFile(t *testing.T, url string, extra string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "webhooks.json")
	body := fmt.Sprintf(`{"endpoints": [{"url": %q, "secret": %q}]%s}`, url, hookSecret, extra)
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestWebhooksClusterNodeKilled: two node processes on one real Redis,
// real automerge-repo clients creating and editing documents on node A, a
// deletion through node B, and a receiver that is down (503) while the
// nodes retry. Node A is SIGKILLed mid-way, with deliveries taken and not
// made; once the receiver is back, every event is delivered exactly once
// (no idempotency key twice), signed: document.created and at least one
// document.changed per document, and one document.deleted.
func TestWebhooksClusterNodeKilled(t *testing.T) {
	requireJS(t)
	bin := buildPlait(t)
	srv := redistest.Start(t, redistest.Options{})
	rcv := startHookReceiver(t)
	rcv.mu.Lock()
	rcv.down = true
	rcv.mu.Unlock()
	hooks := writeHooksFile(t, rcv.srv.URL, `, "attempts": 1000, "minBackoff": "100ms", "maxBackoff": "400ms", "timeout": "1s", "claimAfter": "3s"`)
	flags := []string{"--redis-url", srv.URL(), "--webhooks-file", hooks}
	a := startBoundsNode(t, bin, "node-a", t.TempDir(), flags...)
	b := startBoundsNode(t, bin, "node-b", t.TempDir(), flags...)

	var docs []string
	for i := range 2 {
		res := runJS(t, "create.mjs", "ws://"+a.addr+"/ws", "--no-verify")
		id, _ := res["documentId"].(string)
		if id == "" {
			t.Fatalf("create %d: %v", i, res)
		}
		docs = append(docs, id)
		runJS(t, "edit.mjs", "ws://"+a.addr+"/ws", "automerge:"+id, fmt.Sprint("E", i), "--edits", "3")
	}
	if code, out := api(t, "DELETE", b.http+"/api/docs/"+docs[1], "", nil); code != 204 {
		t.Fatalf("delete through B: %d %v", code, out)
	}
	// Both nodes are retrying deliveries against the receiver that is
	// down; kill A with its share taken and not made, once its debounced
	// document.changed events are queued (one not yet due, within its
	// 2 s window, dies with its node: docs/api.md).
	eventually(t, "document.changed queued", func() bool {
		return metricSumURLs(t, []string{a.http}, `plait_webhook_events_total{type="document.changed"}`) >= 2 &&
			metricSumURLs(t, []string{a.http}, "plait_webhook_changed_pending") == 0
	})
	eventually(t, "deliveries attempted", func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return rcv.attempts >= 10
	})
	// A holds deliveries it has not made (taken from the stream, not acked).
	body, code := httpGet(t, a.http+"/readyz", nil)
	var ready struct {
		PeerID string `json:"peerId"`
	}
	if err := json.Unmarshal([]byte(body), &ready); code != 200 || err != nil || ready.PeerID == "" {
		t.Fatalf("A's /readyz: %d %s", code, body)
	}
	rc := srv.Client(t)
	eventually(t, "A holds deliveries", func() bool {
		p, err := rc.XPending(t.Context(), "plait:webhooks", "deliveries").Result()
		return err == nil && p.Consumers[ready.PeerID] > 0
	})
	a.kill(t)
	rcv.mu.Lock()
	rcv.down = false
	rcv.mu.Unlock()
	t.Cleanup(func() {
		if t.Failed() {
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			for _, ev := range rcv.got {
				t.Logf("delivered %s %s", ev.Type, ev.DocumentID)
			}
			t.Logf("docs %v, %d attempts, %d bad", docs, rcv.attempts, rcv.bad)
		}
	})
	eventually(t, "every event delivered", func() bool {
		for _, d := range docs {
			if rcv.count(webhook.DocumentCreated, d) < 1 || rcv.count(webhook.DocumentChanged, d) < 1 {
				return false
			}
		}
		return rcv.count(webhook.DocumentDeleted, docs[1]) == 1
	})
	time.Sleep(4 * time.Second) // past claimAfter: a duplicate would arrive now
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.dups != 0 || rcv.bad != 0 {
		t.Fatalf("%d duplicate and %d bad deliveries", rcv.dups, rcv.bad)
	}
	for _, d := range docs {
		created, changed := 0, 0
		for _, ev := range rcv.got {
			switch {
			case ev.DocumentID != d:
			case ev.Type == webhook.DocumentCreated:
				created++
			case ev.Type == webhook.DocumentChanged:
				changed++
			}
		}
		// Each document's edits took well under 10 s: one or two
		// debounced events, not one per edit (3 edits, and the creation).
		if created != 1 || changed < 1 || changed > 3 {
			t.Fatalf("document %s: %d document.created and %d document.changed events", d, created, changed)
		}
	}
	if n, err := rc.XLen(t.Context(), "plait:webhooks").Result(); err != nil || n != 0 {
		t.Fatalf("the queue still holds %d deliveries: %v", n, err)
	}
}

// TestWebhooksLogin: on a single login node, claiming a document sends
// document.created with its user, sharing it access.changed, deleting it
// document.deleted, each signed and once.
func TestWebhooksLogin(t *testing.T) {
	rcv := startHookReceiver(t)
	e := startOIDC(t)
	hooks := writeHooksFile(t, rcv.srv.URL, "")
	n := startNode(t, t.TempDir(), e.configure(""), func(c *Config) { c.WebhooksFile = hooks })
	_, owner, _ := login(t, e, n, n, "olive")
	id := ownedDoc(t, n, owner)
	if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+string(id)+"/users/oidc:eddie", owner, map[string]string{"role": "editor"}); code != 204 {
		t.Fatalf("share: %d", code)
	}
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/"+string(id), owner, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	want := map[string]int{webhook.DocumentCreated: 1, webhook.AccessChanged: 1, webhook.DocumentDeleted: 1, webhook.DocumentChanged: 1}
	eventually(t, "events delivered", func() bool {
		for typ, c := range want {
			if rcv.count(typ, string(id)) != c {
				return false
			}
		}
		return true
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, ev := range rcv.got {
		if ev.Type != webhook.DocumentChanged && ev.User != "oidc:olive" {
			t.Fatalf("%s without its user: %+v", ev.Type, ev)
		}
	}
	if rcv.bad != 0 || rcv.dups != 0 || len(rcv.got) != 4 {
		t.Fatalf("%d deliveries, %d bad, %d duplicates", len(rcv.got), rcv.bad, rcv.dups)
	}
}
