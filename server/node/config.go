package node

import (
	"errors"
	"flag"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Config is a node's configuration. Every field has a flag and a PLAIT_*
// environment variable (flag name upper-cased, dashes as underscores); a
// flag given on the command line wins over the environment.
type Config struct {
	Addr                 string        // listen address
	DataDir              string        // embedded store directory
	AllowAnonymous       bool          // serve without auth on a non-loopback address
	AllowedOrigins       []string      // extra browser origins allowed to open /ws
	MaxMessageBytes      int64         // largest frame from a client
	MaxQueueBytes        int           // write queue bound per connection
	MessageRate          float64       // messages/s one connection may send (0 = no limit)
	MessageBurst         int           // messages one connection may send at once
	MaxConnsPerIP        int           // concurrent WebSockets per client address (0 = no limit)
	MaxPendingConnsPerIP int           // connections per client address that are not WebSockets (0 = no limit)
	MaxPendingConns      int           // connections on the node that are not WebSockets (0 = automatic, -1 = no limit)
	MaxConns             int           // WebSockets on the node (0 = automatic, -1 = no limit)
	ReadHeaderTimeout    time.Duration // time a client has to send a request's headers
	HTTPRatePerIP        float64       // HTTP requests/s per client address (0 = no limit)
	HTTPBurstPerIP       int           // HTTP requests one address may make at once
	WriteTimeout         time.Duration // per frame write
	PingInterval         time.Duration // keepalive ping period
	PongTimeout          time.Duration // pong wait before a connection counts as dead
	JoinTimeout          time.Duration // time a new connection has to send join
	IdleDocTimeout       time.Duration // unused documents stay in memory this long
	PendingWait          time.Duration // a request for an unknown document waits this long for it

	// Resource bounds (see docs/security.md, "Resource bounds").
	MaxDocBytes         int           // largest document, uncompressed (0 = no limit)
	MaxInflatedBytes    int           // what one sync message's compressed changes may inflate to
	MaxSendBytes        int           // bytes of changes in one sync message the node sends
	MaxDocsPerConn      int           // documents one connection may have open (0 = no limit)
	MaxOpenDocs         int           // documents open on the node (0 = no limit)
	MaxConnBytes        int           // one connection's messages in flight and sync state
	MaxInflightBytes    int           // all connections' messages in flight
	MaxStateBytes       int           // peers' sync state, all connections
	MaxEphemeralBytes   int           // largest ephemeral message
	EphemeralRelayBytes int           // ephemeral bytes relayed per document per second
	MaxCompactBytes     int           // largest document compacted
	ShutdownTimeout     time.Duration // graceful drain on SIGTERM
	LogLevel            slog.Level
	LogFormat           string // text or json
	RedisURL            string // a cluster of nodes: Redis broker and store
	RedisCluster        bool   // RedisURL names a Redis Cluster
	RedisPrefix         string // prefix of every Redis key and channel
	RedisCAFile         string // CA certificates for rediss://
	DebugAddr           string // loopback address of the pprof endpoints ("" = off)
	EncryptionKeys      string // key file: encrypt everything the store writes

	// Login and tokens (auth is on when a provider is configured).
	PublicURL          string // external base URL: login callbacks, cookie security
	AuthKeyFile        string // keys that sign tokens and seal login cookies
	GitHubClientID     string
	GitHubClientSecret string
	GoogleClientID     string
	GoogleClientSecret string
	OIDCIssuer         string // any OpenID Connect provider, by issuer (discovery) URL
	OIDCClientID       string
	OIDCClientSecret   string
	AccessTTL          time.Duration // access token lifetime
	RefreshTTL         time.Duration // refresh token lifetime (unused)
	TokenGrace         time.Duration // an expired socket is closed this long after its token expired
	AdminUsers         []string      // users who may revoke other users
	MaxConnsPerUser    int           // concurrent WebSockets per user (0 = no limit)
	UserMessageRate    float64       // messages/s one user may send over all connections (0 = no limit)
	UserMessageBurst   int

	// Transport security and audit.
	TLSCert        string // PEM certificate chain: serve HTTPS/WSS with TLS 1.3 minimum
	TLSKey         string
	AuditLog       string        // where the JSON audit log goes: "-" stderr, or a file
	BlockThreshold int           // offenses from one address within BlockWindow that block it
	BlockWindow    time.Duration // the window offenses are counted in
	BlockDuration  time.Duration // how long a blocked address is refused

	lifeConfig // deletion, webhooks, quotas (config_life.go)
	// Behind a proxy (proxy.go).
	TrustedProxies trustedNets // peers that may name the client (PROXY protocol, ClientIPHeader)
	ClientIPHeader string      // x-forwarded-for, forwarded or none

	// TracerProvider makes the node's spans (tracing.go). Not a flag: nil
	// means the one the OTEL_* environment configures, or none.
	TracerProvider trace.TracerProvider
}

// AuthEnabled reports whether a login provider is configured: then every
// WebSocket and API call needs a token.
func (c *Config) AuthEnabled() bool {
	return c.GitHubClientID != "" || c.GoogleClientID != "" || c.OIDCIssuer != "" || c.OIDCClientID != ""
}

// ParseConfig reads flags from args and environment variables through getenv.
// It returns flag.ErrHelp after printing usage to out when -h/--help is given.
func ParseConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("plait", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:8080", "listen address (host:port)")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory of the embedded store")
	fs.BoolVar(&c.AllowAnonymous, "allow-anonymous", false, "without a login provider, serve anonymous clients (every client may read and change every document) on a non-loopback address; without it, a node with no provider listens on loopback only")
	origins := fs.String("allowed-origins", "", "comma-separated browser origins (host patterns, e.g. app.example.com) allowed to open /ws besides the node's own host")
	fs.Int64Var(&c.MaxMessageBytes, "max-message-bytes", 32<<20, "largest WebSocket message accepted from a client (a document's first sync arrives as one message)")
	fs.IntVar(&c.MaxQueueBytes, "max-queue-bytes", 16<<20, "bytes queued for a slow client before it is disconnected")
	fs.Float64Var(&c.MessageRate, "message-rate", 500, "messages per second one connection may send, sustained; faster: an error message and close 4430 (0 = no limit)")
	fs.IntVar(&c.MessageBurst, "message-burst", 10000, "messages one connection may send at once above message-rate: a client that (re)opens N documents sends about 2N")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 2048, "concurrent WebSocket connections per client IP address (IPv6: per /64); more: HTTP 429 (0 = no limit). There is no user identity yet, so the address stands in for the user: clients behind one NAT or proxy share it")
	fs.IntVar(&c.MaxPendingConnsPerIP, "max-pending-conns-per-ip", 64, "connections from one client IP address (IPv6: per /64) that are not WebSockets (yet): HTTP requests, idle keep-alive connections, connections still sending their request headers or their WebSocket upgrade; more are closed as they are accepted, before anything is read (HTTP 429 without TLS) (0 = no limit). Behind a proxy every client shares the proxy's address: raise it or set 0")
	fs.IntVar(&c.MaxPendingConns, "max-pending-conns", 0, "connections on the node that are not WebSockets (yet); at the cap a new connection closes the one that has waited longest for its request headers (slow senders, idle keep-alive), or is refused (HTTP 503) if every one is busy with a request (0 = automatic: open-file limit / 8, between 32 and 2048; -1 = no limit)")
	fs.IntVar(&c.MaxConns, "max-conns", 0, "WebSocket connections on the node; more: HTTP 503 with Retry-After (0 = automatic: the open-file limit minus max-pending-conns minus a reserve of min(512, limit/8) for the store, Redis and logs, at least 64; -1 = no limit)")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has to send a request's headers, from its first byte (on a new connection from accept, TLS handshake included); the body then has 30s more")
	fs.Float64Var(&c.HTTPRatePerIP, "http-rate-per-ip", 100, "HTTP requests per second per client IP address (IPv6: per /64), sustained, WebSocket upgrades included and /metrics excluded; more: HTTP 429 with Retry-After (0 = no limit)")
	fs.IntVar(&c.HTTPBurstPerIP, "http-burst-per-ip", 2048, "HTTP requests one client IP address may make at once above http-rate-per-ip (as many as max-conns-per-ip, so an address can reopen all its connections at once)")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "deadline of each write to a client")
	fs.DurationVar(&c.PingInterval, "ping-interval", 30*time.Second, "WebSocket keepalive ping period")
	fs.DurationVar(&c.PongTimeout, "pong-timeout", 15*time.Second, "time to wait for a pong before closing a connection")
	fs.DurationVar(&c.JoinTimeout, "join-timeout", 10*time.Second, "time a new connection has to send its join message")
	fs.DurationVar(&c.IdleDocTimeout, "idle-doc-timeout", 30*time.Second, "how long a document nobody is syncing stays in memory")
	fs.DurationVar(&c.PendingWait, "pending-wait", 2*time.Second, "how long a request for a document that does not exist waits for it to appear (its creator's changes may be on their way) before doc-unavailable")
	fs.IntVar(&c.MaxDocBytes, "max-doc-bytes", 128<<20, "largest document (its changes, uncompressed); a sync message that would pass it is refused (close 4413); a larger stored document opens read-only (0 = no limit)")
	fs.IntVar(&c.MaxInflatedBytes, "max-inflated-bytes", 64<<20, "bytes the compressed changes of one sync message may inflate to; more: close 4413")
	fs.IntVar(&c.MaxSendBytes, "max-send-message-bytes", 8<<20, "bytes of changes the node puts into one sync message it sends; a longer history goes out as several messages")
	fs.IntVar(&c.MaxDocsPerConn, "max-docs-per-conn", 4096, "documents one connection may have open; more: doc-unavailable and an error message (0 = no limit)")
	fs.IntVar(&c.MaxOpenDocs, "max-open-docs", 50000, "documents open on the node (each holds its changes and a goroutine); more: doc-unavailable and an error message (0 = no limit)")
	fs.IntVar(&c.MaxConnBytes, "max-conn-bytes", 64<<20, "bytes one connection may have in flight (messages not yet handled: reading waits) and in sync state (more: close 4413)")
	fs.IntVar(&c.MaxInflightBytes, "max-inflight-bytes", 512<<20, "bytes of received messages not yet handled, all connections together; past it reading waits (a wait over 10s closes the connection with 1013)")
	fs.IntVar(&c.MaxStateBytes, "max-state-bytes", 256<<20, "bytes of sync state (peers' Bloom filters and hash lists) the node keeps, all connections together; a message adding to it past this closes its connection with 1013")
	fs.IntVar(&c.MaxEphemeralBytes, "max-ephemeral-bytes", 64<<10, "largest ephemeral message (presence, cursors); larger: dropped, the sender gets an error message")
	fs.IntVar(&c.EphemeralRelayBytes, "ephemeral-relay-bytes", 16<<20, "ephemeral bytes relayed per document per second (size times receivers); more: dropped and counted")
	fs.IntVar(&c.MaxCompactBytes, "max-compact-bytes", 32<<20, "largest document compacted into a snapshot (compaction indexes the whole history: a multiple of it in memory), and the bytes of documents compacting at once on the node; larger ones keep their changes as they are")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "graceful shutdown deadline")
	fs.StringVar(&c.RedisURL, "redis-url", "", "run as one node of a cluster: Redis (redis://[user:password@]host:port[/db], rediss:// for TLS) carries changes between nodes and stores documents instead of data-dir; prefer PLAIT_REDIS_URL for a password")
	fs.BoolVar(&c.RedisCluster, "redis-cluster", false, "redis-url names a Redis Cluster: redis://host1:port?addr=host2:port&addr=host3:port")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", "plait", "prefix of every Redis key and channel (several deployments can share one Redis)")
	fs.StringVar(&c.RedisCAFile, "redis-ca-file", "", "PEM file of CA certificates to verify a rediss:// server (default: the system roots)")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "serve Go's pprof profiles (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060 (default: off)")
	fs.StringVar(&c.EncryptionKeys, "encryption-key-file", "", "encrypt at rest everything the store writes (AES-256-GCM): a file of lines \"<id>:<base64 of 32 bytes>\", the first key encrypts, the others only decrypt (rotation); default: off")
	fs.StringVar(&c.PublicURL, "public-url", "", "the URL browsers reach the node(s) at, e.g. https://plait.example.com: login callbacks go to <public-url>/auth/<provider>/callback; required with a login provider")
	fs.StringVar(&c.AuthKeyFile, "auth-key-file", "", "keys that sign access and refresh tokens and seal login cookies, lines \"<id>:<base64 of 32 bytes>\" (the first signs, the others only verify: rotation); every node of a cluster needs the same file; required with a login provider")
	fs.StringVar(&c.GitHubClientID, "github-client-id", "", "GitHub OAuth app client id: enables login with GitHub")
	fs.StringVar(&c.GitHubClientSecret, "github-client-secret", "", "GitHub OAuth app client secret (prefer PLAIT_GITHUB_CLIENT_SECRET)")
	fs.StringVar(&c.GoogleClientID, "google-client-id", "", "Google OAuth client id: enables login with Google")
	fs.StringVar(&c.GoogleClientSecret, "google-client-secret", "", "Google OAuth client secret (prefer PLAIT_GOOGLE_CLIENT_SECRET)")
	fs.StringVar(&c.OIDCIssuer, "oidc-issuer", "", "issuer URL of any OpenID Connect provider (discovery at <issuer>/.well-known/openid-configuration): enables login with it")
	fs.StringVar(&c.OIDCClientID, "oidc-client-id", "", "OpenID Connect client id")
	fs.StringVar(&c.OIDCClientSecret, "oidc-client-secret", "", "OpenID Connect client secret (prefer PLAIT_OIDC_CLIENT_SECRET)")
	fs.DurationVar(&c.AccessTTL, "access-token-ttl", 15*time.Minute, "lifetime of an access token (it opens WebSockets and calls the API)")
	fs.DurationVar(&c.RefreshTTL, "refresh-token-ttl", 30*24*time.Hour, "a login session ends when its refresh token is unused this long")
	fs.DurationVar(&c.TokenGrace, "token-expiry-grace", 30*time.Second, "a WebSocket whose access token expired is closed (4401) this long after the expiry, so the client can refresh and reconnect")
	admins := fs.String("admin-users", "", "comma-separated user ids (e.g. github:123, oidc:<sub>) who may revoke other users")
	fs.IntVar(&c.MaxConnsPerUser, "max-conns-per-user", 256, "concurrent WebSocket connections per user on one node; more: HTTP 429 (0 = no limit)")
	fs.Float64Var(&c.UserMessageRate, "user-message-rate", 2000, "messages per second one user may send over all of its connections on one node, sustained; faster: close 4430 (0 = no limit)")
	fs.IntVar(&c.UserMessageBurst, "user-message-burst", 40000, "messages one user may send at once above user-message-rate")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS and WSS, TLS 1.3 minimum (with tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key file of tls-cert")
	c.lifeConfig.registerFlags(fs)
	fs.StringVar(&c.AuditLog, "audit-log", "-", "where the security audit log (JSON lines: logins, failures, denials, limit hits, malformed input) goes: - for standard error, or a file path (appended)")
	fs.IntVar(&c.BlockThreshold, "block-threshold", 20, "offenses (malformed frames, failed logins and tokens, rate limits) from one address within block-window that get it blocked for block-duration (0 = never block)")
	fs.DurationVar(&c.BlockWindow, "block-window", time.Minute, "the window block-threshold counts offenses in")
	fs.DurationVar(&c.BlockDuration, "block-duration", 10*time.Minute, "how long a blocked address gets HTTP 429 on everything but health checks and metrics")
	trusted := fs.String("trusted-proxies", "", "comma-separated networks (CIDRs, or addresses) of the load balancers in front of the node, e.g. 10.0.0.0/8: their connections may name the client with a PROXY protocol v1/v2 header (haproxy send-proxy-v2) or the client-ip-header, and every per-address limit, the blocklist, the audit log and the logs use that client; from any other peer both are ignored (default: none, every client is its TCP peer)")
	fs.StringVar(&c.ClientIPHeader, "client-ip-header", clientIPHeaderXFF, "the header a trusted proxy names the client in, when it does not use the PROXY protocol: x-forwarded-for, forwarded (RFC 7239) or none; the rightmost address in it that is not a trusted proxy is the client. Name the one your proxy sets: the other is whatever the client sent")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: plait [flags]\n\nRuns one Plait node: an automerge-repo sync server on WebSocket /ws.\nEvery flag can also be set by an environment variable PLAIT_<FLAG> (upper case, dashes as underscores), e.g. PLAIT_ADDR=0.0.0.0:8080; a flag wins over the variable.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "PLAIT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if err := fs.Set(f.Name, v); err != nil && envErr == nil {
				envErr = fmt.Errorf("invalid %s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return c, envErr
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	for _, u := range strings.Split(*admins, ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.AdminUsers = append(c.AdminUsers, u)
		}
	}
	nets, err := parseTrustedNets(*trusted)
	if err != nil {
		return c, err
	}
	c.TrustedProxies = nets
	if err := c.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		return c, fmt.Errorf("invalid log level %q: %w", *level, err)
	}
	return c, c.Validate()
}

