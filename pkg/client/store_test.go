package client_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/client"
)

// Tests of the offline store (Options.Dir): durability across a killed
// process, compaction, torn tails. They need no server: the clients are
// offline (their only URL refuses connections) and read their documents
// from Dir. They know the store's layout: docs/<id>.changes.

// offline returns a client on dir that never connects.
func offline(t testing.TB, dir string, noSync bool) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), client.Options{
		URLs: []string{"ws://127.0.0.1:1/ws"}, Dir: dir, NoSync: noSync,
		MinBackoff: time.Hour, MaxBackoff: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func changesPath(dir string, h *client.Handle) string {
	return filepath.Join(dir, "docs", string(h.ID())+".changes")
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// payload is the value of key k<i>: a few hundred bytes, so that files
// grow past the compaction threshold in a few hundred changes, and
// repetitive, so that a snapshot is much smaller than the changes.
func payload(i int) string { return strings.Repeat("payload ", 40) + strconv.Itoa(i) }

// setKey sets k<i> to payload(i) and n to i.
func setKey(i int) func(*automerge.Doc) error {
	return func(d *automerge.Doc) error {
		if err := d.RootMap().Set("k"+strconv.Itoa(i), payload(i)); err != nil {
			return err
		}
		return d.RootMap().Set("n", int64(i))
	}
}

// checkKeys fails unless the document has k1 .. k<upTo> with their
// payloads, and returns n.
func checkKeys(t *testing.T, h *client.Handle, upTo int) int {
	t.Helper()
	n := 0
	err := h.View(func(d *automerge.Doc) error {
		for i := 1; i <= upTo; i++ {
			v, err := d.RootMap().Get("k" + strconv.Itoa(i))
			if err != nil {
				return err
			}
			if s, _ := v.Interface().(string); s != payload(i) {
				return fmt.Errorf("k%d is %v", i, v.Interface())
			}
		}
		v, err := d.RootMap().Get("n")
		if err != nil {
			return err
		}
		if x, ok := v.Interface().(int64); ok {
			n = int(x)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < upTo {
		t.Fatalf("n is %d, want at least %d", n, upTo)
	}
	return n
}

// reopen opens dir with a new client, finds url from disk, checks it has
// k1 .. k<upTo> and returns its n.
func reopen(t *testing.T, dir, url string, upTo int) int {
	t.Helper()
	c := offline(t, dir, false)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.Find(ctx, url)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	return checkKeys(t, h, upTo)
}

const helperEnv = "PLAIT_CLIENT_HELPER_DIR"

// TestHelperWriter is not a test: it is the child process of the kill
// tests. With PLAIT_CLIENT_HELPER_DIR set it opens a client on that Dir,
// finds PLAIT_CLIENT_HELPER_URL there (or creates a document), prints
// "doc <url>", then changes the document in a loop (setKey(n+1), n+2, ...)
// and prints "durable <i> <file size>" after each Change has returned.
func TestHelperWriter(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("the child process of the kill tests")
	}
	c := offline(t, dir, os.Getenv("PLAIT_CLIENT_HELPER_NOSYNC") != "")
	var h *client.Handle
	var err error
	if url := os.Getenv("PLAIT_CLIENT_HELPER_URL"); url != "" {
		h, err = c.Find(context.Background(), url)
	} else {
		h, err = c.Create(nil)
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	n := 0
	_ = h.View(func(d *automerge.Doc) error {
		if v, err := d.RootMap().Get("n"); err == nil {
			if x, ok := v.Interface().(int64); ok {
				n = int(x)
			}
		}
		return nil
	})
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "doc", h.URL())
	out.Flush()
	for i := n + 1; ; i++ {
		if err := h.Change(setKey(i)); err != nil {
			fmt.Fprintln(out, "error", err)
			out.Flush()
			os.Exit(1)
		}
		fi, err := os.Stat(changesPath(dir, h))
		if err != nil {
			fmt.Fprintln(out, "error", err)
			out.Flush()
			os.Exit(1)
		}
		fmt.Fprintln(out, "durable", i, fi.Size())
		out.Flush()
	}
}

// killLoop runs the writer child kills times on one Dir and SIGKILLs it:
// after a random number of durable changes (killAfter), or at a random
// moment (killAt, if set). After each kill it reopens the Dir and checks
// that every change reported durable is there. It returns how many times
// the children saw the file shrink (compactions).
func killLoop(t *testing.T, kills int, noSync bool, killAfter func() int, killAt func() time.Duration) (shrinks int) {
	dir := t.TempDir()
	url := ""
	durable := 0
	deadline := time.Now().Add(90 * time.Second)
	for k := 0; k < kills && time.Now().Before(deadline); k++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+dir, "PLAIT_CLIENT_HELPER_URL="+url)
		if noSync {
			cmd.Env = append(cmd.Env, "PLAIT_CLIENT_HELPER_NOSYNC=1")
		}
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		want := 0
		if killAfter != nil {
			want = killAfter()
		}
		seen, last := 0, int64(0)
		var timer *time.Timer
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 2 && f[0] == "doc":
				url = f[1]
			case len(f) == 3 && f[0] == "durable":
				i, _ := strconv.Atoi(f[1])
				size, _ := strconv.ParseInt(f[2], 10, 64)
				if i != durable+1 {
					t.Fatalf("child reported change %d after %d", i, durable)
				}
				durable = i
				if size < last {
					shrinks++
				}
				last = size
				seen++
				if killAt != nil && timer == nil {
					timer = time.AfterFunc(killAt(), func() { _ = cmd.Process.Kill() })
				}
			default:
				if !strings.HasPrefix(sc.Text(), "=== RUN") {
					t.Fatalf("child: %s", sc.Text())
				}
			}
			if killAt == nil && seen >= want {
				_ = cmd.Process.Kill()
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
			}
		}
		_ = cmd.Wait()
		if timer != nil {
			timer.Stop()
		}
		if url == "" {
			t.Fatal("the child never reported its document")
		}
		n := reopen(t, dir, url, durable)
		// A change that was written but not yet reported is there too.
		durable = n
	}
	t.Logf("%d durable changes, %d compactions seen, file %d bytes", durable, shrinks, fileSizeOf(t, dir))
	return shrinks
}

