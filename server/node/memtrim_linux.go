//go:build linux && cgo

package node

// #include <malloc.h>
import "C"

// releaseFreedMemory hands memory that the C allocator holds but no longer
// uses back to the operating system. automerge-go documents live in C
// memory; after they are evicted and finalized, glibc keeps the pages
// unless asked to trim them.
func releaseFreedMemory() { C.malloc_trim(0) }
