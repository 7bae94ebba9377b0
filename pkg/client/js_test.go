package client_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
)

const jsDir = "../../server/testdata/js"

// runJS runs one of the automerge-repo e2e scripts and returns its JSON.
func runJS(t *testing.T, script string, args ...string) map[string]any {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: this test needs Node >= 20 (CI installs it)")
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "@automerge", "automerge-repo")); err != nil {
		t.Fatalf("JS test clients are not installed: run `make deps`: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir = jsDir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var res map[string]any
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	_ = json.Unmarshal([]byte(lines[len(lines)-1]), &res)
	if err != nil || res["ok"] != true {
		t.Fatalf("node %s: %v\n%s\n%s", script, err, out.String(), errb.String())
	}
	return res
}

// TestInteropWithJSClient: the Go client and the real automerge-repo JS
// client edit one document through the node.
func TestInteropWithJSClient(t *testing.T) {
	n := startNode(t)
	c := newClient(t, client.Options{URLs: []string{n.URL()}})
	h := created(t, c, func(d *automerge.Doc) error {
		if err := d.RootMap().Set("items", automerge.NewList()); err != nil {
			return err
		}
		return d.RootMap().Set("marks", automerge.NewMap())
	})
	got := make(chan struct{}, 16)
	h.Subscribe(func(client.Event) {
		select {
		case got <- struct{}{}: // a wake-up: one waiting is enough
		default: // never block the client's reader (see Subscribe)
		}
	})
	runJS(t, "edit.mjs", n.URL(), h.URL(), "js", "--edits", "3")
	deadline := time.After(10 * time.Second)
	for {
		var items []string
		_ = h.View(func(d *automerge.Doc) error {
			l, err := d.RootMap().Get("items")
			if err != nil {
				return err
			}
			vs, _ := l.List().Values()
			for _, v := range vs {
				if v.Kind() == automerge.KindText { // JS Automerge 3 writes strings as text
					s, _ := v.Text().Get()
					items = append(items, s)
				} else {
					items = append(items, v.Str())
				}
			}
			return nil
		})
		if slices.Equal(items, []string{"js-0", "js-1", "js-2"}) {
			break
		}
		select {
		case <-got:
		case <-deadline:
			t.Fatalf("the Go client has items %v, want the JS client's 3 edits", items)
		}
	}
	if err := h.Change(func(d *automerge.Doc) error {
		l, _ := d.RootMap().Get("items")
		return l.List().Append("go-0")
	}); err != nil {
		t.Fatal(err)
	}
	waitInSync(t, h)
	var heads []string
	for _, x := range h.Heads() {
		heads = append(heads, hex.EncodeToString(x[:]))
	}
	hj, _ := json.Marshal(heads)
	res := runJS(t, "load.mjs", n.URL(), h.URL(), string(hj))
	content, _ := res["content"].(map[string]any)
	items, _ := content["items"].([]any)
	if len(items) != 4 || items[3] != "go-0" {
		t.Fatalf("the JS client loaded items %v", items)
	}
}
