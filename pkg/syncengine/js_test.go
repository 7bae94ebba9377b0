package syncengine_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/amsync"
	"github.com/plaithub/plait/pkg/syncengine"
)

// These tests exchange sync messages directly (no automerge-repo, no
// WebSocket) between the engine and @automerge/automerge 3.5 run by Node:
// server/testdata/js/engine-peer.mjs keeps a document and a SyncState and
// speaks JSON lines on stdin/stdout (see the top of that file). The Go peer
// is a Doc (which does the syncing) plus an automerge-go document (the
// content): local edits are committed in automerge-go and added to the Doc;
// changes the Doc receives are loaded into automerge-go.
//
// `make test` installs the JS packages (npm ci in server/testdata/js).
// PLAIT_JS_DIR names another copy of that directory, packages installed.

var (
	jsDir        = cmp.Or(os.Getenv("PLAIT_JS_DIR"), "../../server/testdata/js")
	jsPeerScript = jsDir + "/engine-peer.mjs"
)

const (
	jsTimeout = 90 * time.Second
)

func requireNodePeer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: the syncengine JS tests need Node >= 20 and the packages of server/testdata/js (run `make test`, or `npm ci` in server/testdata/js)")
	}
	if _, err := os.Stat(jsDir + "/node_modules/@automerge/automerge/package.json"); err != nil {
		t.Fatalf("@automerge/automerge is not installed in server/testdata/js: run `make test` (or `npm ci` in server/testdata/js): %v", err)
	}
	if _, err := os.Stat(jsPeerScript); err != nil {
		t.Fatalf("missing %s: %v", jsPeerScript, err)
	}
}

