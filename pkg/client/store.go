package client

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/protocol"
)

// diskStore keeps documents and sync states in a directory:
//
//	storage-id                      this client's storage id (a UUID)
//	docs/<doc>.changes              the document: an optional snapshot (a
//	                                document chunk, automerge's Save), then
//	                                change chunks, appended
//	docs/<doc>.sync.<storage id>    the sync state with that server storage
//
// Durability: with sync on, an append made with durable set returns once
// the file is fsynced (and the directory, for a new file). Concurrent
// appends, on any documents, share fsyncs: one committer goroutine takes
// every file written since its last round and fsyncs each once, then wakes
// all their waiters (group commit). Appends of received changes do not
// wait (the server has them); the next durable append or Close fsyncs
// them. With sync off nothing waits and Close fsyncs everything.
//
// Compaction: once a document's file is larger than compactMin and than
// twice a snapshot of the document, the file is replaced by that snapshot
// alone: written to a temporary file, fsynced, renamed over the old one,
// and the directory fsynced, so a crash leaves either file whole.
//
// Torn tails: a crash mid-append (with sync off, or before an fsync
// returned) can leave a partial or garbled chunk at the end of a file.
// Loading keeps every whole, valid chunk before it and truncates the rest,
// so later appends follow the last whole chunk.
//
// Concurrency: the handle of a document serializes its loads, appends and
// compactions (they run under its lock); mu guards the files of all
// documents and the committer's queue.
type diskStore struct {
	dir       string
	storageID string
	sync      bool // fsync durable appends before they return

	mu      sync.Mutex
	wake    sync.Cond // signalled when pending is set or closing
	files   map[protocol.DocumentID]*docFile
	pending *commitBatch // appends waiting for the next fsync round
	closing bool
	stopped chan struct{} // closed when the committer has exited
}

// compactMin is the size below which a document's file is never compacted.
const compactMin = 64 << 10

// docFile is a document's open change file.
type docFile struct {
	f         *os.File // opened for appending
	size      int64    // bytes written: whole chunks only
	nextCheck int64    // size past which compaction is considered again
	created   bool     // the directory entry is not fsynced yet
	broken    error    // set if a partial write could not be cut off
}

// commitBatch is one fsync round of the committer.
type commitBatch struct {
	files map[*docFile]struct{}
	done  chan struct{} // closed once err is set
	err   error
}

func openDiskStore(dir string, sync bool) (*diskStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o700); err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", dir, err)
	}
	s := &diskStore{dir: dir, sync: sync, files: map[protocol.DocumentID]*docFile{}, stopped: make(chan struct{})}
	s.wake.L = &s.mu
	p := filepath.Join(dir, "storage-id")
	b, err := os.ReadFile(p)
	switch {
	case err == nil && len(b) > 0:
		s.storageID = string(b)
	case err == nil || errors.Is(err, fs.ErrNotExist):
		s.storageID = protocol.NewStorageID()
		if err := writeFileSync(p, []byte(s.storageID)); err != nil {
			return nil, fmt.Errorf("failed to keep the storage id: %w", err)
		}
	default:
		return nil, fmt.Errorf("failed to read the storage id: %w", err)
	}
	go s.commit()
	return s, nil
}

func (s *diskStore) docPath(id protocol.DocumentID, suffix string) string {
	return filepath.Join(s.dir, "docs", string(id)+suffix)
}

// loadChanges returns the kept snapshot of id (nil if none) and the change
// chunks kept after it (none if the document is not kept). It truncates a
// torn tail and keeps the file open for the document's appends.
func (s *diskStore) loadChanges(id protocol.DocumentID) (snapshot []byte, changes [][]byte, err error) {
	path := s.docPath(id, ".changes")
	_ = os.Remove(path + ".tmp") // a compaction that did not finish
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("failed to open kept changes: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("failed to read kept changes: %w", err)
	}
	snapshot, changes, whole, err := splitKept(b)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if whole < len(b) {
		// A crash mid-append left a torn tail: drop it, so that the next
		// append follows the last whole chunk.
		if err := f.Truncate(int64(whole)); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("failed to truncate the torn tail of kept changes: %w", err)
		}
	}
	df := &docFile{f: f, size: int64(whole), nextCheck: max(compactMin, 2*int64(len(snapshot)))}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		f.Close()
		return nil, nil, ErrClosed
	}
	if old := s.files[id]; old != nil {
		old.f.Close()
	}
	s.files[id] = df
	return snapshot, changes, nil
}

