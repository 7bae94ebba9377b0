package protocol

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"testing"
)

// FuzzDecode checks that Decode never panics, fails only with the package's
// sentinel errors, and that whatever it accepts survives Encode and Decode
// unchanged, byte for byte on the second Encode.
func FuzzDecode(f *testing.F) {
	for _, base := range goldenNames(f) {
		for _, ext := range []string{".cbor", ".go.cbor"} {
			b, err := os.ReadFile(base + ext)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Decode(frame)
		if err != nil {
			if m != nil || !(errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnknownType)) {
				t.Fatalf("Decode = %v, %v", m, err)
			}
			return
		}
		enc, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode of a decoded message: %v\n%+v", err, m)
		}
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(m)): %v\n%x", err, enc)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message\n got %+v\nwant %+v", m2, m)
		}
		if enc2, err := Encode(m2); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode is not stable: %x vs %x, %v", enc, enc2, err)
		}
	})
}

func benchSync(b *testing.B) *Message {
	data := make([]byte, 16<<10) // a mid-sized sync message
	for i := range data {
		data[i] = byte(i * 31)
	}
	return &Message{Type: TypeSync, SenderID: "browser-tab-7f3a", TargetID: "plait-node-1", DocumentID: testDoc, Data: data}
}

func BenchmarkDecodeSync(b *testing.B) {
	frame, err := Encode(benchSync(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeSync(b *testing.B) {
	m := benchSync(b)
	b.SetBytes(int64(len(m.Data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(m); err != nil {
			b.Fatal(err)
		}
	}
}