// jsLine is one line the Node peer prints.
type jsLine struct {
	Sync     *string         `json:"sync"`
	Epoch    int             `json:"epoch"`
	Ready    bool            `json:"ready"`
	Ack      *int            `json:"ack"`
	Heads    []string        `json:"heads"`
	Changes  int             `json:"changes"`
	AutoLeft int             `json:"autoLeft"`
	OK       *bool           `json:"ok"`
	Error    string          `json:"error"`
	Step     string          `json:"step"`
	Message  string          `json:"message"`
	Doc      json.RawMessage `json:"doc"`
	Made     int             `json:"made"`
	Stats    json.RawMessage `json:"stats"`
	raw      string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// goPeer is the Go side: the engine plus automerge-go for the content.
type goPeer struct {
	t       *testing.T
	am      *automerge.Doc
	eng     *syncengine.Doc
	st      *syncengine.State
	rng     *rand.Rand
	tag     string
	made    int
	creator bool // creates the structure with its first edit
	maxSend int  // the engine's MaxSendBytes, checked on every message sent (0: default, unchecked)
}

func newGoPeer(t *testing.T, seed uint64) *goPeer {
	return newGoPeerOpts(t, seed, syncengine.Options{})
}

func newGoPeerOpts(t *testing.T, seed uint64, opts syncengine.Options) *goPeer {
	return &goPeer{
		t:       t,
		maxSend: opts.MaxSendBytes,
		am:      automerge.New(),
		eng:     syncengine.New(opts),
		st:      syncengine.NewState(),
		rng:     rand.New(rand.NewPCG(seed, 7)),
		tag:     "G",
	}
}

type structure struct {
	items *automerge.List
	text  *automerge.Text
	marks *automerge.Map
	count *automerge.Counter
}

func (g *goPeer) structure() (s structure, ok bool) {
	root := g.am.RootMap()
	get := func(key string, kind automerge.Kind) *automerge.Value {
		v, err := root.Get(key)
		if err != nil || v.Kind() != kind {
			return nil
		}
		return v
	}
	items, text, marks := get("items", automerge.KindList), get("text", automerge.KindText), get("marks", automerge.KindMap)
	if items == nil || text == nil || marks == nil {
		return s, false
	}
	s = structure{items: items.List(), text: text.Text(), marks: marks.Map()}
	if c := get("count", automerge.KindCounter); c != nil {
		s.count = c.Counter()
	}
	return s, true
}

// edit makes one change in automerge-go and adds it to the engine.
func (g *goPeer) edit() {
	t := g.t
	t.Helper()
	i := g.made
	key := fmt.Sprintf("%s-%d", g.tag, i)
	root := g.am.RootMap()
	s, ok := g.structure()
	var err error
	switch {
	case !ok && g.creator:
		for _, kv := range []struct {
			k string
			v any
		}{{"items", automerge.NewList()}, {"text", automerge.NewText("hello")}, {"marks", automerge.NewMap()}, {"count", automerge.NewCounter(0)}} {
			if err = root.Set(kv.k, kv.v); err != nil {
				break
			}
		}
	case !ok:
		err = root.Set(key, int64(i))
	default:
		switch g.rng.IntN(8) {
		case 0:
			err = s.marks.Set(key, int64(i))
		case 1:
			vals := []any{float64(i) + 0.5, i%2 == 0, nil, fmt.Sprintf("v%d", i), map[string]any{"tag": g.tag, "i": int64(i), "nested": []any{int64(i), g.tag}}}
			err = s.marks.Set(key, vals[g.rng.IntN(len(vals))])
		case 2, 3:
			err = s.items.Insert(g.rng.IntN(s.items.Len()+1), key)
		case 4:
			if n := s.items.Len(); n > 0 {
				err = s.items.Delete(g.rng.IntN(n))
			} else {
				err = s.items.Append(key)
			}
		case 5:
			n := s.text.Len()
			pos := g.rng.IntN(n + 1)
			del := g.rng.IntN(min(3, n-pos) + 1)
			err = s.text.Splice(pos, del, "<"+key+">")
		case 6:
			if s.count != nil {
				err = s.count.Inc(int64(1 + g.rng.IntN(3)))
			} else {
				err = s.marks.Set(key, int64(i))
			}
		default:
			keys, kerr := s.marks.Keys()
			if kerr == nil && len(keys) > 0 && g.rng.IntN(2) == 0 {
				err = s.marks.Delete(keys[g.rng.IntN(len(keys))])
			} else {
				err = s.marks.Set(key, fmt.Sprintf("w%d", i))
			}
		}
	}
	if err != nil {
		t.Fatalf("go edit %s: %v", key, err)
	}
	h, err := g.am.Commit(key)
	if err != nil {
		t.Fatalf("go commit %s: %v", key, err)
	}
	ch, err := g.am.Change(h)
	if err != nil {
		t.Fatalf("go change %s: %v", key, err)
	}
	if _, err := g.eng.AddChanges("local", ch.Save()); err != nil {
		t.Fatalf("engine refused the local change %s (%s): %v", key, h, err)
	}
	g.made++
}

// session is one Node peer talking with one goPeer.
type session struct {
	t      *testing.T
	g      *goPeer
	ctx    context.Context
	stdin  io.WriteCloser
	lines  chan jsLine
	stderr *lockedBuffer
	exited chan struct{}
	err    error // of cmd.Wait, once exited is closed

	epoch  int
	pingID int
	ready  *jsLine
	result *jsLine

	// traffic
	out, in           int // messages
	outBytes, inBytes int
	changesIn         int
	compressedIn      int // compressed change chunks received
	cutOut            int // messages with changes sent, when maxSend is set
	staleIn           int
	maxMsg            int
	firstBytesIn      map[byte]int
	trailers          map[string]int // hex of the bytes after the changes -> messages
}

func startNodePeer(t *testing.T, g *goPeer, args ...string) *session {
	t.Helper()
	requireNodePeer(t)
	ctx, cancel := context.WithTimeout(context.Background(), jsTimeout)
	cmd := exec.CommandContext(ctx, "node", append([]string{jsPeerScript}, args...)...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PLAIT_E2E_TIMEOUT_MS=%d", (jsTimeout-5*time.Second).Milliseconds()))
	cmd.WaitDelay = 5 * time.Second
	s := &session{t: t, g: g, ctx: ctx, lines: make(chan jsLine, 1<<16), stderr: &lockedBuffer{}, exited: make(chan struct{}), firstBytesIn: map[byte]int{}, trailers: map[string]int{}}
	cmd.Stderr = s.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.stdin = stdin
	start := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start node: %v", err)
	}
	go func() {
		defer close(s.exited)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		for sc.Scan() {
			var l jsLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = jsLine{Error: fmt.Sprintf("not a JSON line: %v", err)}
			}
			l.raw = sc.Text()
			select {
			case s.lines <- l:
			case <-ctx.Done():
			}
		}
		close(s.lines)
		s.err = cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-s.exited:
		case <-time.After(3 * time.Second):
		}
		cancel() // kills node if it is still running
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("node did not exit")
		}
		t.Logf("node peer %v: %s; go peer sent %d messages (%d bytes, largest %d), received %d (%d bytes, %d changes, %d compressed, %d stale, first bytes %v, trailers %v)",
			args, time.Since(start).Round(time.Millisecond), s.out, s.outBytes, s.maxMsg, s.in, s.inBytes, s.changesIn, s.compressedIn, s.staleIn, s.firstBytesIn, s.trailers)
	})
	// Wait for the ready line, handling the sync messages that come first.
	for s.ready == nil {
		s.handle(s.next())
	}
	return s
}

