package backup

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/plaithub/plait/server/node"
)

// Main runs `plait export` or `plait import` (cmd) with args, reading
// settings from flags and PLAIT_* variables (getenv) as the node does, and
// returns the process's exit code: 0 done, 1 failed, 2 bad usage.
// stdin and stdout carry the archive when its name is "-"; progress and
// errors go to stderr.
func Main(ctx context.Context, cmd string, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	var usage string
	switch cmd {
	case "export":
		usage = "plait export [flags] FILE\n\nWrites every document and access list of the node's storage to FILE, a gzipped tar archive (- for standard output), then reads FILE back and checks every document's heads. FILE must not exist."
	case "import":
		usage = "plait import [flags] FILE\n\nWrites every document and access list of the archive FILE (- for standard input) into the node's storage, which must be empty, and reads each back to check its heads and access list."
	default:
		fmt.Fprintf(stderr, "plait: unknown command %q\n", cmd)
		return 2
	}
	cfg, rest, err := node.ParseStorageConfig("plait "+cmd, usage, args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && len(rest) != 1 {
		err = fmt.Errorf("want one archive FILE (or -), got %q", rest)
	}
	if err != nil {
		fmt.Fprintf(stderr, "plait %s: %v\n", cmd, err)
		return 2
	}
	if cmd == "export" {
		err = runExport(ctx, cfg, rest[0], stdout, stderr)
	} else {
		err = runImport(ctx, cfg, rest[0], stdin, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "plait %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func runExport(ctx context.Context, cfg node.Config, file string, stdout, stderr io.Writer) error {
	if file != "-" {
		if _, err := os.Lstat(file); err == nil {
			return fmt.Errorf("%s exists: remove it or choose another name", file)
		}
	}
	st, err := Open(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(stderr, "export: from %s\n", st.Desc)
	opts := Options{Progress: stderr, Source: st.Desc}
	if file == "-" {
		bw := bufio.NewWriterSize(stdout, 1<<20)
		if _, err := Export(ctx, st.Docs, st.ACL, bw, opts); err != nil {
			return err
		}
		return bw.Flush()
	}
	// Write beside the target, sync, read back, then rename: FILE appears
	// only complete and checked.
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*.partial")
	if err != nil {
		return fmt.Errorf("failed to create the archive: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	bw := bufio.NewWriterSize(tmp, 1<<20)
	sum, err := Export(ctx, st.Docs, st.ACL, bw, opts)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("failed to write the archive: %w", err)
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		return err
	}
	back, err := Verify(ctx, bufio.NewReaderSize(f, 1<<20), Options{Progress: stderr})
	f.Close()
	if err != nil {
		return fmt.Errorf("the archive read back fails its check: %w", err)
	}
	if back != sum {
		return fmt.Errorf("%w: wrote %+v, read back %+v", ErrMismatch, sum, back)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("failed to move the archive into place: %w", err)
	}
	fmt.Fprintf(stderr, "export: wrote %s\n", file)
	return nil
}

func runImport(ctx context.Context, cfg node.Config, file string, stdin io.Reader, stderr io.Writer) error {
	r := stdin
	if file != "-" {
		// A file is checked whole before anything is written: a truncated
		// or damaged archive leaves the target untouched. (Standard input
		// is checked as it streams, document by document.)
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := Verify(ctx, bufio.NewReaderSize(f, 1<<20), Options{Progress: stderr}); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		r = f
	}
	st, err := Open(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(stderr, "import: into %s\n", st.Desc)
	_, err = Import(ctx, bufio.NewReaderSize(r, 1<<20), st.Docs, st.ACL, Options{Progress: stderr})
	return err
}
