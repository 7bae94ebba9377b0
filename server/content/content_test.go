package content

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/automerge/automerge-go"

	"github.com/plaithub/plait/pkg/jsonpatch"
)

func changesOf(t *testing.T, doc *automerge.Doc) [][]byte {
	t.Helper()
	chs, err := doc.Changes()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, c := range chs {
		out = append(out, c.Save())
	}
	return out
}

func patch(t *testing.T, s string) []jsonpatch.Op {
	t.Helper()
	ops, err := jsonpatch.Parse([]byte(s), jsonpatch.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

func edit(t *testing.T, changes [][]byte, p string) [][]byte {
	t.Helper()
	chunk, _, err := Edit(changes, patch(t, p), "msg", time.UnixMilli(1_700_000_000_000))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if chunk == nil {
		return changes
	}
	return append(changes, chunk)
}

func jsonOf(t *testing.T, changes [][]byte) string {
	t.Helper()
	doc, err := Load(changes)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ToJSON(doc, 0)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestToJSONTypes(t *testing.T) {
	doc := automerge.New()
	r := doc.RootMap()
	for k, v := range map[string]any{
		"s": "raw", "i": int64(-3), "u": uint64(1 << 63), "f": 1.5, "b": true, "n": nil,
		"bytes": []byte{1, 2, 255}, "ts": time.UnixMilli(1_700_000_000_123).UTC(),
		"c": automerge.NewCounter(5), "t": automerge.NewText("héllo"), "l": []any{int64(1), "x"},
		"m": map[string]any{"k": false},
	} {
		if err := r.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := doc.Commit("init"); err != nil {
		t.Fatal(err)
	}
	got := jsonOf(t, changesOf(t, doc))
	want := `{"b":true,"bytes":"AQL/","c":5,"f":1.5,"i":-3,"l":[1,"x"],"m":{"k":false},"n":null,"s":"raw","t":"héllo","ts":"2023-11-14T22:13:20.123Z","u":9223372036854775808}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	doc2, _ := Load(changesOf(t, doc))
	if _, err := ToJSON(doc2, 20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("20-byte bound: %v", err)
	}
	if _, err := ToJSON(doc2, len(want)+1); err != nil { // the encoder's newline
		t.Errorf("exact bound: %v", err)
	}
}

func TestEditOps(t *testing.T) {
	var chs [][]byte
	chs = edit(t, chs, `[{"op":"add","path":"/title","value":"hello"},{"op":"add","path":"/items","value":[]},
		{"op":"add","path":"/count","value":1,"datatype":"counter"},{"op":"add","path":"/meta","value":{"a":{"b":[1,2.5]}}}]`)
	chs = edit(t, chs, `[{"op":"add","path":"/items/-","value":"a"},{"op":"add","path":"/items/-","value":"c"},
		{"op":"add","path":"/items/1","value":"b"},{"op":"increment","path":"/count","value":41},
		{"op":"splice","path":"/title","pos":5,"del":0,"value":", wörld"}]`)
	if got, want := jsonOf(t, chs), `{"count":42,"items":["a","b","c"],"meta":{"a":{"b":[1,2.5]}},"title":"hello, wörld"}`; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	chs = edit(t, chs, `[{"op":"test","path":"/items/1","value":"b"},{"op":"test","path":"/meta/a/b/1","value":2.50},
		{"op":"move","from":"/items/0","path":"/first"},{"op":"copy","from":"/meta/a","path":"/items/0"},
		{"op":"replace","path":"/title","value":"new"},{"op":"remove","path":"/meta"},
		{"op":"splice","path":"/title","pos":0,"del":1,"value":"N"}]`)
	if got, want := jsonOf(t, chs), `{"count":42,"first":"a","items":[{"b":[1,2.5]},"b","c"],"title":"New"}`; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	n := len(chs)
	if chs = edit(t, chs, `[{"op":"test","path":"/count","value":42}]`); len(chs) != n {
		t.Errorf("a patch of tests made a change")
	}
}

func TestEditErrors(t *testing.T) {
	chs := edit(t, nil, `[{"op":"add","path":"/title","value":"hi"},{"op":"add","path":"/l","value":[1]},{"op":"add","path":"/n","value":3}]`)
	for _, c := range []struct {
		patch    string
		conflict bool
		want     string
	}{
		{`[{"op":"test","path":"/title","value":"ho"}]`, true, `test failed: /title is "hi"`},
		{`[{"op":"test","path":"/nope","value":1}]`, true, "does not exist"},
		{`[{"op":"remove","path":"/nope"}]`, true, "/nope does not exist"},
		{`[{"op":"replace","path":"/nope","value":1}]`, true, "replace needs it"},
		{`[{"op":"add","path":"/a/b","value":1}]`, true, "/a does not exist"},
		{`[{"op":"add","path":"/l/5","value":1}]`, true, "out of range"},
		{`[{"op":"add","path":"/l/x","value":1}]`, true, "not an array index"},
		{`[{"op":"add","path":"/n/x","value":1}]`, true, "not an object or array"},
		{`[{"op":"splice","path":"/n","pos":0,"value":"x"}]`, true, "not a text"},
		{`[{"op":"splice","path":"/title","pos":2,"del":1,"value":"x"}]`, true, "out of range"},
		{`[{"op":"increment","path":"/n","value":1}]`, true, "not a counter"},
		{`[{"op":"add","path":"/x","value":1},{"op":"test","path":"/x","value":2}]`, true, "operation 1: test failed"},
	} {
		_, _, err := Edit(chs, patch(t, c.patch), "", time.Now())
		var pe *PatchError
		if !errors.As(err, &pe) || pe.Conflict != c.conflict || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want a PatchError (conflict %v) containing %q", c.patch, err, c.conflict, c.want)
		}
	}
	if got := jsonOf(t, chs); got != `{"l":[1],"n":3,"title":"hi"}` {
		t.Errorf("failed patches changed the document: %s", got)
	}
}

func TestLoadAtHeads(t *testing.T) {
	chs := edit(t, nil, `[{"op":"add","path":"/v","value":1}]`)
	doc, _ := Load(chs)
	h1 := doc.Heads()
	chs = edit(t, chs, `[{"op":"replace","path":"/v","value":2}]`)
	old, err := Load(chs, h1...)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ToJSON(old, 0)
	if string(b) != `{"v":1}` {
		t.Errorf("at %v: %s", h1, b)
	}
	var bogus automerge.ChangeHash
	bogus[0] = 1
	if _, err := Load(chs, bogus); !errors.Is(err, ErrUnknownHeads) {
		t.Errorf("unknown heads: %v", err)
	}
	saved, err := Save(chs)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := automerge.Load(saved)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = ToJSON(d2, 0)
	var v map[string]any
	if json.Unmarshal(b, &v) != nil || v["v"] != float64(2) {
		t.Errorf("saved: %s", b)
	}
}
