package boltstore

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// write is one AppendChanges or SaveSyncState waiting for the writer.
type write struct {
	ctx context.Context
	// fn does the write in the group's transaction. It may run more than
	// once (when another write of its group fails, the group is rolled
	// back and run again without it), so it must only touch the
	// transaction and its caller's result.
	fn   func(*bolt.Tx) error
	done chan error // buffered: the writer never waits for the caller
}

// writePanic carries a panic of a write's function from the writer to its
// caller, which panics again with it (as bbolt's DB.Batch does): a bug in
// one write must not kill the writer that every other write waits for.
type writePanic struct{ value any }

func (p writePanic) Error() string { return fmt.Sprintf("boltstore: write panicked: %v", p.value) }

// write queues fn for the writer and waits for the commit of its group.
// Close answers queued writes with ErrClosed. A caller whose ctx ends
// gives up, while queued or while its group commits, and gets ctx's error:
// in the second case its write may still commit (the package doc says why
// that is acceptable). fn must not reference memory the caller reuses after
// write returns.
func (s *Store) write(ctx context.Context, fn func(*bolt.Tx) error) error {
	w := &write{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.writes <- w:
	case <-s.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	var err error
	select {
	case err = <-w.done:
	case <-ctx.Done():
		select {
		case err = <-w.done: // answered anyway: say what happened
		default:
			return ctx.Err()
		}
	case <-s.stopped:
		// The writer answers before it stops, but the answer may lose
		// the race in the select above. A write queued after the writer
		// drained the queue for Close is never answered.
		select {
		case err = <-w.done:
		default:
			return ErrClosed
		}
	}
	if p, ok := err.(writePanic); ok {
		panic(p.value)
	}
	return err
}

// writer is the Store's one writing goroutine, started by Open and stopped
// by Close. It takes the first queued write and every write queued behind
// it, up to maxBatch, commits them in one transaction, answers them, and
// starts over: while a commit (its fsyncs) is in flight, new writes queue
// and form the next group, so groups grow with the load without a timer.
func (s *Store) writer() {
	defer close(s.stopped)
	group := make([]*write, 0, s.maxBatch)
	for {
		// Close wins over queued writes: they are answered ErrClosed.
		select {
		case <-s.quit:
			s.drain()
			return
		default:
		}
		select {
		case w := <-s.writes:
			group = append(group, w)
		case <-s.quit:
			s.drain()
			return
		}
		group = s.gather(group)
		s.commit(group)
		clear(group) // let the answered writes go
		group = group[:0]
		// The callers just answered are runnable, most on this P. Without
		// a yield the first of them to queue its next write wakes the
		// writer, which runs before the others (it gets the P's next
		// slot) and takes a group of one; the rest wait for its commit.
		// Yielding lets them queue first: 16 writers then share a commit
		// 13-14 at a time instead of 8, 2 writers 2 instead of 1. A lone
		// writer loses nothing: Gosched returns at once when nothing else
		// is runnable.
		runtime.Gosched()
	}
}

// gather adds to group (which holds the first write) the writes already
// queued, and, with a MaxBatchDelay, those that arrive within it, up to
// maxBatch.
func (s *Store) gather(group []*write) []*write {
queued:
	for len(group) < s.maxBatch {
		select {
		case w := <-s.writes:
			group = append(group, w)
		default:
			break queued
		}
	}
	if s.maxDelay <= 0 || len(group) >= s.maxBatch {
		return group
	}
	t := time.NewTimer(s.maxDelay)
	defer t.Stop()
	for len(group) < s.maxBatch {
		select {
		case w := <-s.writes:
			group = append(group, w)
		case <-t.C:
			return group
		case <-s.quit:
			return group // taken already: commit them, then stop
		}
	}
	return group
}

// commit runs group in one transaction and answers every write. A write
// whose function fails gets its error and the rest are run again without
// it, in a new transaction; a commit error goes to all of them.
func (s *Store) commit(group []*write) {
	// Writes whose callers have given up would fail in the transaction
	// and cost a rerun of the group each: drop them first.
	group = slices.DeleteFunc(group, func(w *write) bool {
		if err := w.ctx.Err(); err != nil {
			w.done <- err
			return true
		}
		return false
	})
	for len(group) > 0 {
		failed := -1
		var failErr error
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, w := range group {
				if err := safelyCall(w.fn, tx); err != nil {
					failed, failErr = i, err
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, w := range group {
				w.done <- err
			}
			return
		}
		group[failed].done <- failErr
		group = slices.Delete(group, failed, failed+1) // keep queue order
	}
}

// drain answers every queued write with ErrClosed.
func (s *Store) drain() {
	for {
		select {
		case w := <-s.writes:
			w.done <- ErrClosed
		default:
			return
		}
	}
}

func safelyCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = writePanic{p}
		}
	}()
	return fn(tx)
}
