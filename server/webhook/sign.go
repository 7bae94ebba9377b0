package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	HeaderID        = "Plait-Webhook-Id"        // the idempotency key: the same on every retry
	HeaderTimestamp = "Plait-Webhook-Timestamp" // unix seconds when this attempt was signed
	HeaderSignature = "Plait-Webhook-Signature" // "v1=" + hex HMAC-SHA256(secret, timestamp + "." + body)
	HeaderEvent     = "Plait-Webhook-Event"     // the event type
)

// DefaultReplayWindow is how far from now a receiver should accept a
// delivery's timestamp (Verify's window).
const DefaultReplayWindow = 5 * time.Minute

// Errors of Verify.
var (
	// ErrBadSignature: the signature header is missing, malformed, or
	// does not match the body with any of the secrets.
	ErrBadSignature = errors.New("webhook signature does not match")
	// ErrStale: the timestamp is outside the replay window.
	ErrStale = errors.New("webhook timestamp outside the replay window")
)

// Sign returns the signature header value of body signed at ts.
func Sign(secret []byte, ts time.Time, body []byte) string {
	return "v1=" + hex.EncodeToString(mac(secret, strconv.FormatInt(ts.Unix(), 10), body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte("."))
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a delivery as a receiver gets it: the timestamp header
// within window of now (DefaultReplayWindow if 0) and a "v1=" signature
// (one of several, comma-separated, as during a secret's rotation) that
// matches body under secret. Together with remembering the idempotency
// keys seen within the window, it stops replays.
func Verify(secret []byte, timestamp, signature string, body []byte, now time.Time, window time.Duration) error {
	if window <= 0 {
		window = DefaultReplayWindow
	}
	if len(timestamp) == 0 || len(timestamp) > 20 {
		return fmt.Errorf("%w: bad timestamp", ErrStale)
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || sec <= 0 {
		return fmt.Errorf("%w: bad timestamp", ErrStale)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > window || d < -window {
		return ErrStale
	}
	want := mac(secret, timestamp, body)
	for i, part := range strings.Split(signature, ",") {
		if i >= 8 {
			break
		}
		v, ok := strings.CutPrefix(strings.TrimSpace(part), "v1=")
		if !ok || len(v) != 2*sha256.Size {
			continue
		}
		got, err := hex.DecodeString(v)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrBadSignature
}