func (s *session) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf(format+"\nnode stderr (last lines):\n%s", append(args, lastLinesOf(s.stderr.String(), 30))...)
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *session) send(cmd any) {
	s.t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.stdin.Write(append(b, '\n')); err != nil {
		s.fatalf("writing to node: %v", err)
	}
}

// next returns the next line of the Node peer; it fails the test if the
// peer failed, exited or took too long.
func (s *session) next() jsLine {
	s.t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			<-s.exited
			s.fatalf("node exited before its result: %v", s.err)
		}
		if l.OK != nil && !*l.OK || l.Error != "" {
			msg := ""
			if l.Message != "" {
				msg = fmt.Sprintf("\nthe message it refused (%d bytes, type 0x%s): %s", len(l.Message)/2, l.Message[:min(2, len(l.Message))], l.Message)
			}
			s.fatalf("node peer failed while %q: %s%s\nline: %.2000s", l.Step, l.Error, msg, l.raw)
		}
		return l
	case <-s.ctx.Done():
		s.fatalf("timed out waiting for the node peer (%v)", jsTimeout)
	}
	panic("unreachable")
}

// handle processes one line: a sync message is received by the engine, its
// changes loaded into automerge-go, and every message due is sent back.
func (s *session) handle(l jsLine) {
	s.t.Helper()
	switch {
	case l.Sync != nil:
		msg, err := base64.StdEncoding.DecodeString(*l.Sync)
		if err != nil {
			s.fatalf("bad base64 from node: %v", err)
		}
		if l.Epoch < s.epoch {
			s.staleIn++ // sent before a reconnect: lost in flight
			return
		}
		s.in++
		s.inBytes += len(msg)
		if len(msg) > 0 {
			s.firstBytesIn[msg[0]]++
		}
		if m, err := amsync.ParseMessage(msg); err == nil {
			if len(m.Trailer) > 0 {
				s.trailers[hex.EncodeToString(m.Trailer)]++
			}
			for _, c := range m.Changes {
				if len(c) > 8 && c[8] == 2 {
					s.compressedIn++
				}
			}
		}
		applied, err := s.g.eng.ReceiveMessage(s.g.st, msg, "js")
		if err != nil {
			s.fatalf("engine refused a message from @automerge/automerge (%d bytes, type 0x%02x): %v\nbytes: %x", len(msg), msg[0], err, msg)
		}
		if len(applied) > 0 {
			var raw []byte
			for _, c := range applied {
				raw = append(raw, c.Raw...)
			}
			if err := s.g.am.LoadIncremental(raw); err != nil {
				s.fatalf("automerge-go refused %d changes the engine applied: %v", len(applied), err)
			}
			s.changesIn += len(applied)
		}
		s.sendDue()
	case l.Ready:
		s.ready = &l
	case l.OK != nil:
		s.result = &l
	case l.Ack != nil:
	default:
		s.fatalf("unexpected line from node: %.500s", l.raw)
	}
}

