package redisbroker

import (
	"strconv"
	"testing"

	"github.com/plaithub/plait/hub"
)

func encodePayload(p hub.Publication) string {
	origin := p.Origin
	if p.Kind == hub.PubChanges {
		origin = joinOrigin(p.Origin, p.Trace)
	}
	off := strconv.FormatUint(p.Pos.Offset, 10)
	return string(p.Kind) + off + ":" + p.Pos.Epoch + ":" + p.Pos.Tag + ":" + p.Prev + ":" + strconv.Itoa(len(origin)) + ":" + origin + string(p.Data)
}

func TestDecodePayload(t *testing.T) {
	for _, p := range []hub.Publication{
		{Kind: hub.PubChanges, Origin: "plait-1", Data: []byte("a:b\x00c"), Pos: hub.StreamPosition{Epoch: "e1", Offset: 7, Tag: "t7"}, Prev: "t6"},
		{Kind: hub.PubChanges, Origin: "o", Data: []byte("x"), Pos: hub.StreamPosition{Epoch: "e1", Offset: 1, Tag: "t1"}},
		{Kind: hub.PubEphemeral, Origin: "o:r:i", Data: nil},
		{Kind: hub.PubDeleted, Origin: "plait-1"},
		{Kind: hub.PubChanges, Origin: "plait-2", Data: []byte("d"), Pos: hub.StreamPosition{Epoch: "e", Offset: 2, Tag: "t"}, Trace: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	} {
		got, err := decodePayload(encodePayload(p))
		if err != nil || got.Kind != p.Kind || got.Origin != p.Origin || string(got.Data) != string(p.Data) || got.Pos != p.Pos || got.Trace != p.Trace {
			t.Fatalf("round trip of %+v: %+v, %v", p, got, err)
		}
	}
	// A malformed traceparent is dropped, the publication kept; an older
	// node's decoder reads the field as a foreign origin.
	got, err := decodePayload("c3:e:t3:t2:16:plait-3 00-zz-01d")
	if err != nil || got.Origin != "plait-3" || got.Trace != "" || string(got.Data) != "d" {
		t.Fatalf("malformed trace: %+v %v", got, err)
	}
	if o := joinOrigin("plait-4", "not a traceparent"); o != "plait-4" {
		t.Fatalf("joinOrigin kept an invalid trace: %q", o)
	}
	for _, bad := range []string{"", "x1:e:t:p:0:", "c", "c1", "c1:e", "c1:e:t", "c1:e:t:p", "c1:e:t:p:9:ab", "c0::t::0:", "c1:e:::0:", "e1:e:t::0:", "e0::::x:", "e0:::p:0:", "c1:e:t:p:-1:", "cx:e:t:p:0:", "d0::::1:ox", "d0:::p:1:o", "d1:e:t::1:o"} {
		if _, err := decodePayload(bad); err == nil {
			t.Errorf("decodePayload(%q) accepted", bad)
		}
	}
}

// FuzzDecodePayload: pub/sub payloads come from Redis, which any node (or
// anyone with access to Redis) writes: never a panic, and what decodes
// encodes back to the same bytes.
func FuzzDecodePayload(f *testing.F) {
	f.Add("c12:abcd:t12:t11:7:plait-1\x85\x6f\x4a")
	f.Add("e0::::3:abcdata")
	f.Add("d0::::7:plait-1")
	f.Add("c2:e:t:s:63:plait-2 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01data")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := decodePayload(s)
		if err != nil {
			return
		}
		if enc := encodePayload(p); enc != s {
			// Offsets with leading zeros or a '+' decode too; compare decoded.
			q, err := decodePayload(enc)
			if err != nil || q.Kind != p.Kind || q.Origin != p.Origin || string(q.Data) != string(p.Data) || q.Pos != p.Pos || q.Trace != p.Trace {
				t.Fatalf("%q decodes to %+v which does not round-trip", s, p)
			}
		}
	})
}
