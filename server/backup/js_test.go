package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/server/node"
)

const jsDir = "../testdata/js"

// The archive's documents are Automerge binaries: the official JS
// implementation (@automerge/automerge, as in server/testdata/js) loads
// each .automerge entry to the heads the metadata lists and the content
// the store held.
func TestArchiveLoadsInAutomergeJS(t *testing.T) {
	requireJS(t)
	src := node.Config{DataDir: t.TempDir(), RedisPrefix: "plait"}
	st, err := Open(t.Context(), src, true)
	if err != nil {
		t.Fatal(err)
	}
	f := fill(t, st.Docs.(hub.Store), st.ACL)
	var archive bytes.Buffer
	if _, err := Export(t.Context(), st.Docs, st.ACL, &archive, Options{}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	dir := t.TempDir()
	var files []string
	metas := map[string]DocMeta{}
	es := unpack(t, archive.Bytes())
	for i, e := range es {
		s, ok := strings.CutSuffix(e.name, ".automerge")
		if !ok {
			continue
		}
		var m DocMeta
		if err := json.Unmarshal(es[i-1].data, &m); err != nil || es[i-1].name != s+".json" {
			t.Fatalf("metadata of %s: %v", e.name, err)
		}
		if !m.Stored {
			continue
		}
		file := filepath.Join(dir, filepath.Base(e.name))
		if err := os.WriteFile(file, e.data, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, file)
		metas[file] = m
	}
	if len(files) != 4 {
		t.Fatalf("%d stored documents in the archive, want 4", len(files))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{"loadbinary.mjs"}, files...)...)
	cmd.Dir = jsDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node loadbinary.mjs: %v\n%s", err, stderr.String())
	}
	var res struct {
		OK   bool `json:"ok"`
		Docs []struct {
			File    string         `json:"file"`
			Heads   []string       `json:"heads"`
			Content map[string]any `json:"content"`
		} `json:"docs"`
	}
	if err := json.Unmarshal(out, &res); err != nil || !res.OK || len(res.Docs) != len(files) {
		t.Fatalf("node loadbinary.mjs: %v: %s", err, out)
	}
	for _, d := range res.Docs {
		m := metas[d.File]
		if !slices.Equal(d.Heads, m.Heads) {
			t.Errorf("%s: JS heads %v, metadata %v", m.ID, d.Heads, m.Heads)
		}
		if want := sortedHeads(f.docs[m.ID]); !slices.Equal(d.Heads, want) {
			t.Errorf("%s: JS heads %v, the source's %v", m.ID, d.Heads, want)
		}
		want := values(t, f.docs[m.ID])
		if len(d.Content) != len(want) {
			t.Errorf("%s: JS content %v, want %v", m.ID, d.Content, want)
		}
	}
}

// serveRestored starts a node on the storage cfg names (anonymous, on
// loopback) and has the JS client load.mjs (automerge-repo) find every
// document of the fixture that has changes, waiting for the source's heads.
func serveRestored(t *testing.T, cfg node.Config, f fixture) {
	t.Helper()
	requireJS(t)
	ncfg, err := node.ParseConfig([]string{"--addr", "127.0.0.1:0", "--data-dir", cfg.DataDir, "--encryption-key-file", cfg.EncryptionKeys,
		"--audit-log", filepath.Join(t.TempDir(), "audit.log")}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", ncfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(t.Context(), ncfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	}()
	for id, d := range f.docs {
		if d == nil || len(d.Heads()) == 0 {
			continue
		}
		heads, _ := json.Marshal(sortedHeads(d))
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		cmd := exec.CommandContext(ctx, "node", "load.mjs", "ws://"+ln.Addr().String()+"/ws", id.URL(), string(heads))
		cmd.Dir = jsDir
		cmd.Env = append(os.Environ(), "PLAIT_E2E_TIMEOUT_MS=40000")
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("node load.mjs %s %s: %v\n%s", id.URL(), heads, err, out)
		}
	}
}

func requireJS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: this test needs Node >= 20 (CI installs it)")
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "@automerge", "automerge-repo")); err != nil {
		t.Fatalf("JS packages are not installed: run `make deps`: %v", err)
	}
}
