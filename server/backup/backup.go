package backup

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
	"github.com/plaithub/plait/server/access"
)

// DocStore is what export reads documents from and import writes them
// to: the hub.Store methods it uses, and a listing of every document
// (boltstore, redisstore and cryptstore have DocumentIDs; see
// storetest.RunListTests).
type DocStore interface {
	DocumentIDs(ctx context.Context) ([]protocol.DocumentID, error)
	LoadDoc(ctx context.Context, id protocol.DocumentID) (hub.StoredDoc, error)
	AppendChanges(ctx context.Context, id protocol.DocumentID, batch []byte) (uint64, error)
}

// ACLStore is what export reads access lists from and import writes them
// to: an access.ACL that lists its claimed documents (boltauth and
// redisauth; see authtest.RunClaimedDocsTests).
type ACLStore interface {
	access.ACL
	ClaimedDocs(ctx context.Context) ([]protocol.DocumentID, error)
}

// ErrNotEmpty is returned by Import when the target already holds
// documents or access lists: import restores into empty storage only, so
// that it never mixes two histories or two owners' lists.
var ErrNotEmpty = errors.New("the target storage is not empty")

// ErrMismatch is returned when what was read back (from the archive after
// export, from the store after import) does not have the heads, changes or
// access list that were written.
var ErrMismatch = errors.New("read back differs from what was written")

// Summary counts what an export or import did.
type Summary struct {
	Documents   int   // document entries
	AccessLists int   // of which with an access list
	Changes     int   // change chunks
	Bytes       int64 // bytes of changes
}

// Options are the options of Export, Import and Verify. The zero value
// reports no progress.
type Options struct {
	// Progress, if set, receives a line of progress at most every
	// ProgressEvery, and one at the end.
	Progress io.Writer
	// ProgressEvery is the interval of progress lines (zero: 2 seconds).
	ProgressEvery time.Duration
	// Source describes the storage in the manifest (Export).
	Source string
	// MaxDocBytes bounds one document's changes read from an archive
	// (Import, Verify; zero: DefaultMaxDocBytes).
	MaxDocBytes int64
}

// ordered returns a document's changes in dependency order, then those
// whose dependencies are missing (a store that lost data may hold some;
// they are kept, as the store kept them), and its heads as sorted hex.
func ordered(raws [][]byte) (chunks [][]byte, heads []string, err error) {
	eng := syncengine.New(syncengine.Options{MaxQueued: len(raws) + 1, MaxQueuedBytes: math.MaxInt, MaxOpsPerChange: math.MaxInt32, MaxOpsPerKey: math.MaxInt32})
	if _, err := eng.AddChanges(nil, raws...); err != nil {
		return nil, nil, fmt.Errorf("failed to index the changes: %w", err)
	}
	chunks = make([][]byte, 0, len(raws))
	eng.All(func(raw []byte) bool {
		chunks = append(chunks, raw)
		return true
	})
	if eng.Queued() > 0 {
		seen := make(map[syncengine.Hash]bool)
		for _, raw := range raws {
			c, err := amsync.ParseChange(raw)
			if err != nil {
				return nil, nil, err
			}
			if !eng.Has(c.Hash) && !seen[c.Hash] {
				seen[c.Hash] = true
				chunks = append(chunks, raw)
			}
		}
	}
	for _, h := range eng.Heads() {
		heads = append(heads, hex.EncodeToString(h[:]))
	}
	slices.Sort(heads)
	return chunks, heads, nil
}

