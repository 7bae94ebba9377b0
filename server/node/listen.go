package node

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
)

// listen opens the node's listener: TLS (1.3 minimum) when the node has a
// certificate, plain TCP otherwise.
func listen(cfg Config) (net.Listener, error) {
	var tc *tls.Config
	if cfg.TLSCert != "" {
		var err error
		if tc, err = tlsConfig(cfg); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen: %w", err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	return ln, nil
}

// tlsConfig loads the node's certificate. TLS 1.3 is the minimum: every
// browser and Go release of the last years speaks it, and it drops the
// weak cipher suites and renegotiation of older versions.
func tlsConfig(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("failed to load tls-cert and tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}, nil
}

// openAuditLog opens where the audit log goes: "-" is standard error,
// anything else a file opened for appending (0600: it names users and
// addresses).
func openAuditLog(dest string) (io.Writer, func() error, error) {
	if dest == "-" {
		return os.Stderr, func() error { return nil }, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to open audit-log: %w", err)
	}
	return f, f.Close, nil
}
