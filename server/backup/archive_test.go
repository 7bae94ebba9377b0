package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/hub/memstore"
	"github.com/plaithub/plait/pkg/protocol"
)

// smallArchive exports two documents of a memstore: one with three
// changes, one empty.
func smallArchive(t testing.TB) []byte {
	t.Helper()
	st := memstore.New()
	d := automerge.New()
	for i := range 3 {
		if err := d.RootMap().Set("n", int64(i)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Commit("edit"); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	if _, err := st.AppendChanges(ctx, protocol.NewDocumentID(), d.SaveIncremental()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AppendChanges(ctx, protocol.NewDocumentID(), nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := Export(ctx, st, nil, &buf, Options{Source: "test"}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type entry struct {
	name string
	data []byte
}

func unpack(t *testing.T, archive []byte) []entry {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []entry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{h.Name, b})
	}
}

func pack(t testing.TB, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range es {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o600, Size: int64(len(e.data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The archive's layout is the documented one.
func TestArchiveLayout(t *testing.T) {
	es := unpack(t, smallArchive(t))
	if len(es) != 6 || es[0].name != manifestName || es[5].name != endName {
		t.Fatalf("entries: %v", names(es))
	}
	for i := 1; i < 5; i += 2 {
		s := strings.TrimSuffix(es[i].name, ".json")
		if !strings.HasPrefix(s, docsDir) || es[i+1].name != s+".automerge" {
			t.Fatalf("entries %d, %d: %q, %q", i, i+1, es[i].name, es[i+1].name)
		}
	}
	if !strings.Contains(string(es[0].data), `"format":"plait-backup","version":1`) {
		t.Errorf("manifest: %s", es[0].data)
	}
	if string(es[5].data) != `{"documents":2,"access_lists":0}` {
		t.Errorf("end: %s", es[5].data)
	}
	if _, err := Verify(t.Context(), bytes.NewReader(pack(t, es)), Options{}); err != nil {
		t.Fatalf("repacked archive: %v", err)
	}
}

func names(es []entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.name)
	}
	return out
}

// Every kind of damage is a clear error, and import writes nothing it
// could not check.
func TestArchiveDamage(t *testing.T) {
	good := smallArchive(t)
	es := unpack(t, good)
	// es: manifest, meta A, data A, meta B, data B, end (A sorts first or
	// second; find the one with changes).
	withChanges := 1
	if len(es[2].data) == 0 {
		withChanges = 3
	}
	edit := func(f func(es []entry) []entry) []byte {
		c := make([]entry, len(es))
		for i, e := range es {
			c[i] = entry{e.name, bytes.Clone(e.data)}
		}
		return pack(t, f(c))
	}
	for name, tc := range map[string]struct {
		archive []byte
		want    error
		text    string
	}{
		"not gzip":        {[]byte("plain text"), ErrMalformed, "not gzip"},
		"truncated gzip":  {good[:len(good)/2], ErrMalformed, ""},
		"no end entry":    {edit(func(es []entry) []entry { return es[:5] }), ErrMalformed, "truncated"},
		"missing data":    {edit(func(es []entry) []entry { return append(es[:2], es[3:]...) }), ErrMalformed, ""},
		"entry after end": {edit(func(es []entry) []entry { return append(es, entry{"x", nil}) }), ErrMalformed, "after"},
		"wrong count": {edit(func(es []entry) []entry {
			es[5].data = []byte(`{"documents":3,"access_lists":0}`)
			return es
		}), ErrMalformed, "counts"},
		"flipped change byte": {edit(func(es []entry) []entry {
			es[withChanges+1].data[20] ^= 1
			return es
		}), ErrMalformed, "SHA-256"},
		"other version": {edit(func(es []entry) []entry {
			es[0].data = bytes.Replace(es[0].data, []byte(`"version":1`), []byte(`"version":2`), 1)
			return es
		}), ErrMalformed, "version 2"},
		"unknown field": {edit(func(es []entry) []entry {
			es[withChanges].data = bytes.Replace(es[withChanges].data, []byte(`{`), []byte(`{"extra":1,`), 1)
			return es
		}), ErrMalformed, "unknown field"},
		"wrong heads": {edit(func(es []entry) []entry {
			es[withChanges].data = bytes.Replace(es[withChanges].data, []byte(`"heads":["`), []byte(`"heads":["00`), 1)
			es[withChanges].data = bytes.Replace(es[withChanges].data, []byte(`","`), []byte(`","`), 1)
			return es
		}), ErrMalformed, "not a hex SHA-256"},
		"other valid heads": {edit(func(es []entry) []entry {
			i := bytes.Index(es[withChanges].data, []byte(`"heads":["`)) + len(`"heads":["`)
			copy(es[withChanges].data[i:], strings.Repeat("ab", 32))
			return es
		}), ErrMismatch, "the metadata says"},
		"access without owner": {edit(func(es []entry) []entry {
			es[withChanges].data = bytes.Replace(es[withChanges].data, []byte(`"sha256"`), []byte(`"access":{"users":{"u":"viewer"},"link":"none","created":"2026-01-01T00:00:00Z"},"sha256"`), 1)
			return es
		}), ErrMalformed, "no owner"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(t.Context(), bytes.NewReader(tc.archive), Options{})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Verify: %v, want %v containing %q", err, tc.want, tc.text)
			}
			st := memstore.New()
			_, err = Import(t.Context(), bytes.NewReader(tc.archive), st, nil, Options{})
			if err == nil {
				t.Fatal("Import accepted it")
			}
			// Import streams: the documents before the damage are written
			// (plait import checks a file whole first); a damaged document
			// never is.
			ids, _ := st.DocumentIDs(t.Context())
			if withChanges == 1 && len(ids) > 0 && !strings.Contains(name, "end") && !strings.Contains(name, "count") {
				t.Errorf("Import wrote %d documents", len(ids))
			}
		})
	}
}

// A document larger than the bound is refused before it is read whole.
func TestArchiveDocBound(t *testing.T) {
	_, err := Verify(t.Context(), bytes.NewReader(smallArchive(t)), Options{MaxDocBytes: 10})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("Verify with a 10-byte bound: %v", err)
	}
}

// FuzzReadArchive feeds arbitrary tar streams (gzipped here, so the fuzzer
// mutates the tar entries and their JSON, not gzip's checksums) to Verify
// and Import: they return an error or succeed, never panic or hang.
func FuzzReadArchive(f *testing.F) {
	good := smallArchive(f)
	gz, err := gzip.NewReader(bytes.NewReader(good))
	if err != nil {
		f.Fatal(err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, tarBytes []byte) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(tarBytes)
		_ = zw.Close()
		_, _ = Verify(t.Context(), bytes.NewReader(buf.Bytes()), Options{MaxDocBytes: 1 << 20})
		_, _ = Import(t.Context(), bytes.NewReader(buf.Bytes()), memstore.New(), nil, Options{MaxDocBytes: 1 << 20})
	})
}

// Long runs report progress: a line per interval, then a summary.
func TestProgress(t *testing.T) {
	var out strings.Builder
	if _, err := Verify(t.Context(), bytes.NewReader(smallArchive(t)), Options{Progress: &out, ProgressEvery: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "verify: 1 of 2 documents (50%), ") ||
		!strings.HasPrefix(lines[1], "verify: 2 of 2 documents (100%), 3 changes, ") ||
		!strings.HasPrefix(lines[2], "verify: done: 2 documents, 0 access lists, 3 changes, ") {
		t.Errorf("progress:\n%s", out.String())
	}
}

// An entry whose header claims far more bytes than follow costs what
// follows, not what it claims.
func TestArchiveClaimedSizeNotAllocated(t *testing.T) {
	es := unpack(t, smallArchive(t))
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	const claimed = 512 << 20
	for _, e := range es[:1] {
		_ = tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o600, Size: int64(len(e.data)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(e.data)
	}
	// The metadata as it would be for a 512 MiB document; it is checked
	// only once its data has been read, which never completes.
	var m DocMeta
	if err := json.Unmarshal(es[1].data, &m); err != nil {
		t.Fatal(err)
	}
	m.Bytes = claimed
	mb, _ := json.Marshal(m)
	_ = tw.WriteHeader(&tar.Header{Name: es[1].name, Mode: 0o600, Size: int64(len(mb)), Typeflag: tar.TypeReg})
	_, _ = tw.Write(mb)
	_ = tw.WriteHeader(&tar.Header{Name: es[2].name, Mode: 0o600, Size: claimed, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("only a few bytes"))
	_ = gz.Close() // the tar is cut short

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Verify(t.Context(), bytes.NewReader(buf.Bytes()), Options{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("Verify: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("reading a truncated entry that claims %d bytes allocated %d", claimed, grew)
	}
}
