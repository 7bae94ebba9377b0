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

func TestConfigAuthRefusals(t *testing.T) {
	oidc := []string{"--oidc-issuer", "https://idp.example.com", "--oidc-client-id", "plait"}
	withSecret := map[string]string{"PLAIT_OIDC_CLIENT_SECRET": "s3cret"}
	full := append(append([]string{}, oidc...), "--auth-key-file", "/k", "--public-url", "https://plait.example.com")
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"provider without secret":     {full, nil, "oidc-client-secret is required"},
		"provider without key file":   {append(append([]string{}, oidc...), "--public-url", "https://p.example.com"), withSecret, "auth-key-file is required"},
		"provider without public url": {append(append([]string{}, oidc...), "--auth-key-file", "/k"), withSecret, "public-url"},
		"public url in clear":         {append(append([]string{}, oidc...), "--auth-key-file", "/k", "--public-url", "http://plait.example.com"), withSecret, "must use https"},
		"provider and anonymous":      {append(append([]string{}, full...), "--allow-anonymous"), withSecret, "allow-anonymous cannot"},
		"github id without secret":    {[]string{"--github-client-id", "x", "--auth-key-file", "/k", "--public-url", "https://p.example.com"}, nil, "github-client-secret is required"},
		"issuer without client id":    {[]string{"--oidc-issuer", "https://idp.example.com"}, nil, "go together"},
		"tls cert without key":        {[]string{"--tls-cert", "/c.pem"}, nil, "tls-cert and tls-key"},
		"short access tokens":         {append(append([]string{}, full...), "--access-token-ttl", "10s"), withSecret, "access-token-ttl"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig(tc.args, env(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	c, err := ParseConfig(append(append([]string{}, full...), "--addr", "0.0.0.0:8080"), env(withSecret), io.Discard)
	if err != nil || !c.AuthEnabled() {
		t.Fatalf("a provider configured in full may listen anywhere: %v", err)
	}
}
