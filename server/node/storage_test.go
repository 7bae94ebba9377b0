package node

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

// The storage tools find the storage where the node does: same defaults,
// same environment variables, same flags.
func TestStorageConfigMatchesNodeConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{nil, nil},
		{[]string{"--data-dir", "/srv/plait"}, nil},
		{nil, map[string]string{"PLAIT_DATA_DIR": "/env/dir", "PLAIT_ENCRYPTION_KEY_FILE": "/keys/at-rest"}},
		{[]string{"--redis-url", "rediss://h:6380/2", "--redis-prefix", "p2", "--redis-ca-file", "/ca.pem"}, nil},
		{[]string{"--redis-cluster"}, map[string]string{"PLAIT_REDIS_URL": "redis://a:1?addr=b:2"}},
	} {
		node, err := ParseConfig(tc.args, env(tc.env), io.Discard)
		if err != nil {
			t.Fatalf("ParseConfig(%q, %v): %v", tc.args, tc.env, err)
		}
		st, rest, err := ParseStorageConfig("plait export", "plait export FILE", tc.args, env(tc.env), io.Discard)
		if err != nil {
			t.Fatalf("ParseStorageConfig(%q, %v): %v", tc.args, tc.env, err)
		}
		if len(rest) != 0 {
			t.Errorf("rest = %q", rest)
		}
		if st.DataDir != node.DataDir || st.RedisURL != node.RedisURL || st.RedisCluster != node.RedisCluster ||
			st.RedisPrefix != node.RedisPrefix || st.RedisCAFile != node.RedisCAFile || st.EncryptionKeys != node.EncryptionKeys {
			t.Errorf("args %q env %v: storage config %+v differs from the node's %+v", tc.args, tc.env, st, node)
		}
	}
}

func TestStorageConfigArgsAndRefusals(t *testing.T) {
	_, rest, err := ParseStorageConfig("plait import", "plait import FILE", []string{"--data-dir", "d", "backup.tar.gz"}, env(nil), io.Discard)
	if err != nil || len(rest) != 1 || rest[0] != "backup.tar.gz" {
		t.Fatalf("rest %q, err %v", rest, err)
	}
	var out strings.Builder
	if _, _, err := ParseStorageConfig("plait import", "plait import FILE", []string{"-h"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if !strings.Contains(out.String(), "plait import FILE") || !strings.Contains(out.String(), "-encryption-key-file") {
		t.Errorf("usage: %s", out.String())
	}
	for _, args := range [][]string{
		{"--redis-url", "http://x"},
		{"--redis-cluster"},
		{"--redis-url", "redis://x", "--redis-prefix", "a{b}"},
		{"--no-such-flag"},
	} {
		if _, _, err := ParseStorageConfig("plait export", "plait export FILE", args, env(nil), io.Discard); err == nil {
			t.Errorf("%q: accepted", args)
		}
	}
	if _, _, err := ParseStorageConfig("plait export", "u", nil, env(map[string]string{"PLAIT_REDIS_CLUSTER": "maybe"}), io.Discard); err == nil || !strings.Contains(err.Error(), "PLAIT_REDIS_CLUSTER") {
		t.Errorf("bad env value: %v", err)
	}
}
