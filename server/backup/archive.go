package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
)

// Format and Version name the archive format (see the package doc).
const (
	Format  = "plait-backup"
	Version = 1
)

// Entry names: every entry is under the directory root.
const (
	root         = "plait-backup/"
	manifestName = root + "manifest.json"
	endName      = root + "end.json"
	docsDir      = root + "docs/"
)

// Limits of the reader, which reads archives nobody vouches for.
const (
	// maxJSONBytes bounds a JSON entry (a document's metadata holds its
	// access list: a million users fit).
	maxJSONBytes = 64 << 20
	// DefaultMaxDocBytes bounds a document's changes when ReadOptions
	// gives no bound: 1 GiB, eight times the node's default max-doc-bytes.
	DefaultMaxDocBytes = 1 << 30
	// maxHeads bounds a document's heads as listed in its metadata.
	maxHeads = 1 << 16
)

// ErrMalformed is wrapped by every error about an archive that is not a
// well-formed Plait backup: wrong format, entries out of order, sizes or
// checksums that do not match, a truncated archive.
var ErrMalformed = errors.New("malformed backup archive")

// Manifest is the archive's first entry.
type Manifest struct {
	Format    string    `json:"format"`  // always Format
	Version   int       `json:"version"` // always Version
	Created   time.Time `json:"created"`
	Source    string    `json:"source"`    // the storage it was exported from, for people
	Documents int       `json:"documents"` // documents the exporter listed (end.json has the count written)
}

// End is the archive's last entry: without it the archive is truncated.
type End struct {
	Documents   int `json:"documents"`    // document entries written
	AccessLists int `json:"access_lists"` // of which with an access list
}

// DocMeta is the metadata entry of one document.
type DocMeta struct {
	ID protocol.DocumentID `json:"id"`
	// Stored is false for a document that has an access list but no
	// changes in the store (claimed, never written): import then restores
	// only its access list.
	Stored bool `json:"stored"`
	// Changes is the number of change chunks in the data entry.
	Changes int `json:"changes"`
	// Heads are the document's heads (hex change hashes, sorted): what
	// every reader checks the changes against.
	Heads []string `json:"heads"`
	// Bytes and SHA256 are the data entry's size and digest.
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
	// Access is the document's access list, if it has one.
	Access *Access `json:"access,omitempty"`
}

// Access is a document's access list as the archive holds it: roles by
// name ("viewer", "editor", "owner"; the link's also "none").
type Access struct {
	Users   map[string]string `json:"users"`
	Link    string            `json:"link"`
	Created time.Time         `json:"created"`
}

func accessOf(a access.DocAccess) *Access {
	out := &Access{Users: make(map[string]string, len(a.Users)), Link: a.Link.String(), Created: a.Created}
	for u, r := range a.Users {
		out.Users[u] = r.String()
	}
	return out
}

// parse checks the access list and returns it with roles as hub.Roles.
func (a *Access) parse() (access.DocAccess, error) {
	out := access.DocAccess{Users: make(map[string]hub.Role, len(a.Users)), Created: a.Created}
	owners := 0
	for u, name := range a.Users {
		r, err := access.ParseRole(name)
		if err != nil || r == hub.RoleNone {
			return out, fmt.Errorf("user %q: invalid role %q", u, name)
		}
		if u == "" {
			return out, errors.New("an empty user name")
		}
		if r == hub.RoleOwner {
			owners++
		}
		out.Users[u] = r
	}
	if owners == 0 {
		return out, errors.New("no owner")
	}
	link, err := access.ParseRole(a.Link)
	if err != nil || link == hub.RoleOwner {
		return out, fmt.Errorf("invalid link role %q", a.Link)
	}
	out.Link = link
	return out, nil
}

// safeStem is what of an id may appear in an entry name.
var safeStem = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// stem names document n's entries: its number, and its id when the id is
// safe in a file name (automerge-repo ids are), for people who unpack the
// archive. Readers do not parse names; they only pair them.
func stem(n int, id protocol.DocumentID) string {
	if safeStem.MatchString(string(id)) {
		return fmt.Sprintf("%s%07d-%s", docsDir, n, id)
	}
	return fmt.Sprintf("%s%07d", docsDir, n)
}