// sendDue sends every message the engine has for the Node peer and returns
// how many.
func (s *session) sendDue() int {
	s.t.Helper()
	n := 0
	for {
		msg := s.g.eng.GenerateMessage(s.g.st)
		if msg == nil {
			return n
		}
		if n++; n > 100 {
			s.fatalf("the engine generated 100 messages in a row")
		}
		if s.g.maxSend > 0 {
			m, err := amsync.ParseMessage(msg)
			if err != nil {
				s.fatalf("the engine sent an unparsable message: %v", err)
			}
			sum := 0
			for _, c := range m.Changes {
				sum += len(c)
			}
			if len(m.Changes) > 1 && sum > s.g.maxSend {
				s.fatalf("a message of %d changes carries %d bytes of changes (MaxSendBytes %d)", len(m.Changes), sum, s.g.maxSend)
			}
			if len(m.Changes) > 0 {
				s.cutOut++
			}
		}
		s.out++
		s.outBytes += len(msg)
		s.maxMsg = max(s.maxMsg, len(msg))
		s.send(map[string]any{"sync": base64.StdEncoding.EncodeToString(msg), "epoch": s.epoch})
	}
}

// pump handles the lines that arrive within d.
func (s *session) pump(d time.Duration) {
	s.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.next() // reports the exit
			}
			s.handle(l)
		case <-timer.C:
			return
		}
	}
}

// ping asks the Node peer to send what is due and to acknowledge; it
// handles every line until the acknowledgement and returns it, with the
// number of sync messages received and sent meanwhile.
func (s *session) ping() (ack jsLine, received, sent int) {
	s.t.Helper()
	s.pingID++
	id := s.pingID
	s.send(map[string]any{"ping": id})
	in0, out0, stale0 := s.in, s.out, s.staleIn
	for {
		l := s.next()
		if l.Ack != nil && *l.Ack == id {
			return l, s.in + s.staleIn - in0 - stale0, s.out - out0
		}
		s.handle(l)
	}
}

// settle exchanges messages until a round in which neither side had
// anything to send (and the Node peer has no timed edits left); it returns
// the number of rounds.
func (s *session) settle() int {
	s.t.Helper()
	for round := 1; round <= 500; round++ {
		sentBefore := s.sendDue()
		ack, received, sent := s.ping()
		if sentBefore == 0 && received == 0 && sent == 0 && ack.AutoLeft == 0 {
			return round
		}
	}
	s.fatalf("sync did not settle in 500 rounds")
	return 0
}

// concurrent lets both sides edit on timers, sending as they go, with
// messages crossing in flight.
func (s *session) concurrent(goEdits int, goEvery time.Duration, jsEdits int, jsEvery time.Duration) {
	s.t.Helper()
	s.send(map[string]any{"auto": map[string]any{"edits": jsEdits, "everyMs": jsEvery.Milliseconds()}})
	tick := time.NewTicker(goEvery)
	defer tick.Stop()
	for left := goEdits; left > 0; {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.next()
			}
			s.handle(l)
		case <-tick.C:
			s.g.edit()
			left--
			s.sendDue()
		case <-s.ctx.Done():
			s.fatalf("timed out in the concurrent phase")
		}
	}
}

// crossing runs rounds in which both sides edit before seeing the other's
// message: each sends its message while the other's is in flight.
func (s *session) crossing(rounds, perRound int) {
	s.t.Helper()
	for r := 0; r < rounds; r++ {
		s.send(map[string]any{"edit": perRound})
		for k := 0; k < perRound; k++ {
			s.g.edit()
		}
		s.sendDue()
		s.pump(time.Duration(s.g.rng.IntN(4)) * time.Millisecond)
	}
}

// reconnect simulates a new connection: messages in flight are lost, and
// each side's state is either its saved form (encode/decode) or new.
func (s *session) reconnect(goMode, jsMode string) {
	s.t.Helper()
	s.epoch++
	switch goMode {
	case "saved":
		st, err := syncengine.DecodeState(s.g.st.Encode())
		if err != nil {
			s.fatalf("DecodeState: %v", err)
		}
		s.g.st = st
	case "fresh":
		s.g.st = syncengine.NewState()
	default:
		s.fatalf("bad reconnect mode %q", goMode)
	}
	s.send(map[string]any{"reconnect": jsMode, "epoch": s.epoch})
	s.sendDue()
}

