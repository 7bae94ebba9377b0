package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestDocumentID(t *testing.T) {
	want := make([]byte, 16)
	for i := range want {
		want[i] = byte(i * 17)
	}
	// testDoc was encoded by the JS bs58check package (see gen.mjs).
	if got := testDoc.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("Bytes = %x, want %x", got, want)
	}
	for _, s := range []string{string(testDoc), testDoc.URL(), testDoc.URL() + "#" + testHead + "|" + testHead} {
		if d, err := ParseDocumentID(s); err != nil || d != testDoc {
			t.Errorf("ParseDocumentID(%q) = %q, %v", s, d, err)
		}
	}
	for _, s := range []string{
		"", "automerge:", "x#y", string(testDoc) + "#" + testHead, // a suffix only counts in a URL
		string(testDoc[:len(testDoc)-1]) + "v", "0" + string(testDoc[1:]),
		"1" + string(testDoc), // a leading zero byte: 17 bytes
		testHead,              // valid bs58check, 32 bytes
		strings.Repeat("z", 65),
	} {
		if d, err := ParseDocumentID(s); !errors.Is(err, ErrInvalidDocumentID) {
			t.Errorf("ParseDocumentID(%q) = %q, %v; want ErrInvalidDocumentID", s, d, err)
		}
	}
	if DocumentID("nope").Bytes() != nil {
		t.Error("Bytes of an invalid id is not nil")
	}
	seen := map[DocumentID]bool{}
	for range 100 {
		d := NewDocumentID()
		if p, err := ParseDocumentID(d.URL()); err != nil || p != d || len(d.Bytes()) != 16 || seen[d] {
			t.Fatalf("NewDocumentID %q: parsed %q, %v", d, p, err)
		}
		seen[d] = true
	}
}

func TestHead(t *testing.T) {
	h, err := DecodeHead(testHead) // from encodeHeads of a real Automerge document
	if err != nil {
		t.Fatal(err)
	}
	if EncodeHead(h) != testHead {
		t.Errorf("EncodeHead(DecodeHead(x)) = %q", EncodeHead(h))
	}
	var zero [32]byte
	if s := EncodeHead(zero); !strings.HasPrefix(s, strings.Repeat("1", 32)) {
		t.Errorf("EncodeHead(zero) = %q, want 32 leading 1s", s)
	} else if got, err := DecodeHead(s); err != nil || got != zero {
		t.Errorf("DecodeHead(%q) = %x, %v", s, got, err)
	}
	for _, s := range []string{"", string(testDoc), strings.Repeat("ab", 32), testHead[:len(testHead)-1]} {
		if _, err := DecodeHead(s); !errors.Is(err, ErrInvalidHead) {
			t.Errorf("DecodeHead(%q) = %v, want ErrInvalidHead", s, err)
		}
	}
}
