package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/boltstore"
	"github.com/plaithub/plait/hub/cryptstore"
	"github.com/plaithub/plait/hub/membroker"
	"github.com/plaithub/plait/hub/redisbroker"
	"github.com/plaithub/plait/hub/redisstore"
)

// backend is where a node stores documents and how it reaches the other
// nodes: the embedded store and the in-memory broker for a single node, or
// Redis for both in a cluster.
type backend struct {
	store  hub.Store
	broker hub.Broker
	redis  redis.UniversalClient // nil for a single node
	desc   string
}

// openBackend opens the store and broker that cfg asks for, the store
// encrypted at rest if cfg names a key file.
func openBackend(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*backend, error) {
	var keys []cryptstore.Key
	if cfg.EncryptionKeys != "" {
		var err error
		if keys, err = readKeyFile("encryption-key-file", cfg.EncryptionKeys); err != nil {
			return nil, err
		}
	}
	be, err := openPlainBackend(ctx, cfg, log, reg)
	if err != nil || keys == nil {
		return be, err
	}
	enc, err := cryptstore.New(be.store, keys)
	if err != nil {
		_ = be.close()
		return nil, err
	}
	be.store = enc
	be.desc += fmt.Sprintf(", encrypted at rest (AES-256-GCM, key %q)", keys[0].ID)
	return be, nil
}

func openPlainBackend(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*backend, error) {
	if cfg.RedisURL == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("failed to create data dir: %w", err)
		}
		store, err := boltstore.Open(filepath.Join(cfg.DataDir, "plait.db"), boltstore.Options{})
		if err != nil {
			return nil, fmt.Errorf("failed to open store in %s: %w", cfg.DataDir, err)
		}
		return &backend{store: store, broker: membroker.New(nil), desc: "embedded store " + store.Path() + ", single node"}, nil
	}
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
	store, err := redisstore.New(pctx, client, redisstore.Options{Prefix: cfg.RedisPrefix})
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("failed to open the Redis store: %w", err)
	}
	broker, err := redisbroker.New(pctx, client, redisbroker.Options{Prefix: cfg.RedisPrefix, Logger: log, Registerer: reg})
	if err != nil {
		_ = store.Close()
		_ = client.Close()
		return nil, fmt.Errorf("failed to start the Redis broker: %w", err)
	}
	desc := "Redis " + redactURL(cfg.RedisURL)
	if cfg.RedisCluster {
		desc += " (cluster)"
	}
	if !broker.Sharded() {
		desc += ", classic pub/sub (the server lacks SPUBLISH)"
	}
	return &backend{store: store, broker: broker, redis: client, desc: desc}, nil
}

// close releases the backend: broker, store, then the Redis client.
func (b *backend) close() error {
	var errs []error
	if err := b.broker.Close(); err != nil {
		errs = append(errs, fmt.Errorf("failed to close broker: %w", err))
	}
	if err := b.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("failed to close store: %w", err))
	}
	if b.redis != nil {
		if err := b.redis.Close(); err != nil {
			errs = append(errs, fmt.Errorf("failed to close Redis client: %w", err))
		}
	}
	return errors.Join(errs...)
}

// newRedisClient parses cfg.RedisURL: redis:// or rediss:// (TLS), with
// user and password for AUTH; with cfg.RedisCluster, further nodes as addr
// parameters (redis://host1:6379?addr=host2:6379&addr=host3:6379).
func newRedisClient(cfg Config) (redis.UniversalClient, error) {
	bad := func(err error) error { return fmt.Errorf("invalid redis-url %s: %w", redactURL(cfg.RedisURL), err) }
	if cfg.RedisCluster {
		o, err := redis.ParseClusterURL(cfg.RedisURL)
		if err != nil {
			return nil, bad(err)
		}
		if err := configureTLS(cfg, &o.TLSConfig); err != nil {
			return nil, err
		}
		return redis.NewClusterClient(o), nil
	}
	o, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, bad(err)
	}
	if err := configureTLS(cfg, &o.TLSConfig); err != nil {
		return nil, err
	}
	return redis.NewClient(o), nil
}

// configureTLS applies the CA file and the TLS 1.2 minimum to a rediss://
// connection.
func configureTLS(cfg Config, t **tls.Config) error {
	if *t == nil {
		if cfg.RedisCAFile != "" {
			return errors.New("redis-ca-file is set but redis-url is not rediss:// (TLS)")
		}
		return nil
	}
	(*t).MinVersion = tls.VersionTLS12
	if cfg.RedisCAFile != "" {
		pem, err := os.ReadFile(cfg.RedisCAFile)
		if err != nil {
			return fmt.Errorf("failed to read redis-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("redis-ca-file %s holds no PEM certificate", cfg.RedisCAFile)
		}
		(*t).RootCAs = pool
	}
	return nil
}

// redactURL hides the password of a Redis URL for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
