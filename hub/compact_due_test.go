package hub

import "testing"

// TestCompactionDue: a compaction is due once the changes stored since the
// last snapshot reach MinCompactBytes and half the document, so a growing
// document is rebuilt a number of times logarithmic in its size, not
// linear: its total compaction work per stored change stays constant.
func TestCompactionDue(t *testing.T) {
	const min = 64 << 10
	for _, tc := range []struct {
		inc, doc int
		due      bool
	}{
		{inc: 10 << 10, doc: 10 << 10, due: false},  // under MinCompactBytes
		{inc: 64 << 10, doc: 128 << 10, due: true},  // half the document
		{inc: 64 << 10, doc: 129 << 10, due: false}, // less than half
		{inc: 1 << 20, doc: 100 << 20, due: false},  // 1% of a long history: not yet
		{inc: 50 << 20, doc: 100 << 20, due: true},  // half of it
	} {
		c := compaction{incBytes: tc.inc}
		if got := c.due(tc.doc, min); got != tc.due {
			t.Errorf("%d stored since the snapshot of a %d-byte document: due %v, want %v", tc.inc, tc.doc, got, tc.due)
		}
	}
	// Growing a document change by change (1 KiB each) to 64 MiB, with a
	// compaction whenever due: how many, and how many bytes they read.
	c, doc, compactions, read := compaction{}, 0, 0, 0
	for doc < 64<<20 {
		doc += 1 << 10
		c.incBytes += 1 << 10
		if c.due(doc, min) {
			compactions++
			read += doc
			c.incBytes = 0
		}
	}
	if compactions > 12 || read > 3*doc {
		t.Fatalf("%d compactions reading %d bytes for a %d-byte document, want O(log n) reading O(n)", compactions, read, doc)
	}
	t.Logf("a document grown to %d MiB: %d compactions, %.1f bytes read per byte stored", doc>>20, compactions, float64(read)/float64(doc))
}
