package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub/cryptstore"
)

// ParseStorageConfig reads only the settings that say where a node keeps
// its documents and access lists (data-dir, redis-url, redis-cluster,
// redis-prefix, redis-ca-file, encryption-key-file), from args and the same
// PLAIT_* environment variables as ParseConfig, with the same defaults:
// the tools that work on a node's storage while it is stopped (plait
// export and import) find it exactly where the node does. The remaining
// positional arguments are returned. It returns flag.ErrHelp after printing
// usage (with usage as the first line) to out for -h/--help.
func ParseStorageConfig(name, usage string, args []string, getenv func(string) string, out io.Writer) (Config, []string, error) {
	// The defaults are ParseConfig's; TestStorageConfigMatchesNodeConfig
	// keeps them identical.
	var c Config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory of the embedded store (the node's data-dir): plait.db holds the documents, auth.db the access lists")
	fs.StringVar(&c.RedisURL, "redis-url", "", "use the documents and access lists in Redis instead of data-dir (the cluster's redis-url; prefer PLAIT_REDIS_URL for a password)")
	fs.BoolVar(&c.RedisCluster, "redis-cluster", false, "redis-url names a Redis Cluster: redis://host1:port?addr=host2:port&addr=host3:port")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", "plait", "prefix of every Redis key (the nodes' redis-prefix)")
	fs.StringVar(&c.RedisCAFile, "redis-ca-file", "", "PEM file of CA certificates to verify a rediss:// server (default: the system roots)")
	fs.StringVar(&c.EncryptionKeys, "encryption-key-file", "", "the key file of the store's encryption at rest (the nodes' encryption-key-file), if it has one")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: %s\n\nEvery flag can also be set by an environment variable PLAIT_<FLAG>, as for the node; a flag wins over the variable.\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := "PLAIT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" {
			if err := fs.Set(f.Name, v); err != nil && envErr == nil {
				envErr = fmt.Errorf("invalid %s=%q: %w", env, v, err)
			}
		}
	})
	if envErr != nil {
		return c, nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return c, nil, err
	}
	return c, fs.Args(), c.validateStorage()
}

// validateStorage checks the storage settings as Validate does.
func (c *Config) validateStorage() error {
	if c.DataDir == "" && c.RedisURL == "" {
		return errors.New("data-dir must not be empty")
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

// OpenRedis connects to cfg.RedisURL as a node does (TLS, CA file,
// cluster) and checks within 10 seconds that Redis answers. The caller
// closes the client.
func OpenRedis(ctx context.Context, cfg Config) (redis.UniversalClient, error) {
	client, err := newRedisClient(cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("failed to reach Redis at %s: %w", redactURL(cfg.RedisURL), err)
	}
	return client, nil
}

// EncryptionKeys reads cfg.EncryptionKeys, the key file of encryption at
// rest; nil without one.
func EncryptionKeys(cfg Config) ([]cryptstore.Key, error) {
	if cfg.EncryptionKeys == "" {
		return nil, nil
	}
	return readKeyFile("encryption-key-file", cfg.EncryptionKeys)
}

// RedactURL hides the password of a Redis URL for logs and errors.
func RedactURL(s string) string { return redactURL(s) }
