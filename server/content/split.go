package content

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/automerge/automerge-go"
)

// Split returns the changes of a document chunk (what Automerge.save
// writes) from a client. Only the Rust core reads document chunks, and
// some malformed ones make it abort its process (docs/notes-rust-sync-
// panic.md, P2 and P3) or spin and allocate without bound; so Split
// reads it in a child process: the running executable started again with
// splitEnv set, which init below turns into the loader. The child gets
// splitTimeout and a cap on its address space; the changes it writes
// back, at most maxBytes, are for the caller to check with the sync
// engine like any client's. Split is safe for concurrent use; each call
// costs a process.
func Split(ctx context.Context, doc []byte, maxBytes int) ([][]byte, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("failed to find the executable for the loader: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, splitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = []string{splitEnv + "=1"} // nothing of the node's environment (its secrets)
	cmd.Stdin = bytes.NewReader(doc)
	var stderr bytes.Buffer
	cmd.Stderr = &limited{w: &stderr, left: 4096}
	out := &limited{w: new(bytes.Buffer), left: maxBytes}
	cmd.Stdout = out
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if out.over {
		return nil, fmt.Errorf("its changes are larger than %d bytes", maxBytes)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("reading it took longer than %s", splitTimeout)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = "the loader failed: " + err.Error()
		}
		return nil, errors.New(msg)
	}
	return splitOutput(out.w.Bytes())
}

// splitOutput undoes the child's framing: each change as a 4-byte
// big-endian length and its bytes.
func splitOutput(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("the loader's output is truncated")
		}
		n := int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		b = b[4:]
		if n > len(b) {
			return nil, errors.New("the loader's output is truncated")
		}
		out = append(out, b[:n:n])
		b = b[n:]
	}
	if len(out) == 0 {
		return nil, errors.New("the document has no changes")
	}
	return out, nil
}

const (
	// splitEnv makes the executable the loader of Split (see init).
	splitEnv = "PLAIT_CONTENT_SPLIT"
	// splitTimeout bounds the loader's run.
	splitTimeout = 15 * time.Second
	// splitMemory is the address space the loader may add to what it
	// has at start.
	splitMemory = 2 << 30
	// splitMaxInput bounds what the loader reads.
	splitMaxInput = 64 << 20
)

type limited struct {
	w    *bytes.Buffer
	left int
	over bool
}

func (l *limited) Write(p []byte) (int, error) {
	if len(p) > l.left {
		l.over = true
		return 0, errors.New("output too large")
	}
	l.left -= len(p)
	return l.w.Write(p)
}

// init runs the loader instead of the program when Split started it:
// before main, so the program's own start (flags, listeners) never runs.
func init() {
	if os.Getenv(splitEnv) != "1" {
		return
	}
	os.Exit(runSplit(os.Stdin, os.Stdout, os.Stderr))
}

func runSplit(in io.Reader, out, errw io.Writer) int {
	limitMemory(splitMemory)
	data, err := io.ReadAll(io.LimitReader(in, splitMaxInput))
	if err != nil {
		fmt.Fprintln(errw, err)
		return 1
	}
	doc, err := automerge.Load(data)
	if err != nil {
		fmt.Fprintln(errw, err)
		return 1
	}
	chs, err := doc.Changes()
	if err != nil {
		fmt.Fprintln(errw, err)
		return 1
	}
	for _, ch := range chs {
		raw := ch.Save()
		n := len(raw)
		if _, err := out.Write(append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, raw...)); err != nil {
			return 1
		}
	}
	return 0
}
