package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
)

// These tests drive the documents API (api_docs.go) on real nodes, with
// real automerge-repo clients (testdata/js/watch.mjs) connected while the
// server changes their document.

type apiResp struct {
	code int
	body []byte
	hdr  http.Header
}

func (r apiResp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %s", r.code, trunc(string(r.body)))
	}
	return m
}

// call makes one request; token "" sends none, ctype "" no body type.
func call(t *testing.T, method, u, token, ctype string, body []byte, hdr map[string]string) apiResp {
	t.Helper()
	r, err := tryCall(method, u, token, ctype, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryCall is call for goroutines other than the test's.
func tryCall(method, u, token, ctype string, body []byte, hdr map[string]string) (apiResp, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return apiResp{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return apiResp{}, fmt.Errorf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiResp{code: resp.StatusCode, body: b, hdr: resp.Header}, nil
}

const patchType = "application/json-patch+json"

func patchDoc(t *testing.T, n *testNode, id, token, patch string) apiResp {
	t.Helper()
	return call(t, "POST", n.HTTP+"/api/docs/"+id+"/changes", token, patchType, []byte(patch), nil)
}

// jsonEq reports whether two JSON texts hold the same value.
func jsonEq(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("not JSON: %s", trunc(a))
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("not JSON: %s", trunc(b))
	}
	return reflect.DeepEqual(x, y)
}

// waitContent polls GET content on n until it equals want (a node of a
// cluster gets another node's change through Redis, a moment later).
func waitContent(t *testing.T, n *testNode, id, token, want string) apiResp {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := call(t, "GET", n.HTTP+"/api/docs/"+id+"/content", token, "", nil, nil)
		if r.code == 200 && jsonEq(t, string(r.body), want) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("content on %s: %d %s, want %s", n.HTTP, r.code, trunc(string(r.body)), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchRun is a watch.mjs client in the background.
type watchRun struct {
	ready chan struct{}
	done  chan struct{}
	res   map[string]any
	err   error
}

// startWatch starts watch.mjs on the document and waits until it has it.
func startWatch(t *testing.T, wsURL, docURL, want string, args ...string) *watchRun {
	t.Helper()
	requireJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, "node", append([]string{"watch.mjs", wsURL, docURL, "--want", want}, args...)...)
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "PLAIT_E2E_TIMEOUT_MS=40000")
	var stdout, stderrAll bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &watchRun{ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer cancel()
		defer close(w.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		ready := false
		for sc.Scan() {
			stderrAll.WriteString(sc.Text() + "\n")
			if !ready && strings.HasSuffix(sc.Text(), "] ready") {
				ready = true
				close(w.ready)
			}
		}
		err := cmd.Wait()
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &w.res); jerr != nil && err == nil {
			err = fmt.Errorf("no JSON result: %v", jerr)
		}
		if err != nil {
			w.err = fmt.Errorf("watch.mjs failed: %v\nstdout: %s\nstderr: %s", err, stdout.String(), lastLines(stderrAll.String(), 30))
		}
		if !ready {
			close(w.ready)
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	select {
	case <-w.ready:
	case <-time.After(45 * time.Second):
		t.Fatal("watch.mjs did not get ready")
	}
	select {
	case <-w.done:
		t.Fatal(w.err)
	default:
	}
	return w
}

func (w *watchRun) wait(t *testing.T) map[string]any {
	t.Helper()
	<-w.done
	if w.err != nil {
		t.Fatal(w.err)
	}
	return w.res
}

const initialContent = `{"title":"plait e2e","items":[],"marks":{},"numbers":[1,2,3]}`

// TestDocAPIOneNode: on an anonymous node, a document a real client
// created is read as JSON (ETag, If-None-Match, ?heads=), changed with a
// JSON Patch that a connected client sees live and then builds on, its
// history listed newest first a page at a time, exported and imported
// back; bad requests change nothing and say why; the audit log has the
// writes.
func TestDocAPIOneNode(t *testing.T) {
	requireJS(t)
	n := startNode(t, t.TempDir())
	created := runJS(t, "create.mjs", n.URL, "--no-verify")
	docURL, id := str(t, created, "url"), str(t, created, "documentId")
	docAPI := n.HTTP + "/api/docs/" + id

	r := call(t, "GET", docAPI+"/content", "", "", nil, nil)
	if r.code != 200 || !jsonEq(t, string(r.body), initialContent) || r.hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("content: %d %s %v", r.code, r.body, r.hdr)
	}
	tag0 := r.hdr.Get("ETag")
	if !strings.HasPrefix(tag0, `"`) || len(tag0) != 66 {
		t.Fatalf("ETag %q: want the one head, quoted", tag0)
	}
	head0 := strings.Trim(tag0, `"`)
	if r := call(t, "GET", docAPI+"/content", "", "", nil, map[string]string{"If-None-Match": tag0}); r.code != 304 || len(r.body) != 0 {
		t.Fatalf("If-None-Match with the current heads: %d %s", r.code, r.body)
	}

	// A client is connected while the server changes the document.
	want := `{"title":"from the API","items":["x"],"marks":{},"numbers":[1,2,3],"count":3}`
	w := startWatch(t, n.URL, docURL, want, "--set", "note=from js")
	r = call(t, "POST", docAPI+"/changes?message=api+edit", "", patchType, []byte(`[
		{"op":"test","path":"/title","value":"plait e2e"},
		{"op":"replace","path":"/title","value":"from the API"},
		{"op":"add","path":"/items/-","value":"x"},
		{"op":"add","path":"/count","value":1,"datatype":"counter"},
		{"op":"increment","path":"/count","value":2}]`), nil)
	if r.code != 200 {
		t.Fatalf("changes: %d %s", r.code, r.body)
	}
	res := r.json(t)
	apiHash := res["hash"].(string)
	if res["changed"] != true || fmt.Sprint(res["heads"]) != "["+apiHash+"]" || r.hdr.Get("ETag") != `"`+apiHash+`"` {
		t.Fatalf("changes answered %v (ETag %s)", res, r.hdr.Get("ETag"))
	}
	wres := w.wait(t)
	if b, _ := json.Marshal(wres["before"]); !jsonEq(t, string(b), initialContent) {
		t.Fatalf("the client was ready with %s, want the content before the change", b)
	}
	afterJS := `{"title":"from the API","items":["x"],"marks":{},"numbers":[1,2,3],"count":3,"note":"from js"}`
	r = waitContent(t, n, id, "", afterJS)
	if r.hdr.Get("ETag") == tag0 {
		t.Fatalf("the ETag did not change")
	}
	if r := call(t, "GET", docAPI+"/content", "", "", nil, map[string]string{"If-None-Match": tag0}); r.code != 200 {
		t.Fatalf("If-None-Match with old heads: %d", r.code)
	}

	// As it was.
	r = call(t, "GET", docAPI+"/content?heads="+head0, "", "", nil, nil)
	if r.code != 200 || !jsonEq(t, string(r.body), initialContent) || r.hdr.Get("ETag") != tag0 {
		t.Fatalf("content at %s: %d %s", head0, r.code, r.body)
	}
	var h0 [32]byte
	if b, err := hex.DecodeString(head0); err != nil || copy(h0[:], b) != 32 {
		t.Fatalf("head %q: %v", head0, err)
	}
	if r := call(t, "GET", docAPI+"/content?heads="+protocol.EncodeHead(h0), "", "", nil, nil); r.code != 200 || !jsonEq(t, string(r.body), initialContent) {
		t.Fatalf("content at bs58 heads: %d %s", r.code, r.body)
	}
	if r := call(t, "GET", docAPI+"/content?heads="+strings.Repeat("ab", 32), "", "", nil, nil); r.code != 404 {
		t.Fatalf("unknown heads: %d %s", r.code, r.body)
	}
	if r := call(t, "GET", docAPI+"/content?heads=zz", "", "", nil, nil); r.code != 400 {
		t.Fatalf("bad heads: %d %s", r.code, r.body)
	}

	// Bad patches change nothing and say why.
	etag := call(t, "GET", docAPI+"/content", "", "", nil, nil).hdr.Get("ETag")
	for _, c := range []struct {
		ctype, body string
		code        int
		want        string
	}{
		{patchType, `[{"op":"test","path":"/title","value":"nope"},{"op":"remove","path":"/title"}]`, 409, `test failed: /title is \"from the API\"`},
		{patchType, `[{"op":"remove","path":"/missing"}]`, 409, "/missing does not exist"},
		{patchType, `[{"op":"add","path":"/items/7","value":1}]`, 409, "out of range"},
		{patchType, `[{"op":"add","path":"items","value":1}]`, 400, `must be empty or start with \"/\"`},
		{patchType, `[{"op":"launch","path":"/x"}]`, 400, "unknown op"},
		{patchType, `{"op":"add"}`, 400, "want a JSON array"},
		{"text/plain", `[]`, 415, "json-patch+json"},
	} {
		r := call(t, "POST", docAPI+"/changes", "", c.ctype, []byte(c.body), nil)
		if r.code != c.code || !strings.Contains(string(r.body), c.want) {
			t.Errorf("%s: %d %s; want %d with %q", c.body, r.code, r.body, c.code, c.want)
		}
	}
	if r := call(t, "GET", docAPI+"/content", "", "", nil, nil); r.hdr.Get("ETag") != etag {
		t.Fatalf("a refused patch changed the document: %s", r.body)
	}
	if r := call(t, "POST", docAPI+"/changes", "", patchType, []byte(`[{"op":"test","path":"/count","value":3}]`), nil); r.code != 200 || r.json(t)["changed"] != false {
		t.Fatalf("a patch of tests: %d %s", r.code, r.body)
	}
	unknown := string(protocol.NewDocumentID())
	if r := call(t, "GET", n.HTTP+"/api/docs/"+unknown+"/content", "", "", nil, nil); r.code != 404 {
		t.Fatalf("an unknown document: %d", r.code)
	}
	if r := patchDoc(t, n, unknown, "", `[{"op":"add","path":"/a","value":1}]`); r.code != 404 {
		t.Fatalf("a change to an unknown document: %d", r.code)
	}

	// History: newest first (the client's change, then the API's), paged.
	r = call(t, "GET", docAPI+"/history", "", "", nil, nil)
	hist := r.json(t)
	changes := hist["changes"].([]any)
	if r.code != 200 || hist["total"] != float64(3) || len(changes) != 3 {
		t.Fatalf("history: %d %s", r.code, r.body)
	}
	first, second := changes[0].(map[string]any), changes[1].(map[string]any)
	if second["hash"] != apiHash || second["message"] != "api edit" || second["seq"] != float64(1) || second["time"] == nil ||
		fmt.Sprint(first["deps"]) != "["+apiHash+"]" || changes[2].(map[string]any)["hash"] != head0 {
		t.Fatalf("history: %s", r.body)
	}
	r = call(t, "GET", docAPI+"/history?limit=1", "", "", nil, nil)
	page := r.json(t)
	if len(page["changes"].([]any)) != 1 || page["next"] != first["hash"] {
		t.Fatalf("page 1: %s", r.body)
	}
	r = call(t, "GET", docAPI+"/history?limit=2&before="+page["next"].(string), "", "", nil, nil)
	page = r.json(t)
	if got := page["changes"].([]any); len(got) != 2 || got[0].(map[string]any)["hash"] != apiHash || page["next"] != nil {
		t.Fatalf("page 2: %s", r.body)
	}
	if r := call(t, "GET", docAPI+"/history?limit=0", "", "", nil, nil); r.code != 400 {
		t.Fatalf("limit 0: %d", r.code)
	}
	if r := call(t, "GET", docAPI+"/history?before="+strings.Repeat("00", 32), "", "", nil, nil); r.code != 400 {
		t.Fatalf("before an unknown change: %d", r.code)
	}

	// Export, and import into a new document (and the same one again).
	r = call(t, "GET", docAPI+"/export", "", "", nil, nil)
	if r.code != 200 || r.hdr.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("export: %d %s", r.code, trunc(string(r.body)))
	}
	bin := r.body
	exported, err := automerge.Load(bin)
	if err != nil {
		t.Fatalf("the export does not load: %v", err)
	}
	if len(exported.Heads()) != 1 || exported.Heads()[0].String() != first["hash"] {
		t.Fatalf("export heads %v", exported.Heads())
	}
	r = call(t, "POST", n.HTTP+"/api/docs/import", "", "application/octet-stream", bin, nil)
	if r.code != 201 {
		t.Fatalf("import: %d %s", r.code, r.body)
	}
	imp := r.json(t)
	impID := imp["documentId"].(string)
	if impID == id || imp["changes"] != float64(3) || fmt.Sprint(imp["heads"]) != "["+first["hash"].(string)+"]" {
		t.Fatalf("import answered %s", r.body)
	}
	waitContent(t, n, impID, "", afterJS)
	// A client finds the imported document.
	startWatch(t, n.URL, imp["url"].(string), afterJS).wait(t)
	if r := call(t, "POST", n.HTTP+"/api/docs/import?documentId="+impID, "", "application/octet-stream", bin, nil); r.code != 409 {
		t.Fatalf("import over an existing document: %d %s", r.code, r.body)
	}
	// Change chunks import too; damaged ones, or ones without their
	// dependencies, are refused whole.
	chs, err := exported.Changes()
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	for _, c := range chs {
		raw = append(raw, c.Save()...)
	}
	if r := call(t, "POST", n.HTTP+"/api/docs/import", "", "application/octet-stream", raw, nil); r.code != 201 {
		t.Fatalf("import of change chunks: %d %s", r.code, r.body)
	}
	for name, body := range map[string][]byte{
		"garbage":      []byte("hello"),
		"empty":        nil,
		"no deps":      chs[len(chs)-1].Save(),
		"damaged":      append(bytes.Clone(bin[:len(bin)-8]), 1, 2, 3, 4, 5, 6, 7, 8),
		"doc + change": append(bytes.Clone(bin), chs[0].Save()...),
	} {
		if r := call(t, "POST", n.HTTP+"/api/docs/import", "", "application/octet-stream", body, nil); r.code != 400 {
			t.Errorf("import %s: %d %s, want 400", name, r.code, r.body)
		} else {
			t.Logf("import %s: %s", name, r.body)
		}
	}
	// A body over 4 MiB is refused from its Content-Length, before it is
	// read (a client still writing it may see the connection close, so
	// this one sends only the headers).
	if status := rawStatus(t, strings.TrimPrefix(n.HTTP, "http://"), "POST /api/docs/import HTTP/1.1\r\nHost: x\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: 5242880\r\n\r\n"); !strings.Contains(status, " 413 ") {
		t.Errorf("a 5 MiB import: %q, want 413", status)
	}
	waitAudit(t, n, `"event":"doc_change"`)
	waitAudit(t, n, `"event":"doc_import"`)
	if !strings.Contains(auditLog(t, n), apiHash) {
		t.Errorf("the audit log does not name the change %s", apiHash)
	}
}

// TestDocAPICluster: two nodes on one Redis. A change posted on node B
// reaches a client connected to node A live, and node A's API; a
// document imported on A is read on B and found there by a client.
func TestDocAPICluster(t *testing.T) {
	requireJS(t)
	srv := redistest.Start(t, redistest.Options{})
	nodes := startClusterNodes(t, srv.URL(), 2)
	a, b := nodes[0], nodes[1]
	created := runJS(t, "create.mjs", a.URL, "--no-verify")
	docURL, id := str(t, created, "url"), str(t, created, "documentId")

	want := `{"title":"plait e2e","items":[{"by":"node B"}],"marks":{"api":true},"numbers":[1,2,3]}`
	w := startWatch(t, a.URL, docURL, want)
	waitContent(t, b, id, "", initialContent)
	r := patchDoc(t, b, id, "", `[{"op":"add","path":"/items/0","value":{"by":"node B"}},{"op":"add","path":"/marks/api","value":true}]`)
	if r.code != 200 {
		t.Fatalf("changes on B: %d %s", r.code, r.body)
	}
	w.wait(t)
	ra := waitContent(t, a, id, "", want)
	if tag := r.hdr.Get("ETag"); ra.hdr.Get("ETag") != tag {
		t.Fatalf("node A's ETag %s, node B answered %s", ra.hdr.Get("ETag"), tag)
	}

	// Concurrent patches on both nodes: each is its own change by its
	// own actor, and the counter adds them all up.
	if r := patchDoc(t, a, id, "", `[{"op":"add","path":"/hits","value":0,"datatype":"counter"}]`); r.code != 200 {
		t.Fatalf("counter: %d %s", r.code, r.body)
	}
	waitContent(t, b, id, "", strings.TrimSuffix(want, "}")+`,"hits":0}`)
	errs := make(chan string, 20)
	for i := range 20 {
		go func() {
			n := []*testNode{a, b}[i%2]
			r, err := tryCall("POST", n.HTTP+"/api/docs/"+id+"/changes", "", patchType, []byte(`[{"op":"increment","path":"/hits","value":1}]`), nil)
			if err != nil {
				errs <- err.Error()
				return
			}
			if r.code != 200 {
				errs <- fmt.Sprintf("increment on %s: %d %s", n.HTTP, r.code, r.body)
				return
			}
			errs <- ""
		}()
	}
	for range 20 {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
	want = strings.TrimSuffix(want, "}") + `,"hits":20}`
	waitContent(t, a, id, "", want)
	waitContent(t, b, id, "", want)
	if r := call(t, "GET", a.HTTP+"/api/docs/"+id+"/history?limit=1000", "", "", nil, nil); r.json(t)["total"] != float64(23) {
		t.Fatalf("history on A after 21 API changes: %s", trunc(string(r.body)))
	}

	exp := call(t, "GET", b.HTTP+"/api/docs/"+id+"/export", "", "", nil, nil)
	if exp.code != 200 {
		t.Fatalf("export on B: %d", exp.code)
	}
	r = call(t, "POST", a.HTTP+"/api/docs/import", "", "application/octet-stream", exp.body, nil)
	if r.code != 201 {
		t.Fatalf("import on A: %d %s", r.code, r.body)
	}
	imp := r.json(t)
	waitContent(t, b, imp["documentId"].(string), "", want)
	startWatch(t, b.URL, imp["url"].(string), want).wait(t)
}

// TestDocAPIRoles: with login, the API needs a token; a stranger gets
// 404, a viewer reads but may not change (403), an editor changes; the
// owner's clients (Go and automerge-repo) see the editor's server-side
// change, and the owner's history names its author; the importer owns
// what it imports.
func TestDocAPIRoles(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""))
	owner := tokenAt(t, n, "oidc:olive", time.Now())
	viewer := tokenAt(t, n, "oidc:vic", time.Now())
	editor := tokenAt(t, n, "oidc:eddie", time.Now())
	stranger := tokenAt(t, n, "oidc:sam", time.Now())
	did := ownedDoc(t, n, owner)
	id := string(did)
	for user, role := range map[string]string{"oidc:vic": "viewer", "oidc:eddie": "editor"} {
		if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+id+"/users/"+user, owner, map[string]string{"role": role}); code != 204 {
			t.Fatalf("share with %s: %d", user, code)
		}
	}
	want := `{"title":"shared","items":[],"marks":{}}`
	if r := call(t, "GET", n.HTTP+"/api/docs/"+id+"/content", "", "", nil, nil); r.code != 401 {
		t.Fatalf("no token: %d", r.code)
	}
	if r := call(t, "GET", n.HTTP+"/api/docs/"+id+"/content", stranger, "", nil, nil); r.code != 404 {
		t.Fatalf("a stranger: %d", r.code)
	}
	waitContent(t, n, id, viewer, want)
	if r := patchDoc(t, n, id, viewer, `[{"op":"add","path":"/x","value":1}]`); r.code != 403 {
		t.Fatalf("a viewer's change: %d %s", r.code, r.body)
	}
	if r := patchDoc(t, n, id, stranger, `[{"op":"add","path":"/x","value":1}]`); r.code != 404 {
		t.Fatalf("a stranger's change: %d %s", r.code, r.body)
	}
	// A cross-site form post is refused before anything else.
	if r := call(t, "POST", n.HTTP+"/api/docs/"+id+"/changes", editor, patchType, []byte(`[]`), map[string]string{"Origin": "https://evil.example"}); r.code != 403 {
		t.Fatalf("a cross-site change: %d %s", r.code, r.body)
	}
	// The owner's Go client is connected while the editor changes it.
	doc := automerge.New()
	p := dialPeer(t, withToken(n, owner), "owner-go")
	ss := automerge.NewSyncState(doc)
	p.syncDoc(did, doc, ss, true)
	// And the owner's automerge-repo client.
	after := `{"title":"shared","items":["by eddie"],"marks":{}}`
	w := startWatch(t, withToken(n, owner), did.URL(), after)
	r := patchDoc(t, n, id, editor, `[{"op":"add","path":"/items/-","value":"by eddie"}]`)
	if r.code != 200 {
		t.Fatalf("an editor's change: %d %s", r.code, r.body)
	}
	eddies := r.json(t)["hash"].(string)
	p.syncDoc(did, doc, ss, false)
	if got := itemsOf(t, doc); fmt.Sprint(got) != "[by eddie]" {
		t.Fatalf("the owner's client has items %v", got)
	}
	w.wait(t)
	waitContent(t, n, id, owner, after)
	waitAudit(t, n, `"user":"oidc:eddie"`)

	// The owner sees who made the change; a viewer does not.
	for tok, want := range map[string]string{owner: "oidc:eddie", viewer: ""} {
		r := call(t, "GET", n.HTTP+"/api/docs/"+id+"/history", tok, "", nil, nil)
		h := r.json(t)["changes"].([]any)
		newest := h[0].(map[string]any)
		user, named := newest["user"]
		if r.code != 200 || newest["hash"] != eddies || named != (want != "") || (named && user != want) {
			t.Fatalf("history for %s: %s", want, trunc(string(r.body)))
		}
		if u, ok := h[1].(map[string]any)["user"]; ok {
			t.Fatalf("the client's change is attributed to %v", u)
		}
	}

	// The importer owns the copy; the others have no role on it.
	exp := call(t, "GET", n.HTTP+"/api/docs/"+id+"/export", viewer, "", nil, nil)
	if exp.code != 200 {
		t.Fatalf("a viewer's export: %d", exp.code)
	}
	r = call(t, "POST", n.HTTP+"/api/docs/import", viewer, "application/octet-stream", exp.body, nil)
	if r.code != 201 || r.json(t)["role"] != "owner" {
		t.Fatalf("a viewer's import: %d %s", r.code, r.body)
	}
	copyID := r.json(t)["documentId"].(string)
	if code, out := api(t, "GET", n.HTTP+"/api/docs/"+copyID, viewer, nil); code != 200 || out["role"] != "owner" {
		t.Fatalf("the importer's role: %d %v", code, out)
	}
	if r := call(t, "GET", n.HTTP+"/api/docs/"+copyID+"/content", owner, "", nil, nil); r.code != 404 {
		t.Fatalf("the original's owner on the copy: %d", r.code)
	}
	if r := call(t, "POST", n.HTTP+"/api/docs/import?documentId="+id, editor, "application/octet-stream", exp.body, nil); r.code != 409 {
		t.Fatalf("importing over someone's document: %d %s", r.code, r.body)
	}
}

// itemsOf returns the strings of the document's items.
func itemsOf(t *testing.T, doc *automerge.Doc) []string {
	t.Helper()
	v, err := doc.RootMap().Get("items")
	if err != nil || v.Kind() != automerge.KindList {
		t.Fatalf("items: %v %v", v, err)
	}
	vals, err := v.List().Values()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range vals {
		switch e.Kind() {
		case automerge.KindText:
			s, _ := e.Text().Get()
			out = append(out, s)
		case automerge.KindStr:
			out = append(out, e.Str())
		default:
			out = append(out, e.Kind().String())
		}
	}
	return out
}

// rawStatus sends req on a new connection to addr and returns the status
// line of the answer.
func rawStatus(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return line
}
