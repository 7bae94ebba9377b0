package node

// Resource bounds: each attack of the "Resource bounds" issue, scaled to run
// in seconds, against the real node binary started as its own process
// (anonymous, loopback). After each attack the node must be alive, its peak
// RSS (VmHWM) under bdRSSBound, and a pair of honest clients (pkg/client) on
// another document of the same node must have kept syncing throughout.

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/client"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// bdRSSBound is the peak resident set size a node may reach under any of
// the attacks.
const bdRSSBound = 512 << 20

// bdCloseLimit is the close code of a message that exceeded a resource bound.
const bdCloseLimit = websocket.StatusCode(protocol.CloseLimitExceeded)

// bdEmptySync is the sync message of a peer that has nothing of a document
// (what automerge-repo sends in a request): no heads, no need, one empty have.
var bdEmptySync = (&amsync.Message{Type: amsync.MessageTypeSync, Have: []amsync.Have{{}}}).Encode()

// boundsBin is the node binary, built once per test run. Its file is
// removed with the directory of the test that built it; the open file
// stays readable and each test copies it into a directory of its own.
var boundsBin struct {
	once sync.Once
	f    *os.File
}

func boundsBinary(t *testing.T) string {
	t.Helper()
	boundsBin.once.Do(func() {
		f, err := os.Open(buildPlait(t))
		if err != nil {
			t.Fatal(err)
		}
		boundsBin.f = f
	})
	if boundsBin.f == nil {
		t.Fatal("the node binary failed to build (see the first test that built it)")
	}
	st, err := boundsBin.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "plait")
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(out, io.NewSectionReader(boundsBin.f, 0, st.Size()))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("copy the node binary: %v", err)
	}
	return dst
}

// startBoundsNode starts a node process on a free loopback port with its
// store in dataDir, and waits until it is ready. t.Cleanup stops it and, if
// the test failed, shows its warnings and errors.
func startBoundsNode(t *testing.T, bin, name, dataDir string, flags ...string) *procNode {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	n := &procNode{name: name, addr: addr, http: "http://" + addr, log: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	f, err := os.Create(n.log)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--addr", addr, "--data-dir", dataDir, "--log-level", "info", "--shutdown-timeout", "5s"}, flags...)
	for attempt := 0; ; attempt++ {
		n.cmd = exec.Command(bin, args...)
		n.cmd.Env = cleanPlaitEnv()
		n.cmd.Stdout, n.cmd.Stderr = f, f
		err = n.cmd.Start()
		// A fork elsewhere in the test process may briefly hold the
		// freshly copied binary open for writing.
		if !errors.Is(err, syscall.ETXTBSY) || attempt == 20 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		_ = f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = n.cmd.Wait(); _ = f.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			t.Logf("%s log (warnings and errors, last 30):\n%s", name, bdLogTail(n, 30))
		}
	})
	n.waitReady(t, 15*time.Second)
	t.Logf("%s: plait %s", name, strings.Join(flags, " "))
	return n
}

// bdLogTail returns the last n warning and error lines of the node's log,
// or its last n lines if it has none.
func bdLogTail(n *procNode, max int) string {
	b, _ := os.ReadFile(n.log)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "panic") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return lastLines(string(b), max)
	}
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	return strings.Join(lines, "\n")
}

func boundsWS(n *procNode) string { return "ws://" + n.addr + "/ws" }

func bdMetric(t *testing.T, n *procNode, name string) float64 {
	t.Helper()
	return metricSumURLs(t, []string{n.http}, name)
}

func bdLimitHits(t *testing.T, n *procNode, limit string) float64 {
	t.Helper()
	return bdMetric(t, n, `plait_limit_hits_total{limit="`+limit+`"}`)
}

// bdNodeMem returns the node's peak RSS (VmHWM) and current RSS (VmRSS).
func bdNodeMem(t *testing.T, n *procNode) (hwm, rss int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			hwm = v << 10
		case "VmRSS:":
			rss = v << 10
		}
	}
	return hwm, rss
}

// bdCheckNode fails the test if the node died or its peak RSS
// reached bdRSSBound, and logs its memory.
func bdCheckNode(t *testing.T, n *procNode, what string) {
	t.Helper()
	if n.exited() {
		t.Fatalf("%s: %s died (%v); log:\n%s", what, n.name, n.cmd.ProcessState, bdLogTail(n, 30))
	}
	hwm, rss := bdNodeMem(t, n)
	t.Logf("%s: %s peak RSS (VmHWM) %.1f MiB, RSS now %.1f MiB", what, n.name, float64(hwm)/(1<<20), float64(rss)/(1<<20))
	if hwm >= bdRSSBound {
		t.Errorf("%s: %s peak RSS %.1f MiB, want < %d MiB", what, n.name, float64(hwm)/(1<<20), bdRSSBound>>20)
	}
}

// bdDirSize is the apparent size of the files under dir.
func bdDirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// bdHonest is two real clients (pkg/client), each on its own connection,
// of one document: while an attack runs, the first changes the document
// every ~100 ms and waits until the second has the change.
type bdHonest struct {
	a, b       *client.Client
	ha, hb     *client.Handle
	got        chan struct{} // a change reached b
	stop, done chan struct{}
	rounds     int
	maxLag     time.Duration
	err        error
}

