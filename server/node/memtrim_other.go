//go:build !linux || !cgo

package node

func releaseFreedMemory() {}