// Validate checks the configuration for values that cannot work or are unsafe.
func (c *Config) Validate() error {
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("invalid addr %q: %w", c.Addr, err)
	}
	if err := c.validateAuth(host); err != nil {
		return err
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			return errors.New("allowed-origins: \"*\" would let any web page use a visitor's connection; list the origins")
		}
	}
	if c.MaxMessageBytes < 1024 {
		return fmt.Errorf("max-message-bytes %d is too small (minimum 1024)", c.MaxMessageBytes)
	}
	if c.MaxQueueBytes < 1024 {
		return fmt.Errorf("max-queue-bytes %d is too small (minimum 1024)", c.MaxQueueBytes)
	}
	switch c.ClientIPHeader {
	case clientIPHeaderXFF, clientIPHeaderForwarded, clientIPHeaderNone:
	default:
		return fmt.Errorf("client-ip-header must be x-forwarded-for, forwarded or none, not %q", c.ClientIPHeader)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log-format must be text or json, not %q", c.LogFormat)
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	if err := c.lifeConfig.validate(); err != nil {
		return err
	}
	if c.DataDir == "" && c.RedisURL == "" {
		return errors.New("data-dir must not be empty")
	}
	if c.DebugAddr != "" {
		host, _, err := net.SplitHostPort(c.DebugAddr)
		if err != nil || !isLoopback(host) {
			return fmt.Errorf("debug-addr %q must be a loopback host:port: profiles reveal memory contents", c.DebugAddr)
		}
	}
	if c.RedisCluster && c.RedisURL == "" {
		return errors.New("redis-cluster needs redis-url")
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		return fmt.Errorf("redis-url must start with redis:// or rediss://, not %q", redactURL(c.RedisURL))
	}
	if c.RedisPrefix == "" || strings.ContainsAny(c.RedisPrefix, "{}") {
		return fmt.Errorf("redis-prefix %q must be non-empty and free of braces (they are hash tags)", c.RedisPrefix)
	}
	return nil
}

