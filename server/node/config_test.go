package node

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDefaultsEnvAndFlags(t *testing.T) {
	c, err := ParseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:8080" || c.DataDir != "./data" || c.MaxMessageBytes != 32<<20 || c.IdleDocTimeout != 30*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = ParseConfig([]string{"--idle-doc-timeout", "5s"}, env(map[string]string{"PLAIT_DATA_DIR": "/tmp/x", "PLAIT_IDLE_DOC_TIMEOUT": "1m"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/tmp/x" || c.IdleDocTimeout != 5*time.Second {
		t.Fatalf("env then flag precedence: %+v", c)
	}
}

func TestConfigRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"anonymous beyond loopback": {[]string{"--addr", "0.0.0.0:8080"}, nil, "--allow-anonymous"},
		"wildcard origin":           {[]string{"--allowed-origins", "*"}, nil, "list the origins"},
		"bad env value":             {nil, map[string]string{"PLAIT_MAX_MESSAGE_BYTES": "lots"}, "PLAIT_MAX_MESSAGE_BYTES"},
		"tiny message limit":        {[]string{"--max-message-bytes", "10"}, nil, "too small"},
		"stray argument":            {[]string{"serve"}, nil, "unexpected arguments"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig(tc.args, env(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := ParseConfig([]string{"--addr", "0.0.0.0:8080", "--allow-anonymous"}, env(nil), io.Discard); err != nil {
		t.Fatalf("explicit --allow-anonymous refused: %v", err)
	}
	var out strings.Builder
	if _, err := ParseConfig([]string{"--help"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "PLAIT_") {
		t.Fatalf("--help: %v %q", err, out.String())
	}
}
