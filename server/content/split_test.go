package content

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestSplit reads a document chunk's changes in the loader process: the
// same changes as the document's, in an order that loads; a damaged or
// foreign chunk is a clear error, never a crash of this process.
func TestSplit(t *testing.T) {
	chs := edit(t, nil, `[{"op":"add","path":"/title","value":"hello"},{"op":"add","path":"/n","value":1,"datatype":"counter"}]`)
	chs = edit(t, chs, `[{"op":"splice","path":"/title","pos":5,"value":"!"},{"op":"increment","path":"/n","value":2}]`)
	saved, err := Save(chs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := Split(ctx, saved, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(chs) {
		t.Fatalf("%d changes, want %d", len(got), len(chs))
	}
	for i := range chs {
		if !bytes.Equal(got[i], chs[i]) {
			t.Errorf("change %d differs", i)
		}
	}
	if j := jsonOf(t, got); j != `{"n":3,"title":"hello!"}` {
		t.Errorf("split changes load as %s", j)
	}
	if _, err := Split(ctx, saved, 10); err == nil {
		t.Errorf("a 10-byte bound on the changes passed")
	}
	bad := bytes.Clone(saved)
	bad[len(bad)/2] ^= 0xff
	for name, in := range map[string][]byte{"damaged": bad, "truncated": saved[:len(saved)-3], "empty": {}, "garbage": []byte("not automerge at all")} {
		if _, err := Split(ctx, in, 1<<20); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