// archiveWriter writes an archive: a gzipped tar of the manifest, each
// document's metadata and changes, and the end entry.
type archiveWriter struct {
	gz      *gzip.Writer
	tw      *tar.Writer
	created time.Time
	end     End
}

func newArchiveWriter(w io.Writer, m Manifest) (*archiveWriter, error) {
	gz, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	a := &archiveWriter{gz: gz, tw: tar.NewWriter(gz), created: m.Created}
	m.Format, m.Version = Format, Version
	if err := a.writeJSON(manifestName, m); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *archiveWriter) writeJSON(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return a.write(name, b)
}

func (a *archiveWriter) write(name string, b []byte) error {
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), ModTime: a.created, Typeflag: tar.TypeReg}
	if err := a.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("failed to write %s: %w", name, err)
	}
	if _, err := a.tw.Write(b); err != nil {
		return fmt.Errorf("failed to write %s: %w", name, err)
	}
	return nil
}

// add writes one document: its metadata (Bytes and SHA256 filled in here)
// and its changes.
func (a *archiveWriter) add(meta DocMeta, data []byte) error {
	sum := sha256.Sum256(data)
	meta.Bytes, meta.SHA256 = len(data), hex.EncodeToString(sum[:])
	s := stem(a.end.Documents, meta.ID)
	if err := a.writeJSON(s+".json", meta); err != nil {
		return err
	}
	if err := a.write(s+".automerge", data); err != nil {
		return err
	}
	a.end.Documents++
	if meta.Access != nil {
		a.end.AccessLists++
	}
	return nil
}

// close writes the end entry and flushes everything; it does not close
// the underlying writer.
func (a *archiveWriter) close() error {
	if err := a.writeJSON(endName, a.end); err != nil {
		return err
	}
	if err := a.tw.Close(); err != nil {
		return fmt.Errorf("failed to finish the archive: %w", err)
	}
	if err := a.gz.Close(); err != nil {
		return fmt.Errorf("failed to finish the archive: %w", err)
	}
	return nil
}

// ReadOptions bound what a reader accepts.
type ReadOptions struct {
	// MaxDocBytes bounds one document's changes (zero: DefaultMaxDocBytes).
	MaxDocBytes int64
}

// archiveReader reads an archive entry by entry, checking its structure,
// sizes and digests; verify checks a document's changes against its heads.
type archiveReader struct {
	tr       *tar.Reader
	gz       *gzip.Reader
	manifest Manifest
	maxDoc   int64
	docs     int
	access   int
	done     bool
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

func newArchiveReader(r io.Reader, opts ReadOptions) (*archiveReader, error) {
	if opts.MaxDocBytes <= 0 {
		opts.MaxDocBytes = DefaultMaxDocBytes
	}
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, malformed("not gzip: %v", err)
	}
	gz.Multistream(false)
	a := &archiveReader{tr: tar.NewReader(gz), gz: gz, maxDoc: opts.MaxDocBytes}
	name, b, err := a.entry(maxJSONBytes)
	if err != nil {
		return nil, err
	}
	if name != manifestName {
		return nil, malformed("first entry is %q, want %q", name, manifestName)
	}
	if err := strictJSON(b, &a.manifest); err != nil {
		return nil, malformed("manifest: %v", err)
	}
	if a.manifest.Format != Format || a.manifest.Version != Version {
		return nil, malformed("format %q version %d, want %q version %d", a.manifest.Format, a.manifest.Version, Format, Version)
	}
	if a.manifest.Documents < 0 {
		return nil, malformed("manifest: %d documents", a.manifest.Documents)
	}
	return a, nil
}