func bdStartHonest(t *testing.T, url string) *bdHonest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	newClient := func(id string) *client.Client {
		c, err := client.New(ctx, client.Options{URLs: []string{url}, PeerID: id, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatalf("honest client %s: %v", id, err)
		}
		return c
	}
	p := &bdHonest{got: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	p.a = newClient("honest-a")
	var err error
	if p.ha, err = p.a.Create(func(d *automerge.Doc) error { return d.RootMap().Set("n", int64(0)) }); err != nil {
		t.Fatal(err)
	}
	for !p.ha.InSync() {
		if ctx.Err() != nil {
			t.Fatal("the honest document did not reach the node within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.b = newClient("honest-b")
	if p.hb, err = p.b.Find(ctx, p.ha.URL()); err != nil {
		t.Fatalf("honest client b: find %s: %v", p.ha.URL(), err)
	}
	p.hb.Subscribe(func(client.Event) {
		select {
		case p.got <- struct{}{}:
		default:
		}
	})
	go p.run()
	t.Cleanup(func() {
		select {
		case <-p.stop:
		default:
			close(p.stop)
		}
		<-p.done
	})
	return p
}

// round makes change i on a and waits (at most 10 s) until b has it.
func (p *bdHonest) round(i int) error {
	start := time.Now()
	if err := p.ha.Change(func(d *automerge.Doc) error { return d.RootMap().Set("n", int64(i)) }); err != nil {
		return fmt.Errorf("change %d: %w", i, err)
	}
	want := p.ha.Heads()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !slices.Equal(p.hb.Heads(), want) {
		select {
		case <-p.got:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			return fmt.Errorf("change %d did not reach the second honest client within 10s", i)
		}
	}
	p.maxLag = max(p.maxLag, time.Since(start))
	return nil
}

func (p *bdHonest) run() {
	defer close(p.done)
	for i := 1; i <= 2000; i++ {
		if p.err = p.round(i); p.err != nil {
			return
		}
		p.rounds++
		select {
		case <-p.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// finish stops the rounds, makes one more after the attack, and checks
// that every round went through and neither client lost its connection.
func (p *bdHonest) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the honest clients did not stop within 20s")
	}
	if p.err != nil {
		t.Errorf("honest clients, after %d rounds: %v", p.rounds, p.err)
		return
	}
	if err := p.round(100000); err != nil {
		t.Errorf("honest clients after the attack: %v", err)
	}
	sa, sb := p.a.Stats(), p.b.Stats()
	t.Logf("honest clients: %d rounds during the attack and one after, slowest %s; disconnects %d/%d", p.rounds, p.maxLag.Round(time.Millisecond), sa.Disconnects, sb.Disconnects)
	if p.rounds < 1 {
		t.Errorf("no honest round completed during the attack")
	}
	if sa.Disconnects+sb.Disconnects > 0 {
		t.Errorf("an honest client lost its connection: %q / %q", sa.LastError, sb.LastError)
	}
}

// bdOutcome reads what the node sends p until the connection ends, for at
// most d: the error messages, and the close code (0 if it ended without
// one, or did not end: err says which).
func bdOutcome(p *goPeer, d time.Duration) (errMsgs []string, code websocket.StatusCode, err error) {
	deadline := time.Now().Add(d)
	for range 100000 {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		m, err := p.next(left)
		if errors.Is(err, errNoMessage) {
			break
		}
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return errMsgs, ce.Code, nil
			}
			return errMsgs, 0, err
		}
		if m.Type == protocol.TypeError {
			errMsgs = append(errMsgs, m.ErrorMessage)
		}
	}
	return errMsgs, 0, fmt.Errorf("the connection was still open after %s", d)
}

// bdTally counts, on a goroutine of its own, what the node sends a goPeer.
type bdTally struct {
	mu       sync.Mutex
	types    map[string]int
	sessions map[string]int                 // ephemeral messages by sessionId
	first    map[protocol.DocumentID]string // the first sync or doc-unavailable per document
	errs     []string                       // error messages
	end      error                          // why the connection ended; nil while open
	quit     chan struct{}
	done     chan struct{}
}

func bdTallyOf(t *testing.T, p *goPeer) *bdTally {
	c := &bdTally{types: map[string]int{}, sessions: map[string]int{}, first: map[protocol.DocumentID]string{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for range 10_000_000 {
			select {
			case <-c.quit:
				return
			default:
			}
			m, err := p.next(200 * time.Millisecond)
			if errors.Is(err, errNoMessage) {
				continue
			}
			c.mu.Lock()
			if err != nil {
				c.end = err
				c.mu.Unlock()
				return
			}
			c.types[m.Type]++
			switch m.Type {
			case protocol.TypeEphemeral:
				c.sessions[m.SessionID]++
			case protocol.TypeError:
				c.errs = append(c.errs, m.ErrorMessage)
			case protocol.TypeSync, protocol.TypeDocUnavailable:
				if _, ok := c.first[m.DocumentID]; !ok {
					c.first[m.DocumentID] = m.Type
				}
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *bdTally) stop() {
	select {
	case <-c.quit:
	default:
		close(c.quit)
	}
	<-c.done
}

// waitFor reports whether cond (called under the tally's lock) holds
// within d, polling.
func (c *bdTally) waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *bdTally) read(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
}

func bdULEB(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// bdChunkBody splits an uncompressed change chunk (magic, checksum, type 1,
// LEB128 length, body) and returns its hash (SHA-256 of type, length and
// body) and its body.
func bdChunkBody(t *testing.T, raw []byte) (amsync.Hash, []byte) {
	t.Helper()
	if raw[8] != 1 {
		t.Fatalf("chunk type %d, want 1", raw[8])
	}
	off := 9
	for raw[off]&0x80 != 0 {
		off++
	}
	h := amsync.Hash(sha256.Sum256(raw[8:]))
	if !bytes.Equal(h[:4], raw[4:8]) {
		t.Fatal("chunk checksum is not its hash's prefix")
	}
	return h, raw[off+1:]
}

func bdRandHashes(n int) []amsync.Hash {
	hs := make([]amsync.Hash, n)
	for i := range hs {
		_, _ = rand.Read(hs[i][:])
	}
	slices.SortFunc(hs, func(a, b amsync.Hash) int { return bytes.Compare(a[:], b[:]) })
	return hs
}

// bombSegment is the run of zeros deflated once and repeated in every
// compressed chunk of bombMessage.
const bombSegment = 1 << 20

// bombMessage returns a sync message of n compressed change chunks (chunk
// type 2: raw DEFLATE of the body), each an otherwise empty valid change
// whose commit message is size zero bytes, and the changes' hashes.
// Compressing 60 MiB per chunk would take seconds (minutes with -race),
// so each chunk's DEFLATE stream is assembled from pieces compressed
// once: DEFLATE streams flushed to a byte boundary (not final) may be
// concatenated, and a stream of zeros refers only to itself.
func bombMessage(t *testing.T, n, size int) ([]byte, []amsync.Hash) {
	t.Helper()
	if size%bombSegment != 0 {
		t.Fatalf("size %d is not a multiple of %d", size, bombSegment)
	}
	zeroSeg := bdDeflate(t, make([]byte, bombSegment), false)
	tailFinal := bdDeflate(t, []byte{0, 0}, true)

	// The method, checked on a small change: the chunk parses, and its
	// hash is that of the change amsync encodes.
	actor := make([]byte, 16)
	_, _ = rand.Read(actor)
	chunk, hash := bombChunk(t, actor, 3*bombSegment, zeroSeg, tailFinal)
	c := amsync.Change{Actor: actor, Seq: 1, StartOp: 1, Message: string(make([]byte, 3*bombSegment))}
	want, _ := bdChunkBody(t, c.Encode())
	if ch, err := amsync.ParseChange(chunk); err != nil || ch.Hash != want || hash != want {
		t.Fatalf("a compressed chunk does not inflate to its change: %v", err)
	}

	m := amsync.Message{Type: amsync.MessageTypeSync, Have: []amsync.Have{{}}}
	for range n {
		actor := make([]byte, 16)
		_, _ = rand.Read(actor)
		chunk, hash := bombChunk(t, actor, size, zeroSeg, tailFinal)
		m.Changes = append(m.Changes, chunk)
		m.Heads = append(m.Heads, hash)
	}
	slices.SortFunc(m.Heads, func(a, b amsync.Hash) int { return bytes.Compare(a[:], b[:]) })
	return m.Encode(), m.Heads
}

// bombChunk returns the compressed chunk of the empty change of actor
// (seq 1) whose message is size zero bytes, and its hash. zeroSeg is the
// flushed DEFLATE stream of bombSegment zeros, tailFinal the final stream
// of the body's last two bytes.
func bombChunk(t *testing.T, actor []byte, size int, zeroSeg, tailFinal []byte) ([]byte, amsync.Hash) {
	t.Helper()
	c := amsync.Change{Actor: actor, Seq: 1, StartOp: 1}
	// The body of an empty change ends with its message (length 0 here, then
	// the bytes), the other actors (none: 0) and the columns (none: 0).
	_, small := bdChunkBody(t, c.Encode())
	if !bytes.HasSuffix(small, []byte{0, 0, 0}) {
		t.Fatalf("unexpected change body layout %x", small)
	}
	prefix := bdULEB(slices.Clone(small[:len(small)-3]), uint64(size))
	zeros := make([]byte, bombSegment)
	h := sha256.New()
	h.Write(bdULEB([]byte{1}, uint64(len(prefix)+size+2)))
	h.Write(prefix)
	for range size / bombSegment {
		h.Write(zeros)
	}
	h.Write([]byte{0, 0})
	hash := amsync.Hash(h.Sum(nil))

	def := bdDeflate(t, prefix, false)
	for range size / bombSegment {
		def = append(def, zeroSeg...)
	}
	def = append(def, tailFinal...)
	chunk := append([]byte{0x85, 0x6f, 0x4a, 0x83}, hash[:4]...)
	chunk = append(chunk, 2)
	return append(bdULEB(chunk, uint64(len(def))), def...), hash
}

// bdDeflate compresses b (raw DEFLATE): the final stream, or one flushed
// to a byte boundary that more streams may follow.
func bdDeflate(t *testing.T, b []byte, final bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(b)
	if final {
		err = w.Close()
	} else {
		err = w.Flush()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBoundsDecompressionBomb: one sync message of about 730 KiB carries
// 12 compressed change chunks, each a valid empty change whose commit
// message is 60 MiB of zeros: 720 MiB once inflated. The node must refuse
// it (--max-inflated-bytes, 64 MiB by default, per message) with an error
// and close 4413 before inflating the rest, store none of it (the data dir
// stays under 50 MB, the document gets none of the changes), and keep its
// peak RSS under 512 MiB while honest clients keep syncing.
func TestBoundsDecompressionBomb(t *testing.T) {
	bin := boundsBinary(t)
	dir := t.TempDir()
	n := startBoundsNode(t, bin, "node", dir)
	hp := bdStartHonest(t, boundsWS(n))
	hits0 := bdLimitHits(t, n, "inflated_bytes")

	const chunks, size = 12, 60 << 20
	start := time.Now()
	data, heads := bombMessage(t, chunks, size)
	t.Logf("sync message of %d KiB: %d compressed changes inflating to %d MiB each (built in %s)", len(data)>>10, chunks, size>>20, time.Since(start).Round(time.Millisecond))

	p := dialPeer(t, boundsWS(n), "bomber")
	id := protocol.NewDocumentID()
	if err := p.sendRaw(websocket.MessageBinary, bdFrame(t, p, protocol.TypeSync, id, data)); err != nil {
		t.Fatalf("send the bomb: %v", err)
	}
	errs, code, err := bdOutcome(p, 20*time.Second)
	t.Logf("attacker saw: close %d, error messages %q, %v", code, errs, err)
	switch code {
	case bdCloseLimit:
	case websocket.StatusCode(protocol.CloseInvalidSyncData):
		t.Logf("the bomb was refused as invalid sync data (4422), not as a limit (4413)")
	default:
		t.Errorf("close %d (%v), want %d (limit exceeded) or 4422", code, err, bdCloseLimit)
	}
	if len(errs) == 0 {
		t.Errorf("no error message before the close")
	}
	bdCheckNode(t, n, "after the decompression bomb")

	if size := bdDirSize(t, dir); size >= 50e6 {
		t.Errorf("the data dir holds %d MB after the bomb, want < 50 MB", size/1e6)
	} else {
		t.Logf("data dir: %.1f MB", float64(size)/1e6)
	}
	_, res := bdFetch(t, boundsWS(n), "checker", id)
	if !res.unavailable {
		for _, h := range heads {
			if res.doc.Has(h) {
				t.Errorf("the node kept change %s of the refused message", h)
			}
		}
	}
	if code == bdCloseLimit {
		if hits := bdLimitHits(t, n, "inflated_bytes"); hits <= hits0 {
			t.Errorf(`plait_limit_hits_total{limit="inflated_bytes"} %v, did not rise`, hits)
		}
	}
	hp.finish(t)
	bdCheckNode(t, n, "at the end")
}

// bdFrame encodes a sync or request message from p for document id.
func bdFrame(t *testing.T, p *goPeer, typ string, id protocol.DocumentID, data []byte) []byte {
	t.Helper()
	b, err := protocol.Encode(&protocol.Message{Type: typ, SenderID: p.id, TargetID: p.server, DocumentID: id, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bdFetchResult is what bdFetch received.
type bdFetchResult struct {
	unavailable    bool
	doc            *syncengine.Doc
	st             *syncengine.State
	msgs           int // sync messages that carried changes
	changes        int // changes received
	maxMsgChanges  int // largest sum of change bytes in one message
	maxChangeBytes int // largest change
}

// bdFetch connects as peerID, requests document id with an empty
// document (a sync engine on the client side) and syncs until the node's
// heads are ours, or it says doc-unavailable. It returns the connection,
// still open.
func bdFetch(t *testing.T, url, peerID string, id protocol.DocumentID) (*goPeer, *bdFetchResult) {
	t.Helper()
	p := dialPeer(t, url, peerID)
	r := &bdFetchResult{doc: syncengine.New(syncengine.Options{MaxQueuedBytes: 256 << 20}), st: syncengine.NewState()}
	typ := protocol.TypeRequest
	deadline := time.Now().Add(20 * time.Second)
	for range 10000 {
		if data := r.doc.GenerateMessage(r.st); data != nil {
			p.send(&protocol.Message{Type: typ, SenderID: p.id, TargetID: p.server, DocumentID: id, Data: data})
			typ = protocol.TypeSync
		}
		if time.Now().After(deadline) {
			break
		}
		m, err := p.next(10 * time.Second)
		if err != nil {
			t.Fatalf("fetch %s: after %d messages with changes: %v", id, r.msgs, err)
		}
		switch m.Type {
		case protocol.TypeDocUnavailable:
			r.unavailable = true
			return p, r
		case protocol.TypeError:
			t.Fatalf("fetch %s: error message %q", id, m.ErrorMessage)
		case protocol.TypeSync:
			if m.DocumentID != id {
				continue
			}
			sm, err := amsync.ParseMessage(m.Data)
			if err != nil {
				t.Fatalf("fetch %s: unreadable sync message: %v", id, err)
			}
			if len(sm.Changes) > 0 {
				r.msgs++
				r.changes += len(sm.Changes)
				sum := 0
				for _, c := range sm.Changes {
					sum += len(c)
					r.maxChangeBytes = max(r.maxChangeBytes, len(c))
				}
				r.maxMsgChanges = max(r.maxMsgChanges, sum)
			}
			if _, err := r.doc.ReceiveMessage(r.st, m.Data, nil); err != nil {
				t.Fatalf("fetch %s: %v", id, err)
			}
			if theirs, ok := r.st.TheirHeads(); ok && slices.Equal(theirs, r.doc.Heads()) && r.doc.Queued() == 0 {
				return p, r
			}
		}
	}
	t.Fatalf("fetch %s did not settle within 20s (%d messages with changes)", id, r.msgs)
	return nil, nil
}

// bdChain makes a chain of valid changes by one actor, each putting a new
// key of the root map to a random string.
type bdChain struct {
	actor []byte
	seq   uint64
	heads []amsync.Hash
	rng   *mrand.Rand
}

func bdNewChain(seed uint64) *bdChain {
	actor := make([]byte, 16)
	_, _ = rand.Read(actor)
	return &bdChain{actor: actor, rng: mrand.New(mrand.NewPCG(seed, seed+1))}
}

func (g *bdChain) next(t *testing.T, valueLen int) []byte {
	t.Helper()
	g.seq++
	v := make([]byte, valueLen)
	for i := range v {
		v[i] = 'a' + byte(g.rng.IntN(26))
	}
	c := amsync.Change{Deps: g.heads, Actor: g.actor, Seq: g.seq, StartOp: g.seq}
	c.SetOps([]amsync.Op{{
		Key:    amsync.Key{Kind: amsync.KeyProp, Prop: fmt.Sprintf("k%05d", g.seq)},
		Action: amsync.ActionPut,
		Value:  amsync.StringValue(string(v)),
	}})
	raw := c.Encode()
	h, _ := bdChunkBody(t, raw)
	g.heads = []amsync.Hash{h}
	return raw
}

// bdPush sends what eng has and the node lacks on p, and reads the node's
// answers until it acknowledges our heads (acked) or ends the connection
// (the error messages and close code it sent).
func bdPush(t *testing.T, p *goPeer, id protocol.DocumentID, eng *syncengine.Doc, st *syncengine.State) (acked bool, errs []string, code websocket.StatusCode) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for range 1000 {
		if data := eng.GenerateMessage(st); data != nil {
			if err := p.sendRaw(websocket.MessageBinary, bdFrame(t, p, protocol.TypeSync, id, data)); err != nil {
				errs, code, _ := bdOutcome(p, 10*time.Second)
				return false, errs, code
			}
		}
		if time.Now().After(deadline) {
			break
		}
		m, err := p.next(10 * time.Second)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return false, errs, ce.Code
			}
			t.Fatalf("push to %s: %v", id, err)
		}
		switch m.Type {
		case protocol.TypeError:
			errs = append(errs, m.ErrorMessage)
		case protocol.TypeDocUnavailable:
			t.Fatalf("push to %s: doc-unavailable", id)
		case protocol.TypeSync:
			if m.DocumentID != id {
				continue
			}
			if _, err := eng.ReceiveMessage(st, m.Data, nil); err != nil {
				t.Fatalf("push to %s: %v", id, err)
			}
			if theirs, ok := st.TheirHeads(); ok && slices.Equal(theirs, eng.Heads()) {
				return true, errs, 0
			}
		}
	}
	t.Fatalf("push to %s: no acknowledgement within 15s", id)
	return false, nil, 0
}

// TestBoundsDocumentGrowth: one connection grows one document by sync
// messages of 8 chained changes of 256 KiB each (2 MiB a message), waiting
// for each acknowledgement, on a node with --max-doc-bytes 16 MiB. The
// message that would take the document past 16 MiB gets an error and close
// 4413, and none of its changes is kept. The node is then restarted on the
// same data dir with --max-doc-bytes 4 MiB (the document is now over the
// limit: data written before it) and --max-send-message-bytes 1 MiB: a
// fresh client that requests the document receives every change that was
// acknowledged, and only those, in several sync messages of at most 1 MiB
// of changes plus one change; a change it then sends is refused with 4413.
// Peak RSS stays under 512 MiB on both nodes, honest clients keep syncing.
func TestBoundsDocumentGrowth(t *testing.T) {
	bin := boundsBinary(t)
	dir := t.TempDir()
	const maxDoc, perChange, perBatch = 16 << 20, 262000, 8
	n := startBoundsNode(t, bin, "node", dir, "--max-doc-bytes", strconv.Itoa(maxDoc))
	hp := bdStartHonest(t, boundsWS(n))
	hits0 := bdLimitHits(t, n, "doc_bytes")

	id := protocol.NewDocumentID()
	p := dialPeer(t, boundsWS(n), "grower")
	gen := bdNewChain(1)
	eng, st := syncengine.New(syncengine.Options{MaxQueuedBytes: 256 << 20}), syncengine.NewState()
	var (
		accepted, acceptedChanges, refused int
		ackedHeads                         []amsync.Hash
		errs                               []string
		code                               websocket.StatusCode
	)
	for batch := 0; batch < 20 && refused == 0; batch++ {
		var chunks [][]byte
		size := 0
		for range perBatch {
			c := gen.next(t, perChange)
			chunks = append(chunks, c)
			size += len(c)
		}
		if _, err := eng.AddChanges(nil, chunks...); err != nil {
			t.Fatal(err)
		}
		var acked bool
		acked, errs, code = bdPush(t, p, id, eng, st)
		if !acked {
			refused = size
			break
		}
		accepted += size
		acceptedChanges += len(chunks)
		ackedHeads = slices.Clone(eng.Heads())
	}
	t.Logf("attacker: %d bytes (%d changes) acknowledged, then a message of %d bytes: close %d, error messages %q", accepted, acceptedChanges, refused, code, errs)
	if refused == 0 {
		t.Fatalf("the node took %d bytes into one document with --max-doc-bytes %d", accepted, maxDoc)
	}
	if code != bdCloseLimit {
		t.Errorf("close %d, want %d", code, bdCloseLimit)
	}
	if len(errs) == 0 {
		t.Errorf("no error message before the close")
	}
	if accepted > maxDoc || accepted+refused <= maxDoc {
		t.Errorf("refused at %d+%d bytes, want the message that passes %d refused", accepted, refused, maxDoc)
	}
	if hits := bdLimitHits(t, n, "doc_bytes"); hits <= hits0 {
		t.Errorf(`plait_limit_hits_total{limit="doc_bytes"} %v, did not rise`, hits)
	}
	bdCheckNode(t, n, "after the growth")
	hp.finish(t)
	n.stop(t)

	n2 := startBoundsNode(t, bin, "node-restarted", dir, "--max-doc-bytes", strconv.Itoa(4<<20), "--max-send-message-bytes", strconv.Itoa(1<<20))
	hp2 := bdStartHonest(t, boundsWS(n2))
	q, res := bdFetch(t, boundsWS(n2), "fresh", id)
	if res.unavailable {
		t.Fatalf("the restarted node says %s is unavailable", id)
	}
	t.Logf("fresh client: %d changes in %d sync messages, at most %d bytes of changes in one (largest change %d)", res.changes, res.msgs, res.maxMsgChanges, res.maxChangeBytes)
	if !slices.Equal(res.doc.Heads(), ackedHeads) || res.doc.Len() != acceptedChanges {
		t.Errorf("fetched %d changes with heads %v, want the %d acknowledged ones, heads %v", res.doc.Len(), res.doc.Heads(), acceptedChanges, ackedHeads)
	}
	if res.maxMsgChanges > 1<<20+res.maxChangeBytes {
		t.Errorf("a sync message carried %d bytes of changes, want at most 1 MiB plus one change (%d)", res.maxMsgChanges, res.maxChangeBytes)
	}
	if res.msgs < accepted/(1<<20) {
		t.Errorf("%d bytes of changes came in %d messages, want at least %d", accepted, res.msgs, accepted/(1<<20))
	}
	bdCheckNode(t, n2, "after sending the document")

	// The document is over the new limit: a change to it is refused.
	hits0 = bdLimitHits(t, n2, "doc_bytes")
	more := bdNewChain(2)
	more.heads = slices.Clone(res.doc.Heads())
	if _, err := res.doc.AddChanges(nil, more.next(t, 100)); err != nil {
		t.Fatal(err)
	}
	acked, errs, code := bdPush(t, q, id, res.doc, res.st)
	t.Logf("a change to the document over the limit: acknowledged %v, close %d, error messages %q", acked, code, errs)
	if acked || code != bdCloseLimit {
		t.Errorf("a change to a document over --max-doc-bytes: acknowledged %v, close %d, want close %d", acked, code, bdCloseLimit)
	}
	if hits := bdLimitHits(t, n2, "doc_bytes"); hits <= hits0 {
		t.Errorf(`plait_limit_hits_total{limit="doc_bytes"} %v, did not rise`, hits)
	}
	hp2.finish(t)
	bdCheckNode(t, n2, "at the end")
}

// TestBoundsOpenDocuments: one connection requests 5,000 random unknown
// document ids (with the empty sync message automerge-repo sends), with no
// message rate limit. Each gets doc-unavailable, and a doc-unavailable
// answer keeps no document open: while the requester stays connected,
// plait_open_documents stays under 100 and go_goroutines within 100 of
// where it was, within 3 s. Then, with --max-docs-per-conn 100, a client
// that creates 150 documents by syncing them gets a sync answer for the
// first 100 and doc-unavailable plus an error message for the other 50,
// and its connection stays open.
func TestBoundsOpenDocuments(t *testing.T) {
	bin := boundsBinary(t)
	n := startBoundsNode(t, bin, "node", t.TempDir(), "--message-rate", "0", "--max-docs-per-conn", "100")
	hp := bdStartHonest(t, boundsWS(n))

	p := dialPeer(t, boundsWS(n), "requester")
	tl := bdTallyOf(t, p)
	open0, gor0 := bdMetric(t, n, "plait_open_documents"), bdMetric(t, n, "go_goroutines")
	const requests = 5000
	for i := range requests {
		if err := p.sendRaw(websocket.MessageBinary, bdFrame(t, p, protocol.TypeRequest, protocol.NewDocumentID(), bdEmptySync)); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if !tl.waitFor(20*time.Second, func() bool { return tl.types[protocol.TypeDocUnavailable] >= requests || tl.end != nil }) {
		tl.read(func() {
			t.Fatalf("%d doc-unavailable answers to %d requests within 20s", tl.types[protocol.TypeDocUnavailable], requests)
		})
	}
	tl.read(func() {
		t.Logf("requester: %v, %d error messages (first %q), connection end %v", tl.types, len(tl.errs), bdFirst(tl.errs), tl.end)
		if tl.end != nil {
			t.Fatalf("the requester's connection ended: %v", tl.end)
		}
	})
	var open, gor float64
	deadline := time.Now().Add(3 * time.Second)
	for {
		open, gor = bdMetric(t, n, "plait_open_documents"), bdMetric(t, n, "go_goroutines")
		if (open < 100 && gor < gor0+100) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("after %d requests: plait_open_documents %v (before %v), go_goroutines %v (before %v)", requests, open, open0, gor, gor0)
	if open >= 100 {
		t.Errorf("plait_open_documents %v with the requester still connected, want < 100", open)
	}
	if gor >= gor0+100 {
		t.Errorf("go_goroutines %v, was %v before the requests", gor, gor0)
	}
	bdCheckNode(t, n, "after the requests")

	// --max-docs-per-conn 100: the 101st document of one connection is refused.
	hits0 := bdLimitHits(t, n, "docs_per_conn")
	c := dialPeer(t, boundsWS(n), "creator")
	ct := bdTallyOf(t, c)
	ids := make([]protocol.DocumentID, 150)
	for i := range ids {
		ids[i] = protocol.NewDocumentID()
		doc := newDoc(t, "i", strconv.Itoa(i))
		sm, _ := automerge.NewSyncState(doc).GenerateMessage()
		if err := c.sendRaw(websocket.MessageBinary, bdFrame(t, c, protocol.TypeSync, ids[i], sm.Bytes())); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
	}
	ct.waitFor(15*time.Second, func() bool { return len(ct.first) >= len(ids) || ct.end != nil })
	// One more document: an answer proves the connection is still open.
	extra := protocol.NewDocumentID()
	if err := c.sendRaw(websocket.MessageBinary, bdFrame(t, c, protocol.TypeRequest, extra, bdEmptySync)); err != nil {
		t.Errorf("the creator's connection is closed: %v", err)
	}
	ct.waitFor(10*time.Second, func() bool { _, ok := ct.first[extra]; return ok || ct.end != nil })
	ct.read(func() {
		var synced, refused, refusedEarly int
		for i, id := range ids {
			switch ct.first[id] {
			case protocol.TypeSync:
				synced++
			case protocol.TypeDocUnavailable:
				refused++
				if i < 100 {
					refusedEarly++
				}
			}
		}
		t.Logf("creator: %d documents synced, %d refused (%d of the first 100), %d error messages (first %q), %v; connection end %v", synced, refused, refusedEarly, len(ct.errs), bdFirst(ct.errs), ct.types, ct.end)
		if synced != 100 || refused != 50 || refusedEarly != 0 {
			t.Errorf("of 150 new documents %d synced and %d refused (%d of the first 100), want the first 100 synced and the other 50 refused", synced, refused, refusedEarly)
		}
		if len(ct.errs) == 0 {
			t.Errorf("no error message with the refused documents")
		}
		if ct.end != nil {
			t.Errorf("the creator's connection ended: %v", ct.end)
		} else if _, ok := ct.first[extra]; !ok {
			t.Errorf("no answer to a request after the refusals")
		}
	})
	if hits := bdLimitHits(t, n, "docs_per_conn"); hits < hits0+50 {
		t.Errorf(`plait_limit_hits_total{limit="docs_per_conn"} %v, want at least %v`, hits, hits0+50)
	}
	hp.finish(t)
	bdCheckNode(t, n, "at the end")
}

func bdFirst(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// bdSilentPeer joins as peerID, requests document id, waits for the
// node's first answer (it is then a peer of the document), and never
// reads again: a receiver whose queue would grow.
func bdSilentPeer(t *testing.T, url, peerID string, id protocol.DocumentID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(64 << 20)
	read := func() *protocol.Message {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("%s: %v", peerID, err)
		}
		m, err := protocol.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", peerID, err)
		}
		return m
	}
	write := func(m *protocol.Message) {
		b, err := protocol.Encode(m)
		if err == nil {
			err = ws.Write(ctx, websocket.MessageBinary, b)
		}
		if err != nil {
			t.Fatalf("%s: %v", peerID, err)
		}
	}
	write(&protocol.Message{Type: protocol.TypeJoin, SenderID: peerID, SupportedProtocolVersions: []string{"1"}, PeerMetadata: &protocol.PeerMetadata{IsEphemeral: true}})
	m := read()
	if m.Type != protocol.TypePeer {
		t.Fatalf("%s: expected peer, got %+v", peerID, m)
	}
	write(&protocol.Message{Type: protocol.TypeRequest, SenderID: peerID, TargetID: m.SenderID, DocumentID: id, Data: bdEmptySync})
	for range 20 {
		if m := read(); m.Type == protocol.TypeSync && m.DocumentID == id {
			return
		}
	}
	t.Fatalf("%s: no sync answer for %s", peerID, id)
}

// TestBoundsEphemeralAmplification: 20 receivers join and sync one
// document, then never read; a watcher on the document reads. A peer that
// never synced the document sends ephemeral messages to it: none is
// relayed. The document's sender sends 20 ephemeral messages of 1 MiB
// (over --max-ephemeral-bytes, 64 KiB): each is dropped, counted, and
// answered with an error message, none relayed, and the sender stays
// connected. It then sends 400 messages of 60 KiB as fast as it can
// (60 KiB x 21 receivers each): the relay budget
// (--ephemeral-relay-bytes, 16 MiB/s per document) drops the excess and
// counts it. Peak RSS stays under 512 MiB, and honest clients of another
// document keep syncing.
func TestBoundsEphemeralAmplification(t *testing.T) {
	bin := boundsBinary(t)
	n := startBoundsNode(t, bin, "node", t.TempDir())
	hp := bdStartHonest(t, boundsWS(n))
	url := boundsWS(n)

	id := protocol.NewDocumentID()
	sender := dialPeer(t, url, "sender")
	doc := newDoc(t, "title", "ephemeral")
	sender.syncDoc(id, doc, automerge.NewSyncState(doc), false)
	for i := range 20 {
		bdSilentPeer(t, url, fmt.Sprintf("receiver-%02d", i), id)
	}
	watcher := dialPeer(t, url, "watcher")
	wdoc := automerge.New()
	watcher.syncDoc(id, wdoc, automerge.NewSyncState(wdoc), true)
	wt, st := bdTallyOf(t, watcher), bdTallyOf(t, sender)
	ephemeral := func(p *goPeer, session string, count, size int) error {
		b, err := protocol.Encode(&protocol.Message{Type: protocol.TypeEphemeral, SenderID: p.id, TargetID: p.server, DocumentID: id,
			SessionID: session, Count: uint64(count), Data: bytes.Repeat([]byte{'e'}, size)})
		if err != nil {
			t.Fatal(err)
		}
		return p.sendRaw(websocket.MessageBinary, b)
	}
	marker := func(name string) {
		t.Helper()
		if err := ephemeral(sender, name, 1, 10); err != nil {
			t.Fatalf("sender: %v", err)
		}
		if !wt.waitFor(10*time.Second, func() bool { return wt.sessions[name] > 0 }) {
			t.Fatalf("the watcher did not get the sender's %s within 10s", name)
		}
	}

	// A peer that never synced the document speaks to it.
	outsider := dialPeer(t, url, "outsider")
	for i := 1; i <= 5; i++ {
		if err := ephemeral(outsider, "outsider", i, 100); err != nil {
			t.Fatalf("outsider: %v", err)
		}
	}
	outsider.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: outsider.id, TargetID: outsider.server, DocumentID: protocol.NewDocumentID(), Data: bdEmptySync})
	if m := outsider.recv(); m.Type != protocol.TypeDocUnavailable { // its ephemeral messages were handled before this
		t.Fatalf("outsider: expected doc-unavailable, got %+v", m)
	}
	marker("marker-1")
	wt.read(func() {
		if k := wt.sessions["outsider"]; k > 0 {
			t.Errorf("the watcher got %d ephemeral messages from a peer that never synced the document", k)
		}
	})

	// Messages over --max-ephemeral-bytes.
	bytesHits0 := bdLimitHits(t, n, "ephemeral_bytes")
	for i := 1; i <= 20; i++ {
		if err := ephemeral(sender, "big", i, 1<<20); err != nil {
			t.Fatalf("sender, 1 MiB message %d: %v", i, err)
		}
	}
	marker("marker-2")
	st.waitFor(5*time.Second, func() bool { return len(st.errs) >= 20 || st.end != nil })
	wt.read(func() {
		if k := wt.sessions["big"]; k > 0 {
			t.Errorf("the watcher got %d ephemeral messages of 1 MiB", k)
		}
	})
	st.read(func() {
		t.Logf("sender after 20 messages of 1 MiB: %d error messages (first %q), connection end %v", len(st.errs), bdFirst(st.errs), st.end)
		if len(st.errs) == 0 {
			t.Errorf("the sender got no error message for its 1 MiB ephemeral messages")
		}
	})
	if hits := bdLimitHits(t, n, "ephemeral_bytes"); hits < bytesHits0+20 {
		t.Errorf(`plait_limit_hits_total{limit="ephemeral_bytes"} %v, want at least %v`, hits, bytesHits0+20)
	}

	// A flood within the size bound, past the relay budget.
	relayHits0 := bdLimitHits(t, n, "ephemeral_relay")
	const flood = 400
	start := time.Now()
	for i := 1; i <= flood; i++ {
		if err := ephemeral(sender, "flood", i, 60<<10); err != nil {
			t.Fatalf("sender, 60 KiB message %d: %v", i, err)
		}
	}
	sent := time.Since(start)
	var relayHits float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if relayHits = bdLimitHits(t, n, "ephemeral_relay"); relayHits > relayHits0 {
			break
		}
	}
	wt.waitFor(2*time.Second, func() bool { return wt.sessions["flood"] >= flood })
	wt.read(func() {
		t.Logf("%d messages of 60 KiB sent in %s: the watcher got %d; ephemeral_relay limit hits %v", flood, sent.Round(time.Millisecond), wt.sessions["flood"], relayHits-relayHits0)
	})
	if relayHits <= relayHits0 {
		t.Errorf(`plait_limit_hits_total{limit="ephemeral_relay"} %v, did not rise`, relayHits)
	}
	// The sender is still connected: it syncs.
	syncs := 0
	st.read(func() { syncs = st.types[protocol.TypeSync] })
	sender.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: sender.id, TargetID: sender.server, DocumentID: id, Data: bdEmptySync})
	if !st.waitFor(10*time.Second, func() bool { return st.types[protocol.TypeSync] > syncs || st.end != nil }) {
		t.Errorf("the sender got no sync answer within 10s")
	}
	st.read(func() {
		if st.end != nil {
			t.Errorf("the sender's connection ended: %v", st.end)
		}
	})
	t.Logf("dropped: %v", bdMetric(t, n, "plait_messages_dropped_total"))
	bdCheckNode(t, n, "after the ephemeral flood")
	hp.finish(t)
	bdCheckNode(t, n, "at the end")
}

// bdBloom encodes a valid Bloom filter of the given entries (10 bits per
// entry, 7 probes) whose bits are arbitrary: what the node must parse and
// keep if it accepts it.
func bdBloom(entries int) []byte {
	b := bdULEB(nil, uint64(entries))
	b = bdULEB(b, amsync.BloomBitsPerEntry)
	b = bdULEB(b, amsync.BloomProbes)
	return append(b, bytes.Repeat([]byte{0x55}, (entries*amsync.BloomBitsPerEntry+7)/8)...)
}

// TestBoundsBloomAndNeed: on a node that takes 40 MB frames
// (--max-message-bytes), one connection sends, back to back, 60 sync
// messages to 60 new documents, each with a valid 30 MiB Bloom filter
// (25 M entries); the engine's bound (a Bloom filter of at most 2 MiB)
// refuses the first with an error and close 4413. Messages with a need
// list of 100,000 hashes, 5,000 heads, 17 haves, or a have whose lastSync
// lists 5,000 hashes (at most 4,096 hashes per list and 2 haves) are
// refused the same way, each on its own connection. Peak RSS stays under
// 512 MiB and honest clients keep syncing.
func TestBoundsBloomAndNeed(t *testing.T) {
	bin := boundsBinary(t)
	n := startBoundsNode(t, bin, "node", t.TempDir(), "--max-message-bytes", "40000000")
	hp := bdStartHonest(t, boundsWS(n))
	hits0 := bdLimitHits(t, n, "sync_bounds")
	closes0 := bdMetric(t, n, `plait_disconnects_total{code="`+protocol.CloseLimitExceeded.String()+`"}`)

	bloom := bdBloom(30 << 20 * 8 / 10)
	data := (&amsync.Message{Type: amsync.MessageTypeSync, Have: []amsync.Have{{Bloom: bloom}}}).Encode()
	p := dialPeer(t, boundsWS(n), "bloomer")
	sent := 0
	var sendErr error
	for range 60 {
		if sendErr = p.sendRaw(websocket.MessageBinary, bdFrame(t, p, protocol.TypeSync, protocol.NewDocumentID(), data)); sendErr != nil {
			break
		}
		sent++
	}
	errs, code, err := bdOutcome(p, 20*time.Second)
	t.Logf("Bloom filters of %d MiB: %d of 60 messages sent (%v); attacker saw close %d, error messages %q, %v", len(bloom)>>20, sent, sendErr, code, errs, err)
	if code != bdCloseLimit {
		// Writing into a closing connection may cost us the close frame:
		// then the node's count of 4413 closes tells.
		if closes := bdMetric(t, n, `plait_disconnects_total{code="`+protocol.CloseLimitExceeded.String()+`"}`); code != 0 || closes <= closes0 {
			t.Errorf("close %d (%v), want %d", code, err, bdCloseLimit)
		} else {
			t.Logf("the close frame was lost to our own writes; the node counted a close 4413")
		}
	}
	bdCheckNode(t, n, "after the Bloom filters")

	cases := []struct {
		name string
		msg  amsync.Message
	}{
		{"need of 100,000 hashes", amsync.Message{Need: bdRandHashes(100_000), Have: []amsync.Have{{}}}},
		{"5,000 heads", amsync.Message{Heads: bdRandHashes(5000), Have: []amsync.Have{{}}}},
		{"17 haves", amsync.Message{Have: make([]amsync.Have, 17)}},
		{"a lastSync of 5,000 hashes", amsync.Message{Have: []amsync.Have{{LastSync: bdRandHashes(5000)}}}},
		{"a 3 MiB Bloom filter", amsync.Message{Have: []amsync.Have{{Bloom: bdBloom(3 << 20 * 8 / 10)}}}},
	}
	for i, c := range cases {
		c.msg.Type = amsync.MessageTypeSync
		q := dialPeer(t, boundsWS(n), fmt.Sprintf("lists-%d", i))
		if err := q.sendRaw(websocket.MessageBinary, bdFrame(t, q, protocol.TypeSync, protocol.NewDocumentID(), c.msg.Encode())); err != nil {
			t.Errorf("%s: send: %v", c.name, err)
			continue
		}
		errs, code, err := bdOutcome(q, 5*time.Second)
		t.Logf("%s: close %d, error messages %q, %v", c.name, code, errs, err)
		if code != bdCloseLimit || len(errs) == 0 {
			t.Errorf("%s: close %d after %d error messages (%v), want an error message and close %d", c.name, code, len(errs), err, bdCloseLimit)
		}
	}
	if hits := bdLimitHits(t, n, "sync_bounds"); hits < hits0+float64(1+len(cases)) {
		t.Errorf(`plait_limit_hits_total{limit="sync_bounds"} %v, want at least %v`, hits, hits0+float64(1+len(cases)))
	}
	hp.finish(t)
	bdCheckNode(t, n, "at the end")
}

// TestBoundsPeerIDTakeover: a victim joins with peer id X and syncs a
// document; ten times, an attacker connects and joins with the same peer
// id X. Each attacker gets a session of its own (it can fetch the
// document), the victim's connection stays open (no 4409) and receives
// the change a third client makes after each takeover.
func TestBoundsPeerIDTakeover(t *testing.T) {
	bin := boundsBinary(t)
	n := startBoundsNode(t, bin, "node", t.TempDir())
	hp := bdStartHonest(t, boundsWS(n))
	url := boundsWS(n)
	replaced := `plait_disconnects_total{code="` + protocol.CloseReplaced.String() + `"}`
	replaced0 := bdMetric(t, n, replaced)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w, err := client.New(ctx, client.Options{URLs: []string{url}, PeerID: "writer", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	hw, err := w.Create(func(d *automerge.Doc) error { return d.RootMap().Set("n", int64(0)) })
	if err != nil {
		t.Fatal(err)
	}
	for !hw.InSync() {
		if ctx.Err() != nil {
			t.Fatal("the writer's document did not reach the node within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	id := hw.ID()

	const x = "peer-x"
	victim := dialPeer(t, url, x)
	vdoc := automerge.New()
	vss := automerge.NewSyncState(vdoc)
	victim.syncDoc(id, vdoc, vss, true)
	value := func() int64 {
		v, err := vdoc.RootMap().Get("n")
		if err != nil {
			t.Fatal(err)
		}
		i, _ := automerge.As[int64](v)
		return i
	}
	for i := int64(1); i <= 10; i++ {
		// The attacker has a session of its own: its request is answered.
		attacker := dialPeer(t, url, x)
		attacker.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: x, TargetID: attacker.server, DocumentID: id, Data: bdEmptySync})
		for k := 0; ; k++ {
			m := attacker.recv()
			if m.Type == protocol.TypeSync && m.DocumentID == id {
				if i == 1 {
					t.Logf("attacker joined as %q: its request got a sync message of %d bytes", x, len(m.Data))
				}
				break
			}
			if m.Type == protocol.TypeError || m.Type == protocol.TypeDocUnavailable || k == 20 {
				t.Fatalf("takeover %d: the attacker's request got %+v", i, m)
			}
		}
		if err := hw.Change(func(d *automerge.Doc) error { return d.RootMap().Set("n", i) }); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for value() != i {
			if time.Now().After(deadline) {
				t.Fatalf("takeover %d: the victim did not get the change within 10s (it has n=%d)", i, value())
			}
			m, err := victim.next(time.Second)
			if errors.Is(err, errNoMessage) {
				continue
			}
			if err != nil {
				t.Fatalf("takeover %d: the victim's connection ended: %v", i, err)
			}
			switch m.Type {
			case protocol.TypeSync:
				if m.DocumentID != id {
					continue
				}
				if _, err := vss.ReceiveMessage(m.Data); err != nil {
					t.Fatal(err)
				}
				if sm, ok := vss.GenerateMessage(); ok {
					victim.send(&protocol.Message{Type: protocol.TypeSync, SenderID: victim.id, TargetID: victim.server, DocumentID: id, Data: sm.Bytes()})
				}
			case protocol.TypeError:
				t.Fatalf("takeover %d: the victim got error %q", i, m.ErrorMessage)
			}
		}
	}
	t.Logf("the victim received the change after each of 10 takeovers of its peer id")
	if r := bdMetric(t, n, replaced); r > replaced0 {
		t.Errorf("%s = %v: connections were replaced", replaced, r)
	}
	hp.finish(t)
	bdCheckNode(t, n, "at the end")
}

// TestBoundsHistoryInPiecesToJSClient: a history larger than
// --max-send-message-bytes reaches the stock automerge-repo client (a fresh
// Repo with no storage, find by URL) as several sync messages, and the
// client ends with every change: the cut is invisible to a real peer.
func TestBoundsHistoryInPiecesToJSClient(t *testing.T) {
	requireJS(t)
	bin := boundsBinary(t)
	const piece = 256 << 10
	n := startBoundsNode(t, bin, "node", t.TempDir(), "--max-send-message-bytes", strconv.Itoa(piece))
	id := protocol.NewDocumentID()
	p := dialPeer(t, boundsWS(n), "writer")
	gen := bdNewChain(7)
	eng, st := syncengine.New(syncengine.Options{}), syncengine.NewState()
	total := 0
	for range 4 { // 4 messages of 8 changes of ~100 KB: ~3 MB, about 12 pieces
		var chunks [][]byte
		for range 8 {
			c := gen.next(t, 100_000)
			chunks = append(chunks, c)
			total += len(c)
		}
		if _, err := eng.AddChanges(nil, chunks...); err != nil {
			t.Fatal(err)
		}
		if acked, errs, code := bdPush(t, p, id, eng, st); !acked {
			t.Fatalf("the writer's changes were refused: close %d, %q", code, errs)
		}
	}
	var want []string
	for _, h := range eng.Heads() {
		want = append(want, protocol.EncodeHead(h))
	}
	out0 := bdMetric(t, n, "plait_messages_out_total{type=\"sync\"}")
	loaded := runJS(t, "load.mjs", boundsWS(n), "automerge:"+string(id), headsJSON(t, want))
	if got := heads(t, loaded); !slices.Equal(got, want) {
		t.Fatalf("the JS client has heads %v, want %v", got, want)
	}
	sent := bdMetric(t, n, "plait_messages_out_total{type=\"sync\"}") - out0
	t.Logf("%d bytes of changes reached the JS client in %v sync messages (at most %d bytes of changes each)", total, sent, piece)
	if min := float64(total / piece); sent < min {
		t.Fatalf("%v sync messages carried %d bytes: not cut at %d bytes", sent, total, piece)
	}
	bdCheckNode(t, n, "after the JS client loaded the history")
}

// bdTrickle opens n TCP connections from source address src that send the
// start of an upgrade request and then nothing, and returns them.
func bdTrickle(t *testing.T, addr, src string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			continue // a refusal may reset before the dial returns
		}
		conns = append(conns, c)
		_, _ = c.Write([]byte("GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\n"))
	}
	return conns
}

// bdStillOpen counts the connections the node has not closed: a read that
// times out means open; EOF or a reset means closed. The reads run at once
// (a read past its deadline fails without looking at the socket).
func bdStillOpen(conns []net.Conn) int {
	var open atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(100 * time.Millisecond)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(deadline)
			buf := make([]byte, 512)
			for {
				_, err := c.Read(buf)
				if err == nil {
					continue // a refusal's response: read on to its close
				}
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					open.Add(1)
				}
				return
			}
		}()
	}
	wg.Wait()
	return int(open.Load())
}

// TestBoundsHalfOpenUpgrades: thousands of connections that start an
// upgrade and never finish it. From one address, at most
// --max-pending-conns-per-ip (64) stay open; from 20 addresses, more than
// the node-wide pending cap, the node evicts the longest waiting so that
// /healthz and /metrics still answer, honest clients keep syncing, and the
// node's peak RSS stays bounded.
func TestBoundsHalfOpenUpgrades(t *testing.T) {
	bin := boundsBinary(t)
	n := startBoundsNode(t, bin, "node", t.TempDir(), "--max-pending-conns", "512")
	hp := bdStartHonest(t, boundsWS(n))

	one := bdTrickle(t, n.addr, "127.0.0.2", 300)
	open := bdStillOpen(one)
	for deadline := time.Now().Add(5 * time.Second); open > 64 && time.Now().Before(deadline); open = bdStillOpen(one) {
		// the node accepts (and refuses) from its backlog at its own pace
	}
	if open > 64 {
		t.Fatalf("%d of %d half-open connections from one address still open, want at most 64", open, len(one))
	} else {
		t.Logf("one address: %d of %d half-open connections still open", open, len(one))
	}
	var many []net.Conn
	for i := range 20 {
		many = append(many, bdTrickle(t, n.addr, fmt.Sprintf("127.0.1.%d", i+1), 60)...)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := fromSource("127.0.0.3").Get(n.http + path)
		if err != nil {
			t.Fatalf("%s with %d half-open connections on the node: %v", path, len(one)+len(many), err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d, want 200", path, resp.StatusCode)
		}
	}
	open = bdStillOpen(many)
	t.Logf("20 addresses: %d of %d half-open connections still open; pending gauge %v", open, len(many), bdMetric(t, n, "plait_pending_connections"))
	if open > 512 {
		t.Fatalf("%d half-open connections open, want at most the node-wide cap 512", open)
	}
	if hits := bdLimitHits(t, n, "pending_conns_per_ip"); hits < float64(len(one)-64) {
		t.Errorf("pending_conns_per_ip hits %v, want >= %d", hits, len(one)-64)
	}
	hp.finish(t)
	bdCheckNode(t, n, "after the half-open upgrades")
}

// TestBoundsManyLargeDocumentsOneReader: one connection asks at once for
// 6 documents of about 1.6 MB each on a node that cuts sync messages at
// 256 KiB and lets 300 KiB queue for a client (--max-queue-bytes), and
// reads slowly. The documents take turns at the connection's write queue
// instead of overflowing it: the reader gets every document and is never
// closed as a slow consumer (4429), which would repeat on every reconnect.
func TestBoundsManyLargeDocumentsOneReader(t *testing.T) {
	bin := boundsBinary(t)
	const piece = 256 << 10
	n := startBoundsNode(t, bin, "node", t.TempDir(), "--max-send-message-bytes", strconv.Itoa(piece), "--max-queue-bytes", strconv.Itoa(300<<10))
	w := dialPeer(t, boundsWS(n), "writer")
	type docWant struct {
		id    protocol.DocumentID
		heads []amsync.Hash
	}
	var docs []docWant
	for k := range 6 {
		id := protocol.NewDocumentID()
		gen := bdNewChain(uint64(20 + k))
		eng, st := syncengine.New(syncengine.Options{}), syncengine.NewState()
		for range 2 {
			var chunks [][]byte
			for range 8 {
				chunks = append(chunks, gen.next(t, 100_000))
			}
			if _, err := eng.AddChanges(nil, chunks...); err != nil {
				t.Fatal(err)
			}
			if acked, errs, code := bdPush(t, w, id, eng, st); !acked {
				t.Fatalf("the writer's changes were refused: close %d, %q", code, errs)
			}
		}
		docs = append(docs, docWant{id: id, heads: eng.Heads()})
	}

	r := dialPeer(t, boundsWS(n), "reader")
	engs := map[protocol.DocumentID]*syncengine.Doc{}
	sts := map[protocol.DocumentID]*syncengine.State{}
	for _, d := range docs {
		engs[d.id], sts[d.id] = syncengine.New(syncengine.Options{}), syncengine.NewState()
		r.send(&protocol.Message{Type: protocol.TypeRequest, SenderID: r.id, TargetID: r.server, DocumentID: d.id, Data: engs[d.id].GenerateMessage(sts[d.id])})
	}
	done := func() int {
		k := 0
		for _, d := range docs {
			if slices.Equal(engs[d.id].Heads(), d.heads) {
				k++
			}
		}
		return k
	}
	msgs := 0
	deadline := time.Now().Add(60 * time.Second)
	for done() < len(docs) {
		if time.Now().After(deadline) {
			t.Fatalf("after 60s and %d sync messages, %d of %d documents complete", msgs, done(), len(docs))
		}
		m, err := r.next(10 * time.Second)
		if err != nil {
			t.Fatalf("reader, after %d sync messages and %d complete documents: %v", msgs, done(), err)
		}
		switch m.Type {
		case protocol.TypeError:
			t.Fatalf("reader got an error: %q", m.ErrorMessage)
		case protocol.TypeSync:
			eng, st := engs[m.DocumentID], sts[m.DocumentID]
			if eng == nil {
				continue
			}
			msgs++
			time.Sleep(5 * time.Millisecond) // a slow reader
			if _, err := eng.ReceiveMessage(st, m.Data, nil); err != nil {
				t.Fatal(err)
			}
			if data := eng.GenerateMessage(st); data != nil {
				r.send(&protocol.Message{Type: protocol.TypeSync, SenderID: r.id, TargetID: r.server, DocumentID: m.DocumentID, Data: data})
			}
		}
	}
	t.Logf("6 documents of about 1.6 MB reached one slow reader in %d sync messages", msgs)
	if v := bdMetric(t, n, `plait_disconnects_total{code="slow consumer"}`); v != 0 {
		t.Fatalf("%v slow-consumer disconnects", v)
	}
	bdCheckNode(t, n, "after the reader got every document")
}
