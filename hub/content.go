package hub

import (
	"context"
	"errors"
	"fmt"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// The hub's side of the documents API: reading a document's changes and
// submitting changes built outside a sync session (a server-side edit, an
// import). Both go through the document's owner goroutine like any peer's
// message, so the owner stays the only writer of its engine and store.

// ErrNoDocument is returned by ReadChanges for a document that nobody has
// stored (and that no peer is creating).
var ErrNoDocument = errors.New("no such document")

// ErrMissingDeps is returned by SubmitChanges when a submitted change
// depends on a change the document does not have: it is not applied.
var ErrMissingDeps = errors.New("the changes depend on changes the document does not have")

// DocChanges is a copy of a document's changes, as ReadChanges returns it.
type DocChanges struct {
	// Exists reports whether the document is stored (or being created by
	// a peer). A document that does not exist has no changes.
	Exists bool
	// Heads are the document's heads, sorted.
	Heads []syncengine.Hash
	// Changes are the raw chunks of the applied changes, dependencies
	// first; concatenated they load into automerge-go. Each is the
	// owner's own slice: read it, never modify it.
	Changes [][]byte
	// Bytes is the size of the document as Options.MaxDocBytes counts it.
	Bytes int
}

// ErrTooLargeToRead is wrapped by ReadChanges when the document is larger
// than the caller's bound.
var ErrTooLargeToRead = fmt.Errorf("%w: document too large to read", ErrLimitExceeded)

// call runs f on the owner goroutine of document id (opening it if it is
// not in memory) and waits for it, or for ctx. f does not run if the
// caller has given up (ctx is done) by the time the owner gets to it, nor
// if the document failed to open (a store error) or the hub is shutting
// down (errDocFailed): what call's caller was told is what happened.
func (h *Hub) call(ctx context.Context, id protocol.DocumentID, f func(d *document)) error {
	d, err := h.openDocument(id)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	ran := false // written before done is closed, read after
	run := func(d *document) {
		defer close(done)
		if d == nil || d.eng == nil || ctx.Err() != nil {
			return
		}
		ran = true
		f(d)
	}
	if err := d.post(ctx, docMsg{kind: kindCall, call: run}); err != nil {
		return err
	}
	select {
	case <-done:
		if !ran {
			if err := ctx.Err(); err != nil {
				return err
			}
			return errDocFailed
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errDocFailed is what a call reports when the document's owner could not
// run it.
var errDocFailed = errors.New("the document is unavailable on this node (storage failure or shutdown); retry")

// ReadChanges returns the changes and heads of document id, read by its
// owner. A document larger than maxBytes (unless maxBytes <= 0) is not
// copied: the error wraps ErrTooLargeToRead and says how large it is.
// The chunks are not copied either (the engine never modifies them), so
// reading costs a slice of pointers.
func (h *Hub) ReadChanges(ctx context.Context, id protocol.DocumentID, maxBytes int) (*DocChanges, error) {
	var out *DocChanges
	var ferr error
	err := h.call(ctx, id, func(d *document) {
		if !d.exists {
			out = &DocChanges{}
			return
		}
		if n := d.eng.Bytes(); maxBytes > 0 && n > maxBytes {
			ferr = fmt.Errorf("%w: it holds %d bytes of changes, at most %d can be read", ErrTooLargeToRead, n, maxBytes)
			return
		}
		out = &DocChanges{Exists: true, Heads: append([]syncengine.Hash(nil), d.eng.Heads()...), Bytes: d.eng.Bytes()}
		out.Changes = make([][]byte, 0, d.eng.Len())
		d.eng.All(func(raw []byte) bool {
			out.Changes = append(out.Changes, raw)
			return true
		})
	})
	if err != nil {
		return nil, err
	}
	return out, ferr
}

// apiOrigin marks, for the engine's Accept check, changes submitted
// through SubmitChanges: the caller checked the submitter's role.
type apiOrigin struct{ user string }

// SubmitChanges applies change chunks to document id as if a peer had
// sent them in one sync message: the engine checks them with the bounds
// of a peer's message (MaxDocBytes, MaxInflatedBytes; an error wraps
// ErrLimitExceeded), the owner stores them, publishes them to the other
// nodes and syncs them to its peers. It returns once they are stored,
// with the document's new heads. The caller must have checked that user
// may change the document. Every submitted change must have its
// dependencies in the document or among the others submitted; otherwise
// nothing is applied (ErrMissingDeps). A document that does not exist is
// created by its first changes. Changes are not applied if ctx has ended
// by the time the owner gets to them; if it ends while the owner stores
// them, they may be stored although the call returns ctx's error.
func (h *Hub) SubmitChanges(ctx context.Context, id protocol.DocumentID, user string, chunks [][]byte) ([]syncengine.Hash, error) {
	return h.submit(ctx, id, user, chunks, false)
}

// ErrDocExists is returned by CreateDocument for a document that exists.
var ErrDocExists = errors.New("the document already exists")

// CreateDocument is SubmitChanges for a document that must not exist yet
// (an import): if it is stored, or a peer is creating it, nothing is
// applied and the error is ErrDocExists. The check and the write are one
// step of the owner, so two creations of one id cannot both succeed.
func (h *Hub) CreateDocument(ctx context.Context, id protocol.DocumentID, user string, chunks [][]byte) ([]syncengine.Hash, error) {
	return h.submit(ctx, id, user, chunks, true)
}

func (h *Hub) submit(ctx context.Context, id protocol.DocumentID, user string, chunks [][]byte, create bool) ([]syncengine.Hash, error) {
	if len(chunks) == 0 {
		return nil, errors.New("no changes to submit")
	}
	msg := (&amsync.Message{Type: amsync.MessageTypeSync, Changes: chunks}).Encode()
	origin := &apiOrigin{user: user}
	var heads []syncengine.Hash
	var ferr error
	err := h.call(ctx, id, func(d *document) {
		if create && (d.exists || d.eng.Len() > 0) {
			ferr = ErrDocExists
			return
		}
		if err := d.depsPresent(chunks); err != nil {
			ferr = err
			return
		}
		queued := d.eng.Queued()
		applied, err := d.eng.ReceiveMessage(syncengine.NewState(), msg, origin)
		if err != nil {
			if errors.Is(err, syncengine.ErrLimitExceeded) {
				d.h.m.LimitHits.WithLabelValues(limitOf(err)).Inc()
				ferr = limitError{err}
			} else {
				ferr = fmt.Errorf("invalid changes: %w", err)
			}
			return
		}
		if d.eng.Queued() > queued {
			// depsPresent makes this unreachable; a change left waiting
			// for its dependencies would never be stored.
			d.eng.Forget(origin)
		}
		for _, c := range applied {
			d.unsaved = append(d.unsaved, c.Stored)
		}
		d.h.m.ChangesAccepted.Add(float64(len(applied)))
		d.exists = true
		// Durable before the caller hears of it: wait for the write in
		// flight and store these with whatever else waits; the owner's
		// flush after this message sends what the writes released.
		if err := d.storeAll(); err != nil {
			ferr = fmt.Errorf("failed to store the changes: %w", err)
			return
		}
		heads = append([]syncengine.Hash(nil), d.eng.Heads()...)
	})
	if err != nil {
		return nil, err
	}
	return heads, ferr
}

// depsPresent checks that every dependency of the chunks is in the
// document or among the chunks, so that SubmitChanges applies all of them
// or none. Unparsable chunks are left to the engine, which says why.
func (d *document) depsPresent(chunks [][]byte) error {
	changes := make([]*amsync.Change, 0, len(chunks))
	ours := make(map[syncengine.Hash]bool, len(chunks))
	for _, raw := range chunks {
		c, err := amsync.ParseChangeLimit(raw, d.h.opts.MaxInflatedBytes)
		if err != nil {
			return nil
		}
		changes = append(changes, c)
		ours[c.Hash] = true
	}
	for _, c := range changes {
		for _, dep := range c.Deps {
			if !ours[dep] && !d.eng.Has(dep) {
				return fmt.Errorf("%w: change %s depends on %s", ErrMissingDeps, c.Hash, dep)
			}
		}
	}
	return nil
}

// limitError is an engine's limit error that also wraps ErrLimitExceeded.
type limitError struct{ err error }

func (e limitError) Error() string   { return "changes refused: " + e.err.Error() }
func (e limitError) Unwrap() []error { return []error{ErrLimitExceeded, e.err} }
