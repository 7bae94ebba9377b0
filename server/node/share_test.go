package node

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/protocol"
)

// withToken is the node's WebSocket URL carrying an access token, as a
// browser app on another site would open it.
func withToken(n *testNode, tok string) string {
	return n.URL + "?access_token=" + url.QueryEscape(tok)
}

// ownedDoc has owner create a document through the API and push content
// the JS scripts can edit (items, marks).
func ownedDoc(t *testing.T, n *testNode, ownerTok string) protocol.DocumentID {
	t.Helper()
	code, out := api(t, "POST", n.HTTP+"/api/docs", ownerTok, nil)
	if code != 201 {
		t.Fatalf("create: %d %v", code, out)
	}
	id, err := protocol.ParseDocumentID(out["documentId"].(string))
	if err != nil {
		t.Fatal(err)
	}
	doc := automerge.New()
	root := doc.RootMap()
	if err := root.Set("title", "shared"); err != nil {
		t.Fatal(err)
	}
	if err := root.Set("items", automerge.NewList()); err != nil {
		t.Fatal(err)
	}
	if err := root.Set("marks", automerge.NewMap()); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Commit("init"); err != nil {
		t.Fatal(err)
	}
	p := dialPeer(t, withToken(n, ownerTok), "owner-go")
	p.syncDoc(id, doc, automerge.NewSyncState(doc), false)
	return id
}

// storedMarks returns the marks of the document as the node stored it.
func storedMarks(t *testing.T, n *testNode, id protocol.DocumentID) string {
	t.Helper()
	sd, err := n.be.store.LoadDoc(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	all = append(all, sd.Snapshot...)
	for _, b := range sd.Batches {
		all = append(all, b.Data...)
	}
	doc, err := automerge.Load(all)
	if err != nil {
		t.Fatal(err)
	}
	v, err := doc.RootMap().Get("marks")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := v.Map().Keys()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(keys, ",")
}

// TestSharingAPI: owners share with editors and viewers and by link; a
// document one may not read is 404 like an unknown one; only owners manage
// access; the last owner cannot leave.
func TestSharingAPI(t *testing.T) {
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""))
	_, owner, _ := login(t, e, n, n, "olive")
	_, other, _ := login(t, e, n, n, "oscar")
	code, out := api(t, "POST", n.HTTP+"/api/docs", owner, nil)
	if code != 201 || out["role"] != "owner" {
		t.Fatalf("create: %d %v", code, out)
	}
	id := out["documentId"].(string)
	if code, _ := api(t, "POST", n.HTTP+"/api/docs", other, map[string]string{"documentId": id}); code != 409 {
		t.Fatalf("claiming someone's document: %d, want 409", code)
	}
	if code, _ := api(t, "GET", n.HTTP+"/api/docs/"+id, other, nil); code != 404 {
		t.Fatalf("a document one may not read: %d, want 404", code)
	}
	if code, _ := api(t, "GET", n.HTTP+"/api/docs/"+string(protocol.NewDocumentID()), owner, nil); code != 404 {
		t.Fatalf("an unknown document: %d, want 404", code)
	}
	if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+id+"/users/oidc:oscar", owner, map[string]string{"role": "viewer"}); code != 204 {
		t.Fatalf("share: %d", code)
	}
	if code, out := api(t, "GET", n.HTTP+"/api/docs/"+id, other, nil); code != 200 || out["role"] != "viewer" || out["users"] != nil {
		t.Fatalf("the viewer sees %d %v, want its role and not the user list", code, out)
	}
	if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+id+"/link", other, map[string]string{"role": "editor"}); code != 403 {
		t.Fatalf("a viewer changing link sharing: %d, want 403", code)
	}
	if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+id+"/link", owner, map[string]string{"role": "owner"}); code != 400 {
		t.Fatalf("a link that makes owners: %d, want 400", code)
	}
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/"+id+"/users/oidc:olive", owner, nil); code != 409 {
		t.Fatalf("the last owner leaving: %d, want 409", code)
	}
	code, out = api(t, "GET", n.HTTP+"/api/docs", other, nil)
	if code != 200 || !strings.Contains(fmt.Sprint(out["documents"]), id) {
		t.Fatalf("list mine: %d %v", code, out)
	}
	// Link sharing: any logged-in user with the id gets the link's role.
	_, third, _ := login(t, e, n, n, "tess")
	if code, _ := api(t, "GET", n.HTTP+"/api/docs/"+id, third, nil); code != 404 {
		t.Fatalf("before link sharing: %d", code)
	}
	if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+id+"/link", owner, map[string]string{"role": "viewer"}); code != 204 {
		t.Fatalf("link on: %d", code)
	}
	if code, out := api(t, "GET", n.HTTP+"/api/docs/"+id, third, nil); code != 200 || out["role"] != "viewer" {
		t.Fatalf("with the link: %d %v", code, out)
	}
	// A viewer may leave; an anonymous caller gets 401.
	if code, _ := api(t, "DELETE", n.HTTP+"/api/docs/"+id+"/users/oidc:oscar", other, nil); code != 204 {
		t.Fatalf("a viewer leaving: %d", code)
	}
	if code, _ := api(t, "GET", n.HTTP+"/api/docs", "", nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
}

