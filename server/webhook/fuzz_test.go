package webhook

import (
	"testing"
	"time"
)

// FuzzVerify: a receiver's Verify reads headers anyone can send: never a
// panic, and only the real signature verifies.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"k","type":"document.changed"}`)
	good := Sign([]byte(testSecret), now, body)
	f.Add("1800000000", good, body)
	f.Add("1800000000", "v1=zz,"+good, body)
	f.Add("-1", "v1=", []byte{})
	f.Add("99999999999999999999999", "v1=00", []byte("x"))
	f.Fuzz(func(t *testing.T, ts, sig string, b []byte) {
		err := Verify([]byte(testSecret), ts, sig, b, now, 0)
		if err == nil && (string(b) != string(body) || ts != "1800000000") {
			t.Fatalf("accepted a forged delivery: %q %q %q", ts, sig, b)
		}
	})
}

// FuzzDecodeDelivery: queue entries come from Redis: never a panic, and
// what decodes has its required fields.
func FuzzDecodeDelivery(f *testing.F) {
	f.Add(`{"e":{"id":"k","type":"document.created","documentId":"d","at":"2026-12-04T10:00:00Z"},"u":"http://127.0.0.1:1/h"}`)
	f.Add(`{"e":{}}`)
	f.Add(`{"e":{"id":"k","type":"t"},"u":"x","extra":1}`)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := decodeDelivery(s)
		if err == nil && (d.Event.ID == "" || d.Event.Type == "" || d.URL == "") {
			t.Fatalf("%q decoded without its required fields: %+v", s, d)
		}
	})
}
