package cryptstore

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
)

// ParseKeyFile reads keys, one per line as "<id>:<base64 of 32 bytes>";
// blank lines and lines starting with '#' are ignored. The first key seals
// new data; the others only open old data (rotation). Make a key with
//
//	echo "k2026:$(head -c 32 /dev/urandom | base64)"
func ParseKeyFile(data []byte) ([]Key, error) {
	var keys []Key
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, b64, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("key file line %d: want <id>:<base64 key>", n)
		}
		secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			return nil, fmt.Errorf("key file line %d (key %q): not base64: %w", n, id, err)
		}
		if len(secret) != 32 {
			return nil, fmt.Errorf("key file line %d (key %q): %d bytes, want 32 (AES-256)", n, id, len(secret))
		}
		keys = append(keys, Key{ID: strings.TrimSpace(id), Secret: secret})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the key file: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the key file holds no key")
	}
	return keys, nil
}