// splitKept splits a document file into its snapshot (a leading document
// chunk, if any) and the valid change chunks after it, and returns the
// length of that whole prefix of b. A snapshot is written whole or not at
// all (compact renames it into place): a torn one is an error, never
// truncated away.
func splitKept(b []byte) (snapshot []byte, changes [][]byte, whole int, err error) {
	if len(b) > 8 && b[8] == 0 { // chunk type 0: a document
		end := chunkEnd(b)
		if one, err := amsync.SplitChunks(b[:end]); err != nil || len(one) != 1 {
			return nil, nil, 0, errors.New("the kept snapshot is torn")
		}
		snapshot, whole = b[:end], end
	}
	for rest := b[whole:]; len(rest) > 0; {
		end := chunkEnd(rest)
		one, err := amsync.SplitChunks(rest[:end])
		if err != nil || len(one) != 1 {
			break
		}
		if _, err := amsync.ParseChange(one[0]); err != nil {
			break // whole in length but not in content (a torn write)
		}
		changes = append(changes, one[0])
		whole += end
		rest = rest[end:]
	}
	return snapshot, changes, whole, nil
}

// chunkEnd returns the end of the first chunk of b, as its header says
// (len(b) if the header is torn).
func chunkEnd(b []byte) int {
	if len(b) < 10 {
		return len(b)
	}
	var n uint64
	var shift uint
	i := 9
	for ; i < len(b) && i < 19; i++ {
		n |= uint64(b[i]&0x7f) << shift
		shift += 7
		if b[i] < 0x80 {
			i++
			break
		}
	}
	end := uint64(i) + n
	if end > uint64(len(b)) {
		return len(b)
	}
	return int(end)
}

// appendChanges appends raw (whole change chunks) to the file of id. With
// durable set and sync on, it returns once raw is fsynced. compact reports
// that the file has grown enough to consider compacting it (see compact).
func (s *diskStore) appendChanges(id protocol.DocumentID, raw []byte, durable bool) (compact bool, err error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false, ErrClosed
	}
	df := s.files[id]
	if df == nil {
		f, err := os.OpenFile(s.docPath(id, ".changes"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			s.mu.Unlock()
			return false, err
		}
		df = &docFile{f: f, nextCheck: compactMin, created: true}
		s.files[id] = df
	}
	if df.broken != nil {
		s.mu.Unlock()
		return false, df.broken
	}
	if _, err := df.f.Write(raw); err != nil {
		// A partial write (disk full) would leave a torn chunk that later
		// appends follow, and loading drops everything from a torn chunk
		// on: cut it off, or append nothing more to this file.
		if terr := df.f.Truncate(df.size); terr != nil {
			df.broken = fmt.Errorf("failed to cut off a partial write: %w", terr)
		}
		s.mu.Unlock()
		return false, err
	}
	df.size += int64(len(raw))
	compact = df.size > df.nextCheck
	if !durable || !s.sync {
		s.mu.Unlock()
		return compact, nil
	}
	b := s.pending
	if b == nil {
		b = &commitBatch{files: map[*docFile]struct{}{}, done: make(chan struct{})}
		s.pending = b
		s.wake.Signal()
	}
	b.files[df] = struct{}{}
	s.mu.Unlock()
	<-b.done
	return compact, b.err
}

// commit is the committer: it fsyncs each batch of appends, one fsync per
// file, until close.
func (s *diskStore) commit() {
	defer close(s.stopped)
	for {
		s.mu.Lock()
		for s.pending == nil && !s.closing {
			s.wake.Wait()
		}
		b := s.pending
		s.pending = nil
		s.mu.Unlock()
		if b == nil {
			return // closing, nothing pending
		}
		b.err = s.syncFiles(b.files)
		close(b.done)
	}
}

