package client

import (
	"errors"
	"fmt"
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
//	docs/<doc>.changes              the document's change chunks, appended
//	docs/<doc>.sync.<storage id>    the sync state with that server storage
//
// Appends are not fsynced one by one (a crash may lose the last changes,
// which the server has if they were synced); Close fsyncs everything.
type diskStore struct {
	dir       string
	storageID string

	mu    sync.Mutex
	files map[protocol.DocumentID]*os.File
}

func openDiskStore(dir string) (*diskStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o700); err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", dir, err)
	}
	s := &diskStore{dir: dir, files: map[protocol.DocumentID]*os.File{}}
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
	return s, nil
}

func (s *diskStore) docPath(id protocol.DocumentID, suffix string) string {
	return filepath.Join(s.dir, "docs", string(id)+suffix)
}

// loadChanges returns the kept change chunks of id (none if not kept).
func (s *diskStore) loadChanges(id protocol.DocumentID) ([][]byte, error) {
	b, err := os.ReadFile(s.docPath(id, ".changes"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read kept changes: %w", err)
	}
	raws, err := amsync.SplitChunks(b)
	if err != nil {
		// A crash mid-append leaves a torn last chunk: keep what is whole.
		raws = wholeChunks(b)
	}
	return raws, nil
}

// wholeChunks returns the longest prefix of b that splits into chunks.
func wholeChunks(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		one, err := amsync.SplitChunks(b[:chunkEnd(b)])
		if err != nil || len(one) != 1 {
			break
		}
		out = append(out, one[0])
		b = b[len(one[0]):]
	}
	return out
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

func (s *diskStore) appendChanges(id protocol.DocumentID, raw []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil {
		var err error
		f, err = os.OpenFile(s.docPath(id, ".changes"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		s.files[id] = f
	}
	_, err := f.Write(raw)
	return err
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

func (s *diskStore) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for id, f := range s.files {
		if err := f.Sync(); err != nil {
			errs = append(errs, err)
		}
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
		delete(s.files, id)
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
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
