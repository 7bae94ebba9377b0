package content

import (
	"strings"
	"testing"
	"time"

	"github.com/plaithub/plait/pkg/jsonpatch"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// FuzzEdit applies arbitrary patches to a document with every kind of
// value: a patch is applied or refused with an error, never a panic or
// an abort of the Rust core, and every change it makes passes the sync
// engine's checks (what the hub applies to it next) and loads.
func FuzzEdit(f *testing.F) {
	for _, s := range []string{
		`[{"op":"splice","path":"/title","pos":2,"del":1,"value":"é😀"}]`,
		`[{"op":"add","path":"/items/0","value":{"a":[1,{"b":null}]}},{"op":"move","from":"/items/1","path":"/m/x"}]`,
		`[{"op":"increment","path":"/count","value":-9223372036854775808}]`,
		`[{"op":"copy","from":"/m","path":"/m/y"},{"op":"remove","path":"/items/1"}]`,
		`[{"op":"replace","path":"/n","value":1e308},{"op":"test","path":"/n","value":1e308}]`,
		`[{"op":"add","path":"/items/-","value":18446744073709551615,"datatype":"counter"}]`,
		`[{"op":"add","path":"/~1~0","value":""},{"op":"add","path":"/","value":[]}]`,
	} {
		f.Add([]byte(s))
	}
	base := [][]byte(nil)
	ops, err := jsonpatch.Parse([]byte(`[{"op":"add","path":"/title","value":"hello"},{"op":"add","path":"/items","value":["a","b",2]},
		{"op":"add","path":"/count","value":1,"datatype":"counter"},{"op":"add","path":"/m","value":{"k":true}},{"op":"add","path":"/n","value":0.5}]`), jsonpatch.Limits{})
	if err != nil {
		f.Fatal(err)
	}
	chunk, _, err := Edit(nil, ops, "init", time.UnixMilli(1))
	if err != nil {
		f.Fatal(err)
	}
	base = append(base, chunk)
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, err := jsonpatch.Parse(data, jsonpatch.Limits{MaxOps: 20, MaxDepth: 8})
		if err != nil {
			return
		}
		chunk, _, err := Edit(base, ops, "fuzz", time.UnixMilli(2))
		if err != nil || chunk == nil {
			return
		}
		eng := syncengine.New(syncengine.Options{})
		if _, err := eng.AddChanges(nil, append(base[:1:1], chunk)...); err != nil || eng.Queued() > 0 {
			t.Fatalf("the engine refuses the change: %v (queued %d)", err, eng.Queued())
		}
		doc, err := Load(append(base[:1:1], chunk))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ToJSON(doc, 0); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseHeads: any ?heads= value is parsed or refused, never a panic;
// what parses is at most 64 heads, each of which reads back from its hex
// form.
func FuzzParseHeads(f *testing.F) {
	for _, s := range []string{
		strings.Repeat("ab", 32), strings.Repeat("ab", 32) + "," + strings.Repeat("0", 64),
		protocol.EncodeHead([32]byte{1, 2, 3}), "", ",", "zz", strings.Repeat("1", 70),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hs, err := ParseHeads(s)
		if err != nil {
			return
		}
		if len(hs) == 0 || len(hs) > 64 {
			t.Fatalf("%d heads", len(hs))
		}
		for _, h := range hs {
			back, err := ParseHeads(h.String())
			if err != nil || len(back) != 1 || back[0] != h {
				t.Fatalf("%s does not read back: %v %v", h, back, err)
			}
		}
	})
}
