package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// jsRun is a JS script running in the background that prints a line
// "READY" on stderr when the test may go on.
type jsRun struct {
	ready chan struct{}
	done  chan struct{}
	res   map[string]any
	err   error
}

func startJSReady(t *testing.T, script string, args ...string) *jsRun {
	t.Helper()
	requireJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "PLAIT_E2E_TIMEOUT_MS=40000")
	var stdout, stderrAll bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &jsRun{ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer cancel()
		defer close(r.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		ready := false
		for sc.Scan() {
			stderrAll.WriteString(sc.Text() + "\n")
			if !ready && sc.Text() == "READY" {
				ready = true
				close(r.ready)
			}
		}
		err := cmd.Wait()
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &r.res); jerr != nil && err == nil {
			err = fmt.Errorf("no JSON result: %v", jerr)
		}
		if err != nil {
			r.err = fmt.Errorf("%s failed: %v\nstdout: %s\nstderr: %s", script, err, stdout.String(), lastLines(stderrAll.String(), 40))
		}
		if !ready {
			close(r.ready)
		}
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *jsRun) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-r.ready:
	case <-time.After(60 * time.Second):
		t.Fatal("the JS client never got ready")
	}
	select {
	case <-r.done:
		t.Fatal(r.err)
	default:
	}
}

func (r *jsRun) wait(t *testing.T) map[string]any {
	t.Helper()
	<-r.done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.res
}

// checkDetached: the JS client holding the document was told it is
// unavailable and (with login, where nobody may use the document any
// more) got nothing more of it.
func checkDetached(t *testing.T, res map[string]any, login bool) {
	t.Helper()
	if !strings.Contains(fmt.Sprint(res["contentBefore"]), "shared") {
		t.Fatalf("the client did not have the document before the delete: %v", res["contentBefore"])
	}
	if n, _ := res["unavailable"].(float64); n < 1 {
		t.Fatalf("the client was not told the document is unavailable: %v", res)
	}
	if n, _ := res["syncAfter"].(float64); login && n != 0 {
		t.Fatalf("the client got %v sync messages of the deleted document", n)
	}
}

// checkGone: the store has nothing of id.
func checkGone(t *testing.T, st hub.Store, id protocol.DocumentID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := st.LoadDoc(ctx, id); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("the store after the delete: %v, want not found", err)
	}
}

// TestDeleteDocument: on a login node, only an owner deletes; an editor's
// real automerge-repo client that has the document open is told it is
// unavailable and detached; the store forgets it; later API calls and
// requests find nothing; the audit log records it.
func TestDeleteDocument(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""))
	_, owner, _ := login(t, e, n, n, "olive")
	_, editor, _ := login(t, e, n, n, "eddie")
	id := ownedDoc(t, n, owner)
	if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+string(id)+"/users/oidc:eddie", owner, map[string]string{"role": "editor"}); code != 204 {
		t.Fatalf("share: %d", code)
	}
	js := startJSReady(t, "detach.mjs", withToken(n, editor), id.URL())
	js.waitReady(t)
	if code, out := api(t, "DELETE", n.HTTP+"/api/docs/"+string(id), editor, nil); code != 403 || out["error"] == nil {
		t.Fatalf("an editor deleting: %d %v, want 403 with an error", code, out)
	}
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/"+string(protocol.NewDocumentID()), owner, nil); code != 404 {
		t.Fatalf("deleting an unknown document: %d, want 404", code)
	}
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/"+string(id), "", nil); code != 401 {
		t.Fatalf("deleting without a token: %d, want 401", code)
	}
	if code, out := api(t, "DELETE", n.HTTP+"/api/docs/"+string(id), owner, nil); code != 204 {
		t.Fatalf("the owner deleting: %d %v", code, out)
	}
	checkDetached(t, js.wait(t), true)
	checkGone(t, n.be.store, id)
	for _, tok := range []string{owner, editor} {
		if code, _ := api(t, "GET", n.HTTP+"/api/docs/"+string(id), tok, nil); code != 404 {
			t.Fatalf("GET after the delete: %d, want 404", code)
		}
	}
	if code, out := api(t, "GET", n.HTTP+"/api/docs", editor, nil); code != 200 || strings.Contains(fmt.Sprint(out), string(id)) {
		t.Fatalf("the editor's list after the delete: %d %v", code, out)
	}
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/"+string(id), owner, nil); code != 404 {
		t.Fatalf("deleting again: %d, want 404", code)
	}
	runJS(t, "load.mjs", withToken(n, owner), id.URL(), "", "--expect-unavailable")
	checkGone(t, n.be.store, id) // the client's edit after the delete was not stored either
	log := auditLog(t, n)
	if !strings.Contains(log, `"event":"doc_deleted"`) || !strings.Contains(log, "delete: not an owner") {
		t.Fatalf("the audit log lacks the deletion or the refusal:\n%s", lastLines(log, 10))
	}
	if v := metricValue(t, n, `plait_documents_deleted_total{origin="local"}`); v != 1 {
		t.Fatalf("deletions counted: %v", v)
	}
}

