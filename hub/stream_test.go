package hub

import "testing"

// TestClassifyPublication: what a document's stream follower does with
// each publication, given the last one it applied (offset 5, tag t5, in
// epoch e1) and the tags it applied recently.
func TestClassifyPublication(t *testing.T) {
	at := func(offset uint64, tag, prev string) Publication {
		return Publication{Kind: PubChanges, Pos: StreamPosition{Epoch: "e1", Offset: offset, Tag: tag}, Prev: prev}
	}
	for _, tc := range []struct {
		name   string
		p      Publication
		action pubAction
		reason string
	}{
		{"the next one", at(6, "t6", "t5"), pubApply, ""},
		{"the next offset after another publication: a failover re-used offsets", at(6, "t6", "tX"), pubCatchUp, "rollback"},
		{"one missed", at(7, "t7", "t6"), pubCatchUp, "gap"},
		{"many missed", at(500, "t500", "t499"), pubCatchUp, "gap"},
		{"the last one again (our own, echoed)", at(5, "t5", "t4"), pubIgnore, ""},
		{"an earlier one again", at(4, "t4", "t3"), pubIgnore, ""},
		{"an earlier offset with another tag: offsets handed out twice", at(4, "tY", "t3"), pubCatchUp, "rollback"},
		{"an offset older than the tags kept", at(1, "t1", ""), pubIgnore, ""},
		{"another epoch (the stream was reset)", Publication{Kind: PubChanges, Pos: StreamPosition{Epoch: "e2", Offset: 1, Tag: "u1"}}, pubCatchUp, "epoch"},
		{"another epoch, same offsets", Publication{Kind: PubChanges, Pos: StreamPosition{Epoch: "e2", Offset: 6, Tag: "t6"}, Prev: "t5"}, pubCatchUp, "epoch"},
	} {
		f := newFollower()
		for o, tag := range map[uint64]string{3: "t3", 4: "t4", 5: "t5"} {
			f.advance(Publication{Pos: StreamPosition{Epoch: "e1", Offset: o, Tag: tag}})
		}
		f.pos = StreamPosition{Epoch: "e1", Offset: 5, Tag: "t5"}
		action, reason := f.classify(tc.p)
		if action != tc.action || reason != tc.reason {
			t.Errorf("%s: (%d, %q), want (%d, %q)", tc.name, action, reason, tc.action, tc.reason)
		}
	}

	// A fresh follower (nothing applied) takes the stream's first
	// publication, and remembers only the last recentTagsKept tags.
	f := newFollower()
	if a, _ := f.classify(Publication{Pos: StreamPosition{Offset: 1, Tag: "a"}}); a != pubApply {
		t.Fatalf("a fresh follower: %d, want apply", a)
	}
	for o := uint64(1); o <= 3*recentTagsKept; o++ {
		f.advance(Publication{Pos: StreamPosition{Offset: o, Tag: "x"}})
	}
	if len(f.recentTags) != recentTagsKept {
		t.Fatalf("%d tags kept, want %d", len(f.recentTags), recentTagsKept)
	}
	f.reset(StreamPosition{Epoch: "e9", Offset: 40})
	if len(f.recentTags) != 0 || f.pos.Offset != 40 {
		t.Fatalf("after reset: %d tags, offset %d", len(f.recentTags), f.pos.Offset)
	}
}
