package node

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/server/auth/boltauth"
	"github.com/plaithub/plait/server/auth/redisauth"
)

// authState is a node's login, tokens and permissions; nil on an anonymous
// node.
type authState struct {
	tokens *auth.Tokens
	store  auth.TokenStore
	acl    access.ACL
	events auth.Events
	login  *auth.Login
	live   *liveConns
	users  *connLimiter[string] // WebSockets per user
	rates  *userRates           // messages per user
	secure bool                 // cookies only over HTTPS
	admins []string
	close  func() error
}

// storeBackend is what both auth stores implement.
type storeBackend interface {
	auth.TokenStore
	access.ACL
}

// openAuth builds the node's auth from cfg: the token and permission store
// next to the documents (bbolt in data-dir, or Redis), the events that
// carry revocations and permission changes to every node, and the login
// providers.
func (n *Node) openAuth(ctx context.Context) (*authState, error) {
	cfg := n.cfg
	keys, err := readAuthKeys(cfg.AuthKeyFile)
	if err != nil {
		return nil, err
	}
	a := &authState{live: newLiveConns(), users: newConnLimiter[string](cfg.MaxConnsPerUser),
		rates:  newUserRates(cfg.UserMessageRate, cfg.UserMessageBurst),
		secure: strings.EqualFold(publicScheme(cfg.PublicURL), "https"), admins: cfg.AdminUsers}
	var st storeBackend
	if n.be.redis == nil {
		bs, err := boltauth.Open(filepath.Join(cfg.DataDir, "auth.db"))
		if err != nil {
			return nil, fmt.Errorf("failed to open the auth store: %w", err)
		}
		st, a.events, a.close = bs, auth.NewLocalEvents(), bs.Close
	} else {
		rs, err := redisauth.New(ctx, n.be.redis, cfg.RedisPrefix)
		if err != nil {
			return nil, fmt.Errorf("failed to open the auth store: %w", err)
		}
		st, a.events, a.close = rs, redisauth.NewEvents(n.be.redis, cfg.RedisPrefix, n.log), func() error { return nil }
	}
	a.store, a.acl = st, st
	a.tokens, err = auth.NewTokens(auth.TokenOptions{Keys: keys, Store: st, AccessTTL: cfg.AccessTTL, RefreshTTL: cfg.RefreshTTL})
	if err != nil {
		_ = a.close()
		return nil, err
	}
	var providers []auth.ProviderConfig
	if cfg.GitHubClientID != "" {
		providers = append(providers, auth.ProviderConfig{Name: "github", ClientID: cfg.GitHubClientID, ClientSecret: cfg.GitHubClientSecret})
	}
	if cfg.GoogleClientID != "" {
		providers = append(providers, auth.ProviderConfig{Name: "google", ClientID: cfg.GoogleClientID, ClientSecret: cfg.GoogleClientSecret})
	}
	if cfg.OIDCIssuer != "" {
		providers = append(providers, auth.ProviderConfig{Name: "oidc", ClientID: cfg.OIDCClientID, ClientSecret: cfg.OIDCClientSecret, Issuer: cfg.OIDCIssuer})
	}
	a.login, err = auth.NewLogin(ctx, auth.LoginOptions{
		PublicURL: strings.TrimSuffix(cfg.PublicURL, "/"),
		Providers: providers,
		Keys:      keys,
		Store:     st,
	})
	if err != nil {
		_ = a.close()
		return nil, err
	}
	return a, nil
}

func publicScheme(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Scheme
}

// logAuthMode says at start-up who may connect.
func (n *Node) logAuthMode(addr string) {
	if n.auth == nil {
		host, _, _ := strings.Cut(addr, ":")
		n.log.Warn("anonymous mode: no login provider is configured, every client may read and change every document",
			"addr", addr, "loopback_only", isLoopback(strings.Trim(host, "[]")))
		return
	}
	n.log.Info("login required", "providers", n.auth.login.Providers(), "public_url", n.cfg.PublicURL,
		"access_token_ttl", n.cfg.AccessTTL, "admins", len(n.auth.admins))
}