// TestDeleteDocumentCluster: two login nodes on one real Redis. A client
// on node B has the document open; the owner deletes it through node A:
// the client on B is detached, and Redis holds no key of the document
// (snapshot, batches, sync states, stream, access).
func TestDeleteDocumentCluster(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	e := startOIDC(t)
	b := startNode(t, t.TempDir(), func(c *Config) { c.RedisURL = rs.URL() }, e.configure(""))
	a := startNode(t, t.TempDir(), func(c *Config) { c.RedisURL = rs.URL() }, e.configure(b.cfg.PublicURL))
	_, owner, _ := login(t, e, a, b, "olive")
	id := ownedDoc(t, a, owner)
	js := startJSReady(t, "detach.mjs", withToken(b, owner), id.URL())
	js.waitReady(t)
	rc := rs.Client(t)
	ctx := context.Background()
	if keys, err := rc.Keys(ctx, "*"+string(id)+"*").Result(); err != nil || len(keys) < 3 {
		t.Fatalf("Redis keys of the document before the delete: %v, %v", keys, err)
	}
	if code, out := api(t, "DELETE", a.HTTP+"/api/docs/"+string(id), owner, nil); code != 204 {
		t.Fatalf("delete through A: %d %v", code, out)
	}
	checkDetached(t, js.wait(t), true)
	checkGone(t, b.be.store, id)
	eventually(t, "the document left B's memory", func() bool { return b.hub.OpenDocuments() == 0 })
	// Nothing is left but, at most, the stream position that a node
	// makes again when the detached client's next message opens the id
	// (a new epoch at offset 0, expiring like any stream).
	keys, err := rc.Keys(ctx, "*"+string(id)+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasSuffix(k, "}:pos") {
			t.Fatalf("Redis keys of the deleted document: %v", keys)
		}
		if off, _ := rc.HGet(ctx, k, "o").Result(); off != "" && off != "0" {
			t.Fatalf("the deleted document's stream is at offset %s", off)
		}
		if ttl, _ := rc.TTL(ctx, k).Result(); ttl <= 0 {
			t.Fatalf("the stream position %s does not expire (%v)", k, ttl)
		}
	}
	if code, _ := api(t, "GET", b.HTTP+"/api/docs/"+string(id), owner, nil); code != 404 {
		t.Fatalf("GET on B after the delete: %d, want 404", code)
	}
	runJS(t, "load.mjs", withToken(b, owner), id.URL(), "", "--expect-unavailable")
}

// TestDeleteDocumentAnonymous: a node without login deletes any document
// for a local client, with no token; an unknown one is 404.
func TestDeleteDocumentAnonymous(t *testing.T) {
	n := startNode(t, t.TempDir())
	id := protocol.NewDocumentID()
	doc := automerge.New()
	for k, v := range map[string]any{"title": "shared", "items": automerge.NewList(), "marks": automerge.NewMap()} {
		if err := doc.RootMap().Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := doc.Commit("init"); err != nil {
		t.Fatal(err)
	}
	p := dialPeer(t, n.URL, "creator")
	p.syncDoc(id, doc, automerge.NewSyncState(doc), false)
	eventually(t, "stored", func() bool {
		_, err := n.be.store.LoadDoc(context.Background(), id)
		return err == nil
	})
	js := startJSReady(t, "detach.mjs", n.URL, id.URL())
	js.waitReady(t)
	if code, out := api(t, "DELETE", n.HTTP+"/api/docs/"+string(id), "", nil); code != 204 {
		t.Fatalf("delete: %d %v", code, out)
	}
	checkDetached(t, js.wait(t), false)
	// Without login nothing stops a client that still holds a copy: its
	// edit after the delete created the document anew, with its content
	// (documented in docs/api.md). Deleting it again works the same way.
	eventually(t, "the client's copy stored again", func() bool {
		_, err := n.be.store.LoadDoc(context.Background(), id)
		return err == nil
	})
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/"+string(id), "", nil); code != 204 {
		t.Fatalf("deleting the re-created document: %d, want 204", code)
	}
	checkGone(t, n.be.store, id)
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/"+string(id), "", nil); code != 404 {
		t.Fatalf("deleting again: %d, want 404", code)
	}
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/not-an-id", "", nil); code != 404 {
		t.Fatalf("deleting a malformed id: %d, want 404", code)
	}
	if !strings.Contains(auditLog(t, n), `"event":"doc_deleted"`) {
		t.Error("the audit log lacks the deletion")
	}
}

