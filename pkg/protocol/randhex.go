package protocol

import (
	"crypto/rand"
	"encoding/hex"
)

// RandomHex returns n random bytes as 2n hex digits: the random part of
// peer ids ("plait-…", "go-…"), client session ids and request ids.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
