package boltstore_test

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
	"sync"
	"testing"
	"time"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/boltstore"
	"github.com/plaithub/plait/hub/storetest"
	"github.com/plaithub/plait/pkg/protocol"
)

// crashChildEnv, when set to a file path, turns the test binary into the
// writer process of TestCrashSafety.
const crashChildEnv = "PLAIT_BOLTSTORE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func openTemp(t *testing.T) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "plait.db"), boltstore.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestStore(t *testing.T) {
	storetest.RunStoreTests(t, func(t *testing.T) hub.Store { return openTemp(t) })
}

func TestPersistence(t *testing.T) {
	storetest.RunPersistenceTests(t, func(t *testing.T, dir string) hub.Store {
		s, err := boltstore.Open(filepath.Join(dir, "data", "plait.db"), boltstore.Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestSecondOpenTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plait.db")
	s, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	s2, err := boltstore.Open(path, boltstore.Options{LockTimeout: 100 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, boltstore.ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %v, want about the 100ms LockTimeout", d)
	}
}

func TestInvalidDocumentID(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	for _, id := range []protocol.DocumentID{"", "a\x00b"} {
		if _, err := s.AppendChanges(t.Context(), id, []byte("x")); !errors.Is(err, boltstore.ErrInvalidDocumentID) {
			t.Errorf("AppendChanges(%q) error = %v, want ErrInvalidDocumentID", id, err)
		}
		if err := s.SaveSyncState(t.Context(), id, "peer", []byte("x")); !errors.Is(err, boltstore.ErrInvalidDocumentID) {
			t.Errorf("SaveSyncState(%q) error = %v, want ErrInvalidDocumentID", id, err)
		}
	}
}

func TestClosedError(t *testing.T) {
	s := openTemp(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadDoc(t.Context(), "doc"); !errors.Is(err, boltstore.ErrClosed) {
		t.Errorf("LoadDoc after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, boltstore.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

// ---- crash safety ----

const (
	crashWriters = 8 // goroutines (= documents) in the child
	crashRounds  = 3 // kill, check, restart on the same file
)

func crashDocID(g int) protocol.DocumentID {
	return protocol.DocumentID(fmt.Sprintf("crash-doc-%d", g))
}

// crashPayload is the i-th batch of writer g: deterministic, so the parent
// can check exact bytes, and of varied size so commits span pages.
func crashPayload(g, i int) []byte {
	r := rand.New(rand.NewPCG(uint64(g), uint64(i)))
	b := fmt.Appendf(nil, "g=%d i=%d|", g, i)
	n := 100 + r.IntN(6000)
	for range n {
		b = append(b, byte('a'+r.IntN(26)))
	}
	return b
}

// crashChild appends to crashWriters documents until it is killed, printing
// "g i seq" after every AppendChanges that returned nil. It resumes each
// document at the batch count already stored, so rounds continue one
// history.
func crashChild(path string) {
	s, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	var out sync.Mutex
	var wg sync.WaitGroup
	for g := range crashWriters {
		wg.Go(func() {
			id := crashDocID(g)
			start := 0
			if doc, err := s.LoadDoc(ctx, id); err == nil {
				start = len(doc.Batches)
			}
			for i := start; ; i++ {
				seq, err := s.AppendChanges(ctx, id, crashPayload(g, i))
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(3)
				}
				out.Lock()
				// One write(2) per line: a line is either whole in the
				// pipe or absent.
				fmt.Fprintf(os.Stdout, "%d %d %d\n", g, i, seq)
				out.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns and kills child processes")
	}
	path := filepath.Join(t.TempDir(), "plait.db")
	acked := map[int]map[int]uint64{} // g -> i -> seq, for every acknowledged append
	for g := range crashWriters {
		acked[g] = map[int]uint64{}
	}
	for round := range crashRounds {
		n := runAndKill(t, path, 150+round*100, acked)
		t.Logf("round %d: killed after %d acknowledged appends", round, n)

		s, err := boltstore.Open(path, boltstore.Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		for g := range crashWriters {
			doc, err := s.LoadDoc(t.Context(), crashDocID(g))
			if err != nil {
				t.Fatalf("round %d: LoadDoc(%d): %v", round, g, err)
			}
			// Every acknowledged batch is there, with its seq and bytes.
			bySeq := map[uint64][]byte{}
			for _, b := range doc.Batches {
				bySeq[b.Seq] = b.Data
			}
			for i, seq := range acked[g] {
				data, ok := bySeq[seq]
				if !ok {
					t.Fatalf("round %d: doc %d lost acknowledged batch i=%d seq=%d", round, g, i, seq)
				}
				if !bytes.Equal(data, crashPayload(g, i)) {
					t.Fatalf("round %d: doc %d batch i=%d seq=%d has wrong bytes", round, g, i, seq)
				}
			}
			// What is stored is exactly batches 0..k in order: at most the
			// one append in flight at the kill is extra, nothing is torn.
			for i, b := range doc.Batches {
				if !bytes.Equal(b.Data, crashPayload(g, i)) {
					t.Fatalf("round %d: doc %d stored batch %d (seq %d) is not payload %d", round, g, i, b.Seq, i)
				}
				if i > 0 && b.Seq <= doc.Batches[i-1].Seq {
					t.Fatalf("round %d: doc %d seqs out of order", round, g)
				}
			}
			if extra := len(doc.Batches) - len(acked[g]); extra < 0 || extra > 1 {
				t.Fatalf("round %d: doc %d has %d batches, %d acknowledged", round, g, len(doc.Batches), len(acked[g]))
			}
			// Record an unacknowledged survivor: the next child resumes
			// after it, and later rounds must keep it too.
			if n := len(doc.Batches); n > len(acked[g]) {
				acked[g][n-1] = doc.Batches[n-1].Seq
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// runAndKill starts the child on path, SIGKILLs it once it has acknowledged
// killAfter appends, records every acknowledged append in acked and returns
// how many there were.
func runAndKill(t *testing.T, path string, killAfter int, acked map[int]map[int]uint64) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()

	n := 0
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			t.Fatalf("child printed %q", sc.Text())
		}
		g, _ := strconv.Atoi(f[0])
		i, _ := strconv.Atoi(f[1])
		seq, _ := strconv.ParseUint(f[2], 10, 64)
		acked[g][i] = seq
		n++
		if n == killAfter && !killed {
			// SIGKILL: no deferred functions, no Close, no flush.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	// Lines already in the pipe when the child died were acknowledged
	// before the kill; the loop above has read them all.
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited before it was killed (%v): %s", err, stderr.String())
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != -1 {
		t.Fatalf("child did not die from the signal: %v: %s", err, stderr.String())
	}
	return n
}

func TestDocumentIDs(t *testing.T) {
	storetest.RunListTests(t, func(t *testing.T) storetest.ListStore { return openTemp(t) })
}