// TestViewerWithJSClient: a viewer on the real automerge-repo client reads
// a document; its edit is refused with an error and close 4403, reaches
// nobody and is not stored; an editor's edits sync.
func TestViewerWithJSClient(t *testing.T) {
	requireJS(t)
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""))
	_, owner, _ := login(t, e, n, n, "olive")
	_, editor, _ := login(t, e, n, n, "eddie")
	_, viewer, _ := login(t, e, n, n, "victor")
	id := ownedDoc(t, n, owner)
	for user, role := range map[string]string{"oidc:eddie": "editor", "oidc:victor": "viewer"} {
		if code, _ := api(t, "PUT", n.HTTP+"/api/docs/"+string(id)+"/users/"+user, owner, map[string]string{"role": role}); code != 204 {
			t.Fatalf("share with %s: %d", user, code)
		}
	}
	runJS(t, "edit.mjs", withToken(n, editor), id.URL(), "E", "--edits", "2")
	// An owner's Go client stays connected: it must never see V.
	watcher := dialPeer(t, withToken(n, owner), "owner-watch")
	wdoc := automerge.New()
	wss := automerge.NewSyncState(wdoc)
	watcher.syncDoc(id, wdoc, wss, true)

	res := runJS(t, "viewer.mjs", withToken(n, viewer), id.URL(), "V")
	if !strings.Contains(fmt.Sprint(res["contentBefore"]), "E-1") {
		t.Fatalf("the viewer did not read the editor's edits: %v", res["contentBefore"])
	}
	if !strings.Contains(fmt.Sprint(res["errors"]), "read-only") {
		t.Fatalf("viewer errors %v", res["errors"])
	}
	// Nobody got V: not the watching owner, not the store, not a new editor.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		m, err := watcher.next(100 * time.Millisecond)
		if err != nil {
			continue
		}
		if m.Type == protocol.TypeSync {
			if _, err := wss.ReceiveMessage(m.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if marks := getMarks(t, wdoc); strings.Contains(marks, "V-0") {
		t.Fatalf("the owner received the viewer's edit: %s", marks)
	}
	if marks := storedMarks(t, n, id); strings.Contains(marks, "V-0") || !strings.Contains(marks, "E-1") {
		t.Fatalf("stored marks %s: want the editor's and not the viewer's", marks)
	}
	after := runJS(t, "edit.mjs", withToken(n, editor), id.URL(), "F", "--edits", "1")
	if c := fmt.Sprint(after["content"]); strings.Contains(c, "V-0") || !strings.Contains(c, "F-0") {
		t.Fatalf("an editor afterwards reads %s", c)
	}
	if !strings.Contains(auditLog(t, n), `"event":"read_only"`) {
		t.Error("the audit log lacks the refused change")
	}
}

func getMarks(t *testing.T, doc *automerge.Doc) string {
	t.Helper()
	v, err := doc.RootMap().Get("marks")
	if err != nil {
		t.Fatal(err)
	}
	if v.Kind() != automerge.KindMap {
		return ""
	}
	keys, err := v.Map().Keys()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(keys, ",")
}

// TestJSCreateThenClaim: the real automerge-repo client creates a document
// on a login node before anyone claimed it (its first sync is refused);
// once the app claims it through the API, the server lets the open session
// in and the client's document is stored, without the client doing
// anything more.
func TestJSCreateThenClaim(t *testing.T) {
	requireJS(t)
	e := startOIDC(t)
	n := startNode(t, t.TempDir(), e.configure(""))
	_, tok, _ := login(t, e, n, n, "cara")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "claim.mjs", withToken(n, tok))
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
	sc := bufio.NewScanner(stderr)
	var docURL string
	for docURL == "" && sc.Scan() {
		stderrAll.WriteString(sc.Text() + "\n")
		if u, ok := strings.CutPrefix(sc.Text(), "CREATED "); ok {
			docURL = u
		}
	}
	go func() {
		for sc.Scan() {
			stderrAll.WriteString(sc.Text() + "\n")
		}
	}()
	if docURL == "" {
		_ = cmd.Wait()
		t.Fatalf("claim.mjs printed no URL: %s", stderrAll.String())
	}
	for metricValue(t, n, "plait_denials_total") < 1 {
		if ctx.Err() != nil {
			t.Fatal("the unclaimed document was never refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, out := api(t, "POST", n.HTTP+"/api/docs", tok, map[string]string{"documentId": docURL}); code != 201 {
		t.Fatalf("claim: %d %v", code, out)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("claim.mjs: %v\nstdout: %s\nstderr: %s", err, stdout.String(), lastLines(stderrAll.String(), 30))
	}
	id, _ := protocol.ParseDocumentID(docURL)
	if marks := storedMarks(t, n, id); marks != "" {
		t.Fatalf("stored marks %q, want the created document's (empty)", marks)
	}
	loaded := runJS(t, "load.mjs", withToken(n, tok), docURL)
	if !strings.Contains(fmt.Sprint(loaded["content"]), "plait e2e") {
		t.Fatalf("a fresh client loads %v", loaded["content"])
	}
}
