package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/boltstore"
	"github.com/plaithub/plait/hub/cryptstore"
	"github.com/plaithub/plait/hub/redisstore"
	"github.com/plaithub/plait/server/auth/boltauth"
	"github.com/plaithub/plait/server/auth/redisauth"
	"github.com/plaithub/plait/server/node"
)

// Storage is a node's storage opened as the node opens it: documents and
// access lists, in data-dir (bbolt) or Redis, encrypted at rest if the
// configuration names a key file.
type Storage struct {
	Docs  DocStore
	ACL   ACLStore // nil: an embedded store without auth.db (a node that never had logins)
	Desc  string
	close []func() error
}

// Open opens the storage cfg names. For an export (create false) the
// embedded store must exist and auth.db is opened only if it exists; for
// an import both are created if needed. A bbolt file that a running node
// holds fails after a few seconds with boltstore.ErrLocked: stop the node
// first (a cluster's Redis can be exported while nodes run).
func Open(ctx context.Context, cfg node.Config, create bool) (*Storage, error) {
	keys, err := node.EncryptionKeys(cfg)
	if err != nil {
		return nil, err
	}
	s := &Storage{}
	var base hub.Store // the store under the encryption
	if cfg.RedisURL == "" {
		docsPath, aclPath := filepath.Join(cfg.DataDir, "plait.db"), filepath.Join(cfg.DataDir, "auth.db")
		if !create {
			if _, err := os.Stat(docsPath); err != nil {
				return nil, fmt.Errorf("no embedded store to export at %s (is data-dir right?): %w", docsPath, err)
			}
		}
		bs, err := boltstore.Open(docsPath, boltstore.Options{})
		if err != nil {
			return nil, lockHint(err)
		}
		s.close = append(s.close, bs.Close)
		s.Docs, base, s.Desc = bs, bs, "embedded store "+docsPath
		if _, err := os.Stat(aclPath); create || err == nil {
			as, err := boltauth.Open(aclPath)
			if err != nil {
				_ = s.Close()
				return nil, lockHint(err)
			}
			s.close = append(s.close, as.Close)
			s.ACL = as
			s.Desc += ", access lists " + aclPath
		}
	} else {
		client, err := node.OpenRedis(ctx, cfg)
		if err != nil {
			return nil, err
		}
		s.close = append(s.close, client.Close)
		rs, err := redisstore.New(ctx, client, redisstore.Options{Prefix: cfg.RedisPrefix})
		if err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("failed to open the Redis store: %w", err)
		}
		s.close = append(s.close, rs.Close)
		ra, err := redisauth.New(ctx, client, cfg.RedisPrefix)
		if err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("failed to open the Redis access lists: %w", err)
		}
		s.Docs, base, s.ACL = rs, rs, ra
		s.Desc = fmt.Sprintf("Redis %s, prefix %q", node.RedactURL(cfg.RedisURL), cfg.RedisPrefix)
	}
	if keys != nil {
		cs, err := cryptstore.New(base, keys)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		s.Docs = cs
		s.Desc += fmt.Sprintf(", encrypted at rest (key %q seals)", keys[0].ID)
	}
	return s, nil
}

// Close closes what Open opened, last first.
func (s *Storage) Close() error {
	var errs []error
	for i := len(s.close) - 1; i >= 0; i-- {
		if err := s.close[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.close = nil
	return errors.Join(errs...)
}

func lockHint(err error) error {
	if errors.Is(err, boltstore.ErrLocked) || errors.Is(err, boltauth.ErrLocked) {
		return fmt.Errorf("%w (a running node holds it: stop the node first)", err)
	}
	return err
}