// entry reads the next entry, at most limit bytes.
func (a *archiveReader) entry(limit int64) (string, []byte, error) {
	hdr, err := a.tr.Next()
	if errors.Is(err, io.EOF) {
		return "", nil, malformed("truncated: no %s", endName)
	}
	if err != nil {
		return "", nil, malformed("%v", err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return "", nil, malformed("entry %q is not a regular file", hdr.Name)
	}
	if hdr.Size < 0 || hdr.Size > limit {
		return "", nil, malformed("entry %q has %d bytes, more than the %d allowed", hdr.Name, hdr.Size, limit)
	}
	// Grow with what arrives rather than trust the header's size: a
	// header claiming a gigabyte in front of a few bytes costs a few bytes.
	var buf bytes.Buffer
	buf.Grow(int(min(hdr.Size, 1<<20)))
	if _, err := io.Copy(&buf, io.LimitReader(a.tr, hdr.Size)); err != nil {
		return "", nil, malformed("entry %q: %v", hdr.Name, err)
	}
	if int64(buf.Len()) != hdr.Size {
		return "", nil, malformed("entry %q: %d of %d bytes", hdr.Name, buf.Len(), hdr.Size)
	}
	return hdr.Name, buf.Bytes(), nil
}

// strictJSON decodes exactly one JSON value, refusing unknown fields.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// next returns the next document, its metadata checked for form and its
// data for size and digest (not yet against its heads: see verify), or
// io.EOF after the end entry, once the counts it gives match what was read.
func (a *archiveReader) next() (DocMeta, []byte, error) {
	var meta DocMeta
	if a.done {
		return meta, nil, io.EOF
	}
	name, b, err := a.entry(maxJSONBytes)
	if err != nil {
		return meta, nil, err
	}
	if name == endName {
		return meta, nil, a.finish(b)
	}
	s, ok := strings.CutSuffix(name, ".json")
	if !ok || !strings.HasPrefix(s, docsDir) {
		return meta, nil, malformed("unexpected entry %q", name)
	}
	if err := strictJSON(b, &meta); err != nil {
		return meta, nil, malformed("%s: %v", name, err)
	}
	if err := checkMeta(&meta, a.maxDoc); err != nil {
		return meta, nil, malformed("%s: %v", name, err)
	}
	dname, data, err := a.entry(a.maxDoc)
	if err != nil {
		return meta, nil, err
	}
	if dname != s+".automerge" {
		return meta, nil, malformed("entry %q follows %q, want %q", dname, name, s+".automerge")
	}
	if len(data) != meta.Bytes {
		return meta, nil, malformed("%s: %d bytes, the metadata says %d", dname, len(data), meta.Bytes)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != meta.SHA256 {
		return meta, nil, malformed("%s: SHA-256 does not match the metadata", dname)
	}
	a.docs++
	if meta.Access != nil {
		a.access++
	}
	return meta, data, nil
}

func checkMeta(m *DocMeta, maxDoc int64) error {
	if err := hub.CheckStoreCall(context.Background(), false, m.ID); err != nil {
		return err
	}
	if len(m.ID) > 4096 {
		return fmt.Errorf("document id of %d bytes", len(m.ID))
	}
	if m.Changes < 0 || m.Bytes < 0 || int64(m.Bytes) > maxDoc {
		return fmt.Errorf("%d changes, %d bytes", m.Changes, m.Bytes)
	}
	if len(m.Heads) > maxHeads {
		return fmt.Errorf("%d heads", len(m.Heads))
	}
	for _, h := range m.Heads {
		if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
			return fmt.Errorf("head %q is not a hex SHA-256", h)
		}
	}
	if !m.Stored && (m.Changes != 0 || m.Bytes != 0 || m.Access == nil) {
		return errors.New("a document that is not stored has no changes and must have an access list")
	}
	if m.Access != nil {
		if _, err := m.Access.parse(); err != nil {
			return fmt.Errorf("access list of %s: %v", m.ID, err)
		}
	}
	return nil
}

// finish checks the end entry and that nothing follows it.
func (a *archiveReader) finish(b []byte) error {
	var end End
	if err := strictJSON(b, &end); err != nil {
		return malformed("%s: %v", endName, err)
	}
	if end.Documents != a.docs || end.AccessLists != a.access {
		return malformed("%s counts %d documents and %d access lists, the archive holds %d and %d", endName, end.Documents, end.AccessLists, a.docs, a.access)
	}
	if _, err := a.tr.Next(); !errors.Is(err, io.EOF) {
		return malformed("entries after %s", endName)
	}
	// The gzip stream must end cleanly too (its checksum is checked at
	// the end): drain the tar padding.
	if _, err := io.Copy(io.Discard, io.LimitReader(a.gz, 1<<20)); err != nil {
		return malformed("%v", err)
	}
	a.done = true
	return io.EOF
}