// validateAuth checks the login, token and TLS settings.
func (c *Config) validateAuth(host string) error {
	if !c.AuthEnabled() {
		if !c.AllowAnonymous && !isLoopback(host) {
			return fmt.Errorf("refusing to listen on %q without authentication: no login provider is configured (--oidc-issuer, --github-client-id, --google-client-id), so the node serves anonymous clients only on loopback; configure a provider, or pass --allow-anonymous to serve %s to anyone", c.Addr, host)
		}
	} else {
		if c.AllowAnonymous {
			return errors.New("allow-anonymous cannot be combined with a login provider: with one, every client must log in")
		}
		for _, p := range []struct{ name, id, secret string }{
			{"github", c.GitHubClientID, c.GitHubClientSecret},
			{"google", c.GoogleClientID, c.GoogleClientSecret},
			{"oidc", c.OIDCClientID, c.OIDCClientSecret},
		} {
			if p.id != "" && p.secret == "" {
				return fmt.Errorf("%s-client-secret is required with %s-client-id (PLAIT_%s_CLIENT_SECRET)", p.name, p.name, strings.ToUpper(p.name))
			}
			if p.id == "" && p.secret != "" {
				return fmt.Errorf("%s-client-secret is set without %s-client-id", p.name, p.name)
			}
		}
		if (c.OIDCIssuer == "") != (c.OIDCClientID == "") {
			return errors.New("oidc-issuer and oidc-client-id go together")
		}
		if c.AuthKeyFile == "" {
			return errors.New("auth-key-file is required with a login provider: it signs the tokens (make one: echo \"k1:$(head -c 32 /dev/urandom | base64)\" > auth.keys)")
		}
		u, err := url.Parse(c.PublicURL)
		if c.PublicURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("public-url %q must be the absolute http(s) URL of the node(s), without a path, e.g. https://plait.example.com (login callbacks go there)", c.PublicURL)
		}
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			return fmt.Errorf("public-url %q must use https: tokens and login cookies would travel in clear", c.PublicURL)
		}
		if c.AccessTTL < time.Minute || c.RefreshTTL < c.AccessTTL {
			return fmt.Errorf("access-token-ttl %v must be at least 1m and refresh-token-ttl %v at least as long", c.AccessTTL, c.RefreshTTL)
		}
		if c.TokenGrace < 0 {
			return fmt.Errorf("token-expiry-grace %v must be >= 0", c.TokenGrace)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls-cert and tls-key go together")
	}
	if c.AuditLog == "" {
		return errors.New("audit-log must be - (standard error) or a file path")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// NewLogger builds the node's logger from the configuration.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