// eventually waits until cond holds, failing the test with what if it
// does not within 15 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeleteMe: a user deleting their account loses the documents only
// they own (deleted, as DELETE /api/docs/{id}), their roles on the others
// (which stay, with their other owners), and every login session.
func TestDeleteMe(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""))
	_, olive, _ := login(t, e, n, n, "olive")
	_, oscar, _ := login(t, e, n, n, "oscar")
	mine := ownedDoc(t, n, olive)
	shared := ownedDoc(t, n, olive)
	theirs := ownedDoc(t, n, oscar)
	for _, s := range []struct {
		doc       protocol.DocumentID
		tok, user string
		role      string
	}{{shared, olive, "oidc:oscar", "owner"}, {theirs, oscar, "oidc:olive", "editor"}, {mine, olive, "oidc:oscar", "viewer"}} {
		if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+string(s.doc)+"/users/"+s.user, s.tok, map[string]string{"role": s.role}); code != 204 {
			t.Fatalf("share: %d", code)
		}
	}
	code, out := api(t, "DELETE", n.HTTP+"/api/me", olive, nil)
	if code != 200 || out["deletedDocuments"] != float64(1) || out["leftDocuments"] != float64(2) {
		t.Fatalf("DELETE /api/me: %d %v", code, out)
	}
	checkGone(t, n.be.store, mine)
	if code, _ := api(t, "GET", n.HTTP+"/api/docs/"+string(mine), oscar, nil); code != 404 {
		t.Fatalf("the viewer of the deleted user's document: %d, want 404", code)
	}
	for _, id := range []protocol.DocumentID{shared, theirs} {
		code, out := api(t, "GET", n.HTTP+"/api/docs/"+string(id), oscar, nil)
		if code != 200 || out["role"] != "owner" || strings.Contains(fmt.Sprint(out["users"]), "olive") {
			t.Fatalf("%s after olive left: %d %v", id, code, out)
		}
		if _, err := n.be.store.LoadDoc(context.Background(), id); err != nil {
			t.Fatalf("a document olive did not own alone was deleted: %v", err)
		}
	}
	if code, _ := api(t, "GET", n.HTTP+"/api/me", olive, nil); code != 401 {
		t.Fatalf("the deleted user's token: %d, want 401", code)
	}
	if !strings.Contains(auditLog(t, n), `"event":"user_deleted"`) {
		t.Error("the audit log lacks the deletion")
	}
}

// TestDeleteMeCluster: two login nodes on one real Redis. A user's
// document is open on node A, with the user's socket; the user deletes
// their account through node B: the document is gone from Redis, the
// socket on A is closed as revoked (4410), and the token is refused on A.
func TestDeleteMeCluster(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	e := startOIDC(t)
	b := startNode(t, t.TempDir(), func(c *Config) { c.RedisURL = rs.URL() }, e.configure(""))
	a := startNode(t, t.TempDir(), func(c *Config) { c.RedisURL = rs.URL() }, e.configure(b.cfg.PublicURL))
	_, olive, _ := login(t, e, a, b, "olive")
	id := ownedDoc(t, a, olive)
	p := dialPeer(t, withToken(a, olive), "olive-a")
	doc := automerge.New()
	p.syncDoc(id, doc, automerge.NewSyncState(doc), true)
	code, out := api(t, "DELETE", b.HTTP+"/api/me", olive, nil)
	if code != 200 || out["deletedDocuments"] != float64(1) {
		t.Fatalf("DELETE /api/me through B: %d %v", code, out)
	}
	if _, code := p.expectClose(); code != websocket.StatusCode(protocol.CloseRevoked) {
		t.Fatalf("the user's socket on A closed with %d, want %d", code, protocol.CloseRevoked)
	}
	checkGone(t, a.be.store, id)
	if code, _ := api(t, "GET", a.HTTP+"/api/me", olive, nil); code != 401 {
		t.Fatalf("the deleted user's token on A: %d, want 401", code)
	}
	keys, err := rs.Client(t).Keys(context.Background(), "*"+string(id)+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasSuffix(k, "}:pos") {
			t.Fatalf("Redis keys of the deleted user's document: %v", keys)
		}
	}
}