// finish settles, stops the Node peer and checks that both sides converged:
// same heads (Node, engine, automerge-go, and the engine's changes loaded
// anew), same content, every change of both sides present.
func (s *session) finish() *jsLine {
	s.t.Helper()
	start := time.Now()
	rounds := s.settle()
	s.t.Logf("settled in %d rounds (%s)", rounds, time.Since(start).Round(time.Millisecond))
	s.send(map[string]bool{"done": true})
	for s.result == nil {
		l := s.next()
		if l.Sync != nil {
			s.t.Errorf("node sent a sync message after settling: %.300s", l.raw)
		}
		s.handle(l)
	}
	select {
	case <-s.exited:
		if s.err != nil {
			s.fatalf("node exited with %v after its result", s.err)
		}
	case <-time.After(10 * time.Second):
		s.fatalf("node did not exit after its result")
	}
	res := s.result
	t, g := s.t, s.g
	t.Logf("node stats: %s", res.Stats)

	engHeads := hexHeads(g.eng.Heads())
	amHeads := amHexHeads(g.am.Heads())
	jsHeads := slices.Sorted(slices.Values(res.Heads))
	if !slices.Equal(jsHeads, engHeads) || !slices.Equal(amHeads, engHeads) {
		t.Fatalf("heads differ:\n node         %v\n engine       %v\n automerge-go %v", jsHeads, engHeads, amHeads)
	}
	if len(engHeads) == 0 {
		t.Fatal("empty document")
	}
	if q := g.eng.Queued(); q != 0 {
		t.Errorf("engine still has %d queued changes", q)
	}
	if want := g.made + res.Made; g.eng.Len() != want || res.Changes != want {
		t.Errorf("engine has %d changes, node %d; want %d (go made %d, node %d)", g.eng.Len(), res.Changes, want, g.made, res.Made)
	}

	var jsDoc any
	if err := json.Unmarshal(res.Doc, &jsDoc); err != nil {
		t.Fatalf("node doc: %v", err)
	}
	goDoc := amContent(t, g.am)
	if !reflect.DeepEqual(jsDoc, goDoc) {
		t.Fatalf("content differs:\n node         %s\n automerge-go %s", res.Doc, mustJSON(goDoc))
	}

	// The engine's changes alone make the same document.
	var all []byte
	g.eng.All(func(raw []byte) bool { all = append(all, raw...); return true })
	loaded, err := automerge.Load(all)
	if err != nil {
		t.Fatalf("automerge.Load of the engine's %d changes: %v", g.eng.Len(), err)
	}
	if lh := amHexHeads(loaded.Heads()); !slices.Equal(lh, engHeads) {
		t.Fatalf("the engine's changes load with heads %v, want %v", lh, engHeads)
	}
	if lc := amContent(t, loaded); !reflect.DeepEqual(lc, jsDoc) {
		t.Fatalf("the engine's changes load as\n %s\nnode has\n %s", mustJSON(lc), res.Doc)
	}
	return res
}

func hexHeads(hs []syncengine.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h[:])
	}
	slices.Sort(out)
	return out
}

func amHexHeads(hs []automerge.ChangeHash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	slices.Sort(out)
	return out
}

// amContent is the document as JSON values (as Node's JSON of toJS).
func amContent(t *testing.T, d *automerge.Doc) any {
	t.Helper()
	b, err := json.Marshal(d.Root().Interface())
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func seedFor(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano() % 1_000_000)
	t.Logf("seed %d", seed)
	return seed
}

// TestJSConcurrentEdits: Node creates the document; both sides edit in
// crossing rounds and then on timers, messages in flight both ways; they
// converge.
func TestJSConcurrentEdits(t *testing.T) {
	seed := seedFor(t)
	g := newGoPeer(t, seed)
	s := startNodePeer(t, g, "--populate", "1", "--seed", fmt.Sprint(seed))
	s.settle()
	if _, ok := g.structure(); !ok {
		t.Fatal("the Go peer did not get the structure Node created")
	}
	s.crossing(15, 2)
	s.concurrent(40, 2*time.Millisecond, 40, 2*time.Millisecond)
	res := s.finish()
	if g.made != 70 || res.Made != 71 {
		t.Fatalf("go made %d, node %d", g.made, res.Made)
	}
}

// TestJSInitialSyncFromNode: Node has a few hundred changes, Go nothing.
func TestJSInitialSyncFromNode(t *testing.T) {
	seed := seedFor(t)
	g := newGoPeer(t, seed)
	s := startNodePeer(t, g, "--populate", "300", "--seed", fmt.Sprint(seed))
	s.finish()
	if g.made != 0 || g.eng.Len() != 300 {
		t.Fatalf("go made %d, engine has %d", g.made, g.eng.Len())
	}
}