// check verifies data against meta: it splits into meta.Changes valid
// change chunks whose heads are meta.Heads.
func check(meta DocMeta, data []byte) error {
	raws, err := amsync.SplitChunks(data)
	if err != nil {
		return fmt.Errorf("%w: document %s: %v", ErrMalformed, meta.ID, err)
	}
	chunks, heads, err := ordered(raws)
	if err != nil {
		return fmt.Errorf("%w: document %s: %v", ErrMalformed, meta.ID, err)
	}
	if len(chunks) != meta.Changes || !slices.Equal(heads, nonNil(meta.Heads)) {
		return fmt.Errorf("%w: document %s: %d changes with heads %v, the metadata says %d with %v", ErrMismatch, meta.ID, len(chunks), heads, meta.Changes, meta.Heads)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Export writes every document of docs and every access list of acl (nil:
// none) to w as an archive. Each document is read in one LoadDoc
// (atomic per document); documents written while the export runs may or
// may not be in it, so export a stopped node, or accept a backup that is
// consistent per document.
func Export(ctx context.Context, docs DocStore, acl ACLStore, w io.Writer, opts Options) (Summary, error) {
	var sum Summary
	ids, err := docs.DocumentIDs(ctx)
	if err != nil {
		return sum, err
	}
	stored := make(map[protocol.DocumentID]bool, len(ids))
	for _, id := range ids {
		stored[id] = true
	}
	all := slices.Clone(ids)
	claimed := map[protocol.DocumentID]bool{}
	if acl != nil {
		cl, err := acl.ClaimedDocs(ctx)
		if err != nil {
			return sum, err
		}
		for _, id := range cl {
			claimed[id] = true
			if !stored[id] {
				all = append(all, id)
			}
		}
	}
	slices.Sort(all)
	aw, err := newArchiveWriter(w, Manifest{Created: time.Now().UTC(), Source: opts.Source, Documents: len(all)})
	if err != nil {
		return sum, err
	}
	prog := newProgress(opts, "export", len(all))
	for _, id := range all {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		meta := DocMeta{ID: id, Heads: []string{}}
		var data []byte
		sd, err := docs.LoadDoc(ctx, id)
		switch {
		case errors.Is(err, hub.ErrNotFound):
			// Deleted since it was listed, or only claimed.
		case err != nil:
			return sum, fmt.Errorf("failed to read document %s: %w", id, err)
		default:
			raws, err := sd.Changes()
			if err != nil {
				return sum, fmt.Errorf("failed to read document %s: %w", id, err)
			}
			chunks, heads, err := ordered(raws)
			if err != nil {
				return sum, fmt.Errorf("document %s: %w", id, err)
			}
			meta.Stored, meta.Changes, meta.Heads = true, len(chunks), nonNil(heads)
			data = bytes.Join(chunks, nil)
		}
		if claimed[id] {
			a, err := acl.Access(ctx, id)
			switch {
			case errors.Is(err, access.ErrNotFound):
			case err != nil:
				return sum, fmt.Errorf("failed to read the access list of %s: %w", id, err)
			default:
				meta.Access = accessOf(a)
			}
		}
		if !meta.Stored && meta.Access == nil {
			continue // gone since it was listed
		}
		meta.Bytes = len(data)
		if err := aw.add(meta, data); err != nil {
			return sum, err
		}
		sum.add(meta)
		prog.step(sum)
	}
	if err := aw.close(); err != nil {
		return sum, err
	}
	prog.done(sum)
	return sum, nil
}

func (s *Summary) add(m DocMeta) {
	s.Documents++
	s.Changes += m.Changes
	s.Bytes += int64(m.Bytes)
	if m.Access != nil {
		s.AccessLists++
	}
}

// Verify reads a whole archive and checks every document's changes
// against its heads, and the archive's structure, sizes and digests.
func Verify(ctx context.Context, r io.Reader, opts Options) (Summary, error) {
	return eachDocument(ctx, r, opts, "verify", check)
}

// eachDocument reads the archive r document by document and hands each to
// fn, counting it and reporting progress (as verb) once fn is done with
// it. It stops at the first error (the archive's, fn's, or ctx's) and
// returns what was done until then.
func eachDocument(ctx context.Context, r io.Reader, opts Options, verb string, fn func(meta DocMeta, data []byte) error) (Summary, error) {
	var sum Summary
	ar, err := newArchiveReader(r, ReadOptions{MaxDocBytes: opts.MaxDocBytes})
	if err != nil {
		return sum, err
	}
	prog := newProgress(opts, verb, ar.manifest.Documents)
	for {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		meta, data, err := ar.next()
		if errors.Is(err, io.EOF) {
			prog.done(sum)
			return sum, nil
		}
		if err != nil {
			return sum, err
		}
		if err := fn(meta, data); err != nil {
			return sum, err
		}
		sum.add(meta)
		prog.step(sum)
	}
}

// Import writes every document and access list of the archive r into
// docs and acl, which must be empty (ErrNotEmpty). Each document's changes
// are checked against its heads before they are written, written as one
// batch, and read back from the store and checked again; each access list
// is read back and compared. acl may be nil only for an archive without
// access lists.
func Import(ctx context.Context, r io.Reader, docs DocStore, acl ACLStore, opts Options) (Summary, error) {
	var sum Summary
	ids, err := docs.DocumentIDs(ctx)
	if err != nil {
		return sum, err
	}
	if len(ids) > 0 {
		return sum, fmt.Errorf("%w: it holds %d documents", ErrNotEmpty, len(ids))
	}
	if acl != nil {
		cl, err := acl.ClaimedDocs(ctx)
		if err != nil {
			return sum, err
		}
		if len(cl) > 0 {
			return sum, fmt.Errorf("%w: it holds %d access lists", ErrNotEmpty, len(cl))
		}
	}
	return eachDocument(ctx, r, opts, "import", func(meta DocMeta, data []byte) error {
		if meta.Stored {
			if err := importDoc(ctx, docs, meta, data); err != nil {
				return err
			}
		}
		if meta.Access != nil {
			if acl == nil {
				return fmt.Errorf("document %s has an access list and the target has no access store", meta.ID)
			}
			return importAccess(ctx, acl, meta)
		}
		return nil
	})
}

func importDoc(ctx context.Context, docs DocStore, meta DocMeta, data []byte) error {
	if err := check(meta, data); err != nil {
		return err
	}
	if _, err := docs.AppendChanges(ctx, meta.ID, data); err != nil {
		return fmt.Errorf("failed to write document %s: %w", meta.ID, err)
	}
	sd, err := docs.LoadDoc(ctx, meta.ID)
	if err != nil {
		return fmt.Errorf("failed to read document %s back: %w", meta.ID, err)
	}
	raws, err := sd.Changes()
	if err != nil {
		return fmt.Errorf("failed to read document %s back: %w", meta.ID, err)
	}
	chunks, heads, err := ordered(raws)
	if err != nil {
		return fmt.Errorf("failed to read document %s back: %w", meta.ID, err)
	}
	if len(chunks) != meta.Changes || !slices.Equal(heads, nonNil(meta.Heads)) {
		return fmt.Errorf("%w: document %s read back from the store has %d changes with heads %v, wrote %d with %v", ErrMismatch, meta.ID, len(chunks), heads, meta.Changes, meta.Heads)
	}
	return nil
}

// importAccess restores an access list: the first owner (by name) claims
// the document at its creation time, the other users get their roles,
// then the link its role; the list read back must equal the archive's.
func importAccess(ctx context.Context, acl ACLStore, meta DocMeta) error {
	want, err := meta.Access.parse()
	if err != nil {
		return err
	}
	users := slices.Sorted(maps.Keys(want.Users))
	first := ""
	for _, u := range users {
		if want.Users[u] == hub.RoleOwner {
			first = u
			break
		}
	}
	if err := acl.Claim(ctx, meta.ID, first, want.Created); err != nil {
		return fmt.Errorf("failed to restore the access list of %s: %w", meta.ID, err)
	}
	for _, u := range users {
		if u == first {
			continue
		}
		if err := acl.Share(ctx, meta.ID, u, want.Users[u]); err != nil {
			return fmt.Errorf("failed to restore the access list of %s: %w", meta.ID, err)
		}
	}
	if want.Link != hub.RoleNone {
		if err := acl.SetLink(ctx, meta.ID, want.Link); err != nil {
			return fmt.Errorf("failed to restore the access list of %s: %w", meta.ID, err)
		}
	}
	got, err := acl.Access(ctx, meta.ID)
	if err != nil {
		return fmt.Errorf("failed to read the access list of %s back: %w", meta.ID, err)
	}
	if !maps.Equal(got.Users, want.Users) || got.Link != want.Link || !got.Created.Equal(want.Created) {
		return fmt.Errorf("%w: the access list of %s read back is %+v, wrote %+v", ErrMismatch, meta.ID, got, want)
	}
	return nil
}

// progress prints a line at most every interval, and a last one.
type progress struct {
	w     io.Writer
	verb  string
	total int
	every time.Duration
	start time.Time
	last  time.Time
}

func newProgress(opts Options, verb string, total int) *progress {
	every := opts.ProgressEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	now := time.Now()
	return &progress{w: opts.Progress, verb: verb, total: total, every: every, start: now, last: now}
}

func (p *progress) step(s Summary) {
	if p.w == nil || time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(s.Documents) / float64(p.total)
	}
	fmt.Fprintf(p.w, "%s: %d of %d documents (%.0f%%), %d changes, %s, %s\n", p.verb, s.Documents, p.total, pct, s.Changes, mib(s.Bytes), time.Since(p.start).Round(time.Second))
}

func (p *progress) done(s Summary) {
	if p.w == nil {
		return
	}
	fmt.Fprintf(p.w, "%s: done: %d documents, %d access lists, %d changes, %s in %s\n", p.verb, s.Documents, s.AccessLists, s.Changes, mib(s.Bytes), time.Since(p.start).Round(time.Millisecond))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