func fileSizeOf(t *testing.T, dir string) int64 {
	m, _ := filepath.Glob(filepath.Join(dir, "docs", "*.changes"))
	if len(m) != 1 {
		t.Fatalf("want one document file, have %v", m)
	}
	return fileSize(t, m[0])
}

// TestKillMidWrite: a client process killed at random points of its
// writes (20 times) loses no change that Change had returned.
func TestKillMidWrite(t *testing.T) {
	killLoop(t, 20, false, func() int { return 1 + rand.IntN(100) }, nil)
}

// TestKillMidCompaction: a client killed at random moments while it
// writes fast (NoSync: a process crash loses nothing with it either) and
// compacts often keeps every change and a loadable document.
func TestKillMidCompaction(t *testing.T) {
	shrinks := killLoop(t, 20, true, nil, func() time.Duration { return time.Duration(rand.IntN(100)) * time.Millisecond })
	if shrinks == 0 {
		t.Fatal("no compaction happened")
	}
}

// TestCompaction: a document's file shrinks once it outgrows the
// document, and the document loads intact from the compacted file and
// from the changes appended after it.
func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	c := offline(t, dir, false)
	h, err := c.Create(nil)
	if err != nil {
		t.Fatal(err)
	}
	var peak, size int64
	shrunk := 0
	for i := 1; i <= 600; i++ {
		if err := h.Change(setKey(i)); err != nil {
			t.Fatal(err)
		}
		s := fileSize(t, changesPath(dir, h))
		if s < size {
			shrunk++
		}
		size, peak = s, max(peak, s)
	}
	if shrunk == 0 || peak > 2*64<<10 {
		t.Fatalf("file: %d compactions, peak %d bytes", shrunk, peak)
	}
	heads := h.Heads()
	url := h.URL()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("600 changes: %d compactions, peak %d bytes, now %d bytes", shrunk, peak, size)
	c2 := offline(t, dir, false)
	defer c2.Close()
	h2, err := c2.Find(ctxT(t), url)
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, h2, 600)
	if got := h2.Heads(); fmt.Sprint(got) != fmt.Sprint(heads) {
		t.Fatalf("heads after reopen %x, want %x", got, heads)
	}
}