// TestJSInitialSyncFromGo: Go has a few hundred changes, Node nothing.
func TestJSInitialSyncFromGo(t *testing.T) {
	seed := seedFor(t)
	g := newGoPeer(t, seed)
	g.creator = true
	for i := 0; i < 300; i++ {
		g.edit()
	}
	s := startNodePeer(t, g, "--seed", fmt.Sprint(seed))
	res := s.finish()
	if res.Made != 0 || res.Changes != 300 {
		t.Fatalf("node made %d, has %d", res.Made, res.Changes)
	}
}

// TestJSDivergentHistories: from a shared document, both sides make a few
// hundred changes apart, then sync: the Bloom filters of each side's have
// decide what goes, over several round trips.
func TestJSDivergentHistories(t *testing.T) {
	seed := seedFor(t)
	g := newGoPeer(t, seed)
	s := startNodePeer(t, g, "--populate", "20", "--seed", fmt.Sprint(seed))
	s.settle()
	// Apart: a new connection afterwards, each side with its saved state.
	s.epoch++
	s.send(map[string]any{"edit": 300})
	for i := 0; i < 300; i++ {
		g.edit()
	}
	s.reconnect("saved", "saved")
	s.finish()
	if g.eng.Len() != 620 {
		t.Fatalf("engine has %d changes, want 620", g.eng.Len())
	}
}

// TestJSReconnect: concurrent edits across reconnections, once with saved
// sync states (encodeSyncState/decodeSyncState on Node, Encode/DecodeState
// here), once with new ones, once with Node's saved and Go's new; messages
// in flight at each reconnection are lost.
func TestJSReconnect(t *testing.T) {
	seed := seedFor(t)
	g := newGoPeer(t, seed)
	s := startNodePeer(t, g, "--populate", "1", "--seed", fmt.Sprint(seed))
	s.settle()
	for _, m := range [][2]string{{"saved", "saved"}, {"fresh", "fresh"}, {"fresh", "saved"}, {"saved", "fresh"}} {
		s.crossing(5, 2)
		s.send(map[string]any{"auto": map[string]any{"edits": 10, "everyMs": 1}})
		for i := 0; i < 10; i++ {
			g.edit()
		}
		s.sendDue()
		s.pump(3 * time.Millisecond)
		s.reconnect(m[0], m[1])
		s.pump(5 * time.Millisecond)
	}
	s.concurrent(20, time.Millisecond, 20, time.Millisecond)
	s.finish()
}

// TestJSCutMessages: the engine bounds what one message carries
// (MaxSendBytes): a long history reaches @automerge/automerge in many
// messages, one change each at the extreme, as Node answers; divergent
// histories converge the same way, across reconnects.
func TestJSCutMessages(t *testing.T) {
	for _, max := range []int{1, 2 << 10} {
		t.Run(fmt.Sprintf("initial/%d", max), func(t *testing.T) {
			seed := seedFor(t)
			g := newGoPeerOpts(t, seed, syncengine.Options{MaxSendBytes: max})
			g.creator = true
			for i := 0; i < 150; i++ {
				g.edit()
			}
			s := startNodePeer(t, g, "--seed", fmt.Sprint(seed))
			res := s.finish()
			// One change a message, or about 2 KiB of small changes.
			if want := map[int]int{1: 150, 2 << 10: 5}[max]; res.Changes != 150 || s.cutOut < want {
				t.Fatalf("node has %d changes, sent in %d messages", res.Changes, s.cutOut)
			}
			t.Logf("150 changes in %d messages", s.cutOut)
		})
		t.Run(fmt.Sprintf("divergent/%d", max), func(t *testing.T) {
			seed := seedFor(t)
			g := newGoPeerOpts(t, seed, syncengine.Options{MaxSendBytes: max})
			s := startNodePeer(t, g, "--populate", "20", "--seed", fmt.Sprint(seed))
			s.settle()
			s.epoch++
			s.send(map[string]any{"edit": 100})
			for i := 0; i < 100; i++ {
				g.edit()
			}
			s.reconnect("saved", "saved")
			s.crossing(5, 3)
			s.reconnect("fresh", "fresh")
			s.finish()
			if g.eng.Len() != 20+100+100+15+15 {
				t.Fatalf("engine has %d changes", g.eng.Len())
			}
		})
	}
}
