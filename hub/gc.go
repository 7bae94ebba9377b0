package hub

import (
	"runtime"
	"time"
)

// gcSoon schedules one garbage collection shortly after documents are
// evicted: automerge-go frees a document's C memory only in finalizers, so
// without a GC an evicted document keeps its memory until the Go heap grows.
// Evictions within the delay share one collection.
func (h *Hub) gcSoon() {
	if !h.gcPending.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(time.Second, func() {
		h.gcPending.Store(false)
		runtime.GC()
		if h.opts.AfterGC != nil {
			h.opts.AfterGC()
		}
	})
}
