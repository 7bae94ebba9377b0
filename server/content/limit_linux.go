package content

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// limitMemory caps the process's address space at what it maps now plus
// extra bytes, so that the loader fails (the Go runtime or the Rust core
// cannot allocate, and the process ends) instead of exhausting the
// machine. What it maps now includes whatever the runtime reserved at
// start (the race detector's shadow memory, for one).
func limitMemory(extra uint64) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return
	}
	pages, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return
	}
	lim := pages*uint64(os.Getpagesize()) + extra
	_ = syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: lim, Max: lim})
}