// syncFiles fsyncs files, and the docs directory if one of them is new.
// The fsyncs run in parallel: a journaling file system (ext4, xfs) commits
// concurrent fsyncs together, so a round costs about one fsync.
func (s *diskStore) syncFiles(files map[*docFile]struct{}) error {
	created := false
	s.mu.Lock()
	for df := range files {
		created = created || df.created
		df.created = false
	}
	s.mu.Unlock()
	n := len(files)
	errs := make(chan error, n+1)
	for df := range files {
		go func() { errs <- df.f.Sync() }()
	}
	if created {
		n++
		go func() { errs <- syncDir(filepath.Join(s.dir, "docs")) }()
	}
	all := make([]error, n)
	for i := range all {
		all[i] = <-errs
	}
	return errors.Join(all...)
}

// compact replaces the file of id by snapshot (the document as automerge's
// Save writes it, holding every change appended so far) if the file is
// more than twice as large, atomically and durably. It reports whether it
// did. Otherwise it only postpones the next check until the file doubles,
// so that snapshots are not computed again and again for nothing.
func (s *diskStore) compact(id protocol.DocumentID, snapshot []byte) (bool, error) {
	s.mu.Lock()
	df := s.files[id]
	if df == nil || s.closing {
		s.mu.Unlock()
		return false, nil
	}
	if df.size <= 2*int64(len(snapshot)) {
		df.nextCheck = 2 * df.size
		s.mu.Unlock()
		return false, nil
	}
	s.mu.Unlock()
	path := s.docPath(id, ".changes")
	f, err := createSync(path+".tmp", snapshot, os.O_APPEND)
	if err == nil {
		if err = os.Rename(path+".tmp", path); err != nil {
			f.Close()
		}
	}
	s.mu.Lock()
	if err != nil {
		df.nextCheck = 2 * df.size // not at every append
		s.mu.Unlock()
		return false, fmt.Errorf("failed to replace the changes by a snapshot: %w", err)
	}
	// The snapshot is the file now: appends go to it.
	if s.closing { // close has closed df.f
		f.Close()
	} else {
		df.f.Close()
		df.f, df.size = f, int64(len(snapshot))
		df.nextCheck = max(compactMin, 2*df.size)
	}
	s.mu.Unlock()
	// Until the directory is fsynced, a power loss may bring back the old
	// file (whole, with every change of the snapshot).
	return true, syncDir(filepath.Dir(path))
}

func (s *diskStore) loadSyncState(id protocol.DocumentID, storageID string) ([]byte, error) {
	b, err := os.ReadFile(s.docPath(id, ".sync."+safeName(storageID)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (s *diskStore) saveSyncState(id protocol.DocumentID, storageID string, state []byte) error {
	return writeFileSync(s.docPath(id, ".sync."+safeName(storageID)), state)
}

// close stops the committer once its last round is done, then fsyncs and
// closes every file. Appends after close fail with ErrClosed.
func (s *diskStore) close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.wake.Signal()
	s.mu.Unlock()
	<-s.stopped
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	created := false
	for id, df := range s.files {
		created = created || df.created
		if err := df.f.Sync(); err != nil {
			errs = append(errs, err)
		}
		if err := df.f.Close(); err != nil {
			errs = append(errs, err)
		}
		delete(s.files, id)
	}
	if created {
		errs = append(errs, syncDir(filepath.Join(s.dir, "docs")))
	}
	return errors.Join(errs...)
}

// safeName keeps a server-chosen storage id from escaping the directory.
func safeName(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s) && i < 128; i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			out = append(out, c)
		} else {
			out = append(out, '_')
		}
	}
	return string(out)
}

// writeFileSync replaces path atomically and durably.
func writeFileSync(path string, b []byte) error {
	f, err := createSync(path+".tmp", b, 0)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return renameSync(path+".tmp", path)
}

// createSync creates (or truncates) path, writes b to it and fsyncs it; it
// returns the file, open for writing with the extra flags.
func createSync(path string, b []byte, flags int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|flags, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// renameSync renames from to to and fsyncs their directory, so that the
// rename survives a crash.
func renameSync(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return syncDir(filepath.Dir(to))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