// TestTornTail: a file whose last chunk is torn (a crash mid-append)
// loads with every whole change; the torn bytes are dropped and the next
// change follows the last whole one.
func TestTornTail(t *testing.T) {
	// A valid change chunk of another document, to tear.
	d := automerge.New()
	if err := d.RootMap().Set("x", payload(0)); err != nil {
		t.Fatal(err)
	}
	hash, err := d.Commit("")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := d.Change(hash)
	if err != nil {
		t.Fatal(err)
	}
	chunk := ch.Save()
	garbled := bytes.Clone(chunk)
	clear(garbled[len(garbled)/2:]) // whole in length, zeros where the data did not land
	for name, tail := range map[string][]byte{
		"header":  chunk[:6],
		"body":    chunk[:len(chunk)-3],
		"garbled": garbled,
		"zeros":   make([]byte, 4096),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c := offline(t, dir, false)
			h, err := c.Create(nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 3; i++ {
				if err := h.Change(setKey(i)); err != nil {
					t.Fatal(err)
				}
			}
			url, path := h.URL(), changesPath(dir, h)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			whole := fileSize(t, path)
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(tail); err != nil {
				t.Fatal(err)
			}
			f.Close()

			c2 := offline(t, dir, false)
			h2, err := c2.Find(ctxT(t), url)
			if err != nil {
				t.Fatal(err)
			}
			checkKeys(t, h2, 3)
			if s := fileSize(t, path); s != whole {
				t.Fatalf("file is %d bytes after loading, want the %d whole ones", s, whole)
			}
			if err := h2.Change(setKey(4)); err != nil {
				t.Fatal(err)
			}
			if err := c2.Close(); err != nil {
				t.Fatal(err)
			}
			if n := reopen(t, dir, url, 4); n != 4 {
				t.Fatalf("n is %d", n)
			}
		})
	}
}

// TestChangeAfterClose: with Dir, a change after Close is not kept, and
// says so.
func TestChangeAfterClose(t *testing.T) {
	c := offline(t, t.TempDir(), false)
	h, err := c.Create(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Change(setKey(1)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Change after Close: %v, want ErrClosed", err)
	}
}

// BenchmarkChange measures Change with Dir, durable (the default) and
// NoSync, from 1 and from 8 goroutines each changing its own document
// (whose fsyncs the committer batches). ns/op is per change.
func BenchmarkChange(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		for _, g := range []int{1, 8} {
			b.Run(fmt.Sprintf("nosync=%v/goroutines=%d", noSync, g), func(b *testing.B) {
				c := offline(b, b.TempDir(), noSync)
				defer c.Close()
				hs := make([]*client.Handle, g)
				for i := range hs {
					h, err := c.Create(nil)
					if err != nil {
						b.Fatal(err)
					}
					hs[i] = h
				}
				b.ResetTimer()
				done := make(chan error, g)
				for w, h := range hs {
					go func() {
						var err error
						for i := w; i < b.N && err == nil; i += g {
							err = h.Change(func(d *automerge.Doc) error { return d.RootMap().Set("n", int64(i)) })
						}
						done <- err
					}()
				}
				for range hs {
					if err := <-done; err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
