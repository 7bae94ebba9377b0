package backup

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/boltstore"
	"github.com/plaithub/plait/hub/redistest"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/node"
)

func noEnv(string) string { return "" }

// run runs `plait cmd args...` as main does and returns its exit code and
// standard error.
func run(t *testing.T, stdin io.Reader, stdout io.Writer, cmd string, args ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	if stdout == nil {
		stdout = io.Discard
	}
	code := Main(t.Context(), cmd, args, noEnv, stdin, stdout, &stderr)
	return code, stderr.String()
}

func mustRun(t *testing.T, cmd string, args ...string) string {
	t.Helper()
	code, stderr := run(t, nil, nil, cmd, args...)
	if code != 0 {
		t.Fatalf("plait %s %q: exit %d\n%s", cmd, args, code, stderr)
	}
	return stderr
}

func writeKey(t *testing.T, id string) string {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	path := filepath.Join(t.TempDir(), id+".keys")
	if err := os.WriteFile(path, []byte(id+":"+base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fixture is what the source storage holds: documents as automerge-go has
// them, and access lists.
type fixture struct {
	docs   map[protocol.DocumentID]*automerge.Doc // nil: claimed only, never stored
	access map[protocol.DocumentID]access.DocAccess
}

func commit(t *testing.T, d *automerge.Doc, key string, v any) {
	t.Helper()
	if err := d.RootMap().Set(key, v); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Commit(key); err != nil {
		t.Fatal(err)
	}
}

// fill writes the fixture's documents into the storage the way nodes
// leave them: batches of changes, a compacted snapshot followed by more
// batches, concurrent branches (two heads), an empty document, a long
// history, a document with access but no changes, and one with changes
// but no access (an anonymous node's).
func fill(t *testing.T, st hub.Store, acl access.ACL) fixture {
	t.Helper()
	ctx := t.Context()
	f := fixture{docs: map[protocol.DocumentID]*automerge.Doc{}, access: map[protocol.DocumentID]access.DocAccess{}}
	created := time.Date(2026, 11, 3, 9, 30, 0, 123456789, time.UTC)
	claim := func(id protocol.DocumentID, owner string, others map[string]hub.Role, link hub.Role) {
		t.Helper()
		if err := acl.Claim(ctx, id, owner, created); err != nil {
			t.Fatal(err)
		}
		users := map[string]hub.Role{owner: hub.RoleOwner}
		for u, r := range others {
			if err := acl.Share(ctx, id, u, r); err != nil {
				t.Fatal(err)
			}
			users[u] = r
		}
		if link != hub.RoleNone {
			if err := acl.SetLink(ctx, id, link); err != nil {
				t.Fatal(err)
			}
		}
		f.access[id] = access.DocAccess{Users: users, Link: link, Created: created}
	}
	appendInc := func(id protocol.DocumentID, d *automerge.Doc) uint64 {
		t.Helper()
		seq, err := st.AppendChanges(ctx, id, d.SaveIncremental())
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}

	// Batches, then a snapshot (an Automerge document, as older nodes
	// wrote them) through the last batch, then more batches.
	a := protocol.NewDocumentID()
	da := automerge.New()
	for i := range 3 {
		commit(t, da, "title", fmt.Sprintf("draft %d", i))
		appendInc(a, da)
	}
	seq := appendInc(a, da)
	if err := st.Compact(ctx, a, da.Save(), seq); err != nil {
		t.Fatal(err)
	}
	commit(t, da, "body", "after the snapshot")
	appendInc(a, da)
	f.docs[a] = da
	claim(a, "github:1", map[string]hub.Role{"github:2": hub.RoleEditor, "oidc:x": hub.RoleViewer}, hub.RoleViewer)

	// Two actors edit concurrently: two heads.
	b := protocol.NewDocumentID()
	db := automerge.New()
	commit(t, db, "shared", "base")
	appendInc(b, db)
	fork, err := db.Fork()
	if err != nil {
		t.Fatal(err)
	}
	commit(t, db, "left", 1)
	commit(t, fork, "right", 2)
	appendInc(b, db)
	if _, err := st.AppendChanges(ctx, b, fork.SaveIncremental()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Merge(fork); err != nil {
		t.Fatal(err)
	}
	if len(db.Heads()) != 2 {
		t.Fatalf("fixture: %d heads, want 2", len(db.Heads()))
	}
	f.docs[b] = db
	claim(b, "github:1", map[string]hub.Role{"google:3": hub.RoleOwner, "github:4": hub.RoleViewer}, hub.RoleEditor)

	// Created by an empty batch: no changes at all.
	c := protocol.NewDocumentID()
	if _, err := st.AppendChanges(ctx, c, nil); err != nil {
		t.Fatal(err)
	}
	f.docs[c] = automerge.New()

	// A longer history, in many batches, with no access list.
	d := protocol.NewDocumentID()
	dd := automerge.New()
	for i := range 300 {
		commit(t, dd, fmt.Sprint("k", i%17), i)
		if i%7 == 0 {
			appendInc(d, dd)
		}
	}
	appendInc(d, dd)
	f.docs[d] = dd

	// Claimed, never written.
	e := protocol.NewDocumentID()
	f.docs[e] = nil
	claim(e, "oidc:owner", nil, hub.RoleNone)
	return f
}

func values(t *testing.T, d *automerge.Doc) map[string]string {
	t.Helper()
	vs, err := d.RootMap().Values()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(vs))
	for k, v := range vs {
		out[k] = v.GoString()
	}
	return out
}

func sortedHeads(d *automerge.Doc) []string {
	out := []string{}
	for _, h := range d.Heads() {
		out = append(out, h.String())
	}
	slices.Sort(out)
	return out
}

// verifyStorage checks, independently of the package's own checks, that
// the storage cfg names holds the fixture: every document loads into
// automerge-go with the fixture's heads and values, and every access list
// is the fixture's.
func verifyStorage(t *testing.T, cfg node.Config, f fixture) {
	t.Helper()
	ctx := t.Context()
	st, err := Open(ctx, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ids, err := st.Docs.DocumentIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want []protocol.DocumentID
	for id, d := range f.docs {
		if d != nil {
			want = append(want, id)
		}
	}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("%s: documents %q, want %q", st.Desc, ids, want)
	}
	for _, id := range ids {
		sd, err := st.Docs.LoadDoc(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		raws, err := sd.Changes()
		if err != nil {
			t.Fatal(err)
		}
		got, err := automerge.Load(bytes.Join(raws, nil))
		if err != nil {
			t.Fatalf("%s: document %s does not load into automerge-go: %v", st.Desc, id, err)
		}
		if g, w := sortedHeads(got), sortedHeads(f.docs[id]); !slices.Equal(g, w) {
			t.Errorf("%s: document %s has heads %v, want %v", st.Desc, id, g, w)
		}
		if g, w := values(t, got), values(t, f.docs[id]); !maps.Equal(g, w) {
			t.Errorf("%s: document %s is %s, want %s", st.Desc, id, g, w)
		}
	}
	claimed, err := st.ACL.ClaimedDocs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w := slices.Sorted(maps.Keys(f.access)); !slices.Equal(claimed, w) {
		t.Fatalf("%s: access lists of %q, want %q", st.Desc, claimed, w)
	}
	for id, w := range f.access {
		g, err := st.ACL.Access(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(g.Users, w.Users) || g.Link != w.Link || !g.Created.Equal(w.Created) {
			t.Errorf("%s: access of %s is %+v, want %+v", st.Desc, id, g, w)
		}
	}
}

// TestRoundTripBoltRedisBolt: an encrypted embedded store is exported,
// imported into Redis (a real redis-server), exported from Redis and
// imported into another embedded store under another key; every step
// holds the same documents (heads and values, checked by automerge-go)
// and access lists.
func TestRoundTripBoltRedisBolt(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t, redistest.Options{})
	src := node.Config{DataDir: t.TempDir(), EncryptionKeys: writeKey(t, "src1"), RedisPrefix: "plait"}
	st, err := Open(ctx, src, true)
	if err != nil {
		t.Fatal(err)
	}
	f := fill(t, st.Docs.(hub.Store), st.ACL)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	verifyStorage(t, src, f)

	tmp := t.TempDir()
	one, two := filepath.Join(tmp, "one.tar.gz"), filepath.Join(tmp, "two.tar.gz")
	out := mustRun(t, "export", "--data-dir", src.DataDir, "--encryption-key-file", src.EncryptionKeys, one)
	if !strings.Contains(out, "export: done: 5 documents, 3 access lists") || !strings.Contains(out, "verify: done: 5 documents") {
		t.Errorf("export output:\n%s", out)
	}

	mid := node.Config{RedisURL: srv.URL(), RedisPrefix: "restored"}
	out = mustRun(t, "import", "--redis-url", mid.RedisURL, "--redis-prefix", mid.RedisPrefix, one)
	if !strings.Contains(out, "import: done: 5 documents, 3 access lists") {
		t.Errorf("import output:\n%s", out)
	}
	verifyStorage(t, mid, f)

	mustRun(t, "export", "--redis-url", mid.RedisURL, "--redis-prefix", mid.RedisPrefix, two)
	dst := node.Config{DataDir: filepath.Join(t.TempDir(), "new"), EncryptionKeys: writeKey(t, "dst1"), RedisPrefix: "plait"}
	mustRun(t, "import", "--data-dir", dst.DataDir, "--encryption-key-file", dst.EncryptionKeys, two)
	verifyStorage(t, dst, f)

	// A node on the restored storage serves each document to a real
	// automerge-repo client, which gets the source's heads.
	serveRestored(t, dst, f)

	// The new store is encrypted at rest under its own key: read without
	// the key, its batches are sealed.
	plain, err := boltstore.Open(filepath.Join(dst.DataDir, "plait.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for id, d := range f.docs {
		if d == nil || len(d.Heads()) == 0 {
			continue
		}
		sd, err := plain.LoadDoc(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(sd.Batches) != 1 || !bytes.HasPrefix(sd.Batches[0].Data, []byte("PLE1")) {
			t.Errorf("document %s: %d batches, not sealed", id, len(sd.Batches))
		}
	}
}

// Standard output and input carry the archive with "-".
func TestExportImportThroughPipes(t *testing.T) {
	ctx := t.Context()
	src := node.Config{DataDir: t.TempDir(), RedisPrefix: "plait"}
	st, err := Open(ctx, src, true)
	if err != nil {
		t.Fatal(err)
	}
	f := fill(t, st.Docs.(hub.Store), st.ACL)
	st.Close()
	var archive bytes.Buffer
	if code, stderr := run(t, nil, &archive, "export", "--data-dir", src.DataDir, "-"); code != 0 {
		t.Fatalf("export: %d %s", code, stderr)
	}
	dst := node.Config{DataDir: t.TempDir(), RedisPrefix: "plait"}
	if code, stderr := run(t, bytes.NewReader(archive.Bytes()), nil, "import", "--data-dir", dst.DataDir, "-"); code != 0 {
		t.Fatalf("import: %d %s", code, stderr)
	}
	verifyStorage(t, dst, f)

	// A truncated archive file is refused before anything is written.
	cut := filepath.Join(t.TempDir(), "cut.tar.gz")
	if err := os.WriteFile(cut, archive.Bytes()[:archive.Len()*9/10], 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	if code, stderr := run(t, nil, nil, "import", "--data-dir", empty, cut); code != 1 || !strings.Contains(stderr, ErrMalformed.Error()) {
		t.Fatalf("import of a truncated file: exit %d, %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(empty, "plait.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("import of a truncated file created the store: %v", err)
	}

	// Importing again finds the storage not empty and writes nothing.
	code, stderr := run(t, bytes.NewReader(archive.Bytes()), nil, "import", "--data-dir", dst.DataDir, "-")
	if code != 1 || !strings.Contains(stderr, ErrNotEmpty.Error()) {
		t.Fatalf("second import: exit %d, %s", code, stderr)
	}
	verifyStorage(t, dst, f)
}

func TestCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "exists.tar.gz")
	if err := os.WriteFile(existing, []byte("old backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cmd  string
		args []string
		code int
		want string
	}{
		{"export", []string{"--data-dir", dir, existing}, 1, "exists"},
		{"export", []string{"--data-dir", filepath.Join(dir, "none"), filepath.Join(dir, "x.tar.gz")}, 1, "no embedded store"},
		{"export", []string{"--data-dir", dir}, 2, "want one archive FILE"},
		{"import", []string{"--data-dir", dir, "a", "b"}, 2, "want one archive FILE"},
		{"import", []string{"--data-dir", dir, filepath.Join(dir, "missing.tar.gz")}, 1, "no such file"},
		{"import", []string{"--data-dir", dir, existing}, 1, "not gzip"},
		{"import", []string{"--redis-url", "http://x", existing}, 2, "redis-url must start"},
		{"export", []string{"--data-dir", dir, "--encryption-key-file", existing, filepath.Join(dir, "y.tar.gz")}, 1, "encryption-key-file"},
		{"restore", nil, 2, "unknown command"},
	} {
		code, stderr := run(t, nil, nil, tc.cmd, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("plait %s %q: exit %d, %q; want exit %d and %q", tc.cmd, tc.args, code, stderr, tc.code, tc.want)
		}
	}
	// A failed export leaves no file behind.
	if names, _ := filepath.Glob(filepath.Join(dir, ".*partial")); len(names) > 0 {
		t.Errorf("left behind: %q", names)
	}
}

// A running node holds the embedded store: export says to stop it.
// (bbolt's lock timeout makes this take five seconds.)
func TestExportLockedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the lock timeout")
	}
	dir := t.TempDir()
	held, err := boltstore.Open(filepath.Join(dir, "plait.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	code, stderr := run(t, nil, nil, "export", "--data-dir", dir, filepath.Join(t.TempDir(), "x.tar.gz"))
	if code != 1 || !strings.Contains(stderr, "stop the node first") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}
