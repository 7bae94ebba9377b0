package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ErrRevoked is recorded in Stats.LastErr when the server ended the
// connection because the user or the login session was revoked (close
// 4410), or refused the handshake as revoked: the user must log in again.
// The client keeps retrying with backoff all the same, so that it resumes
// by itself once Options.Token returns a token of a new login.
var ErrRevoked = errors.New("access revoked")

// ErrUnauthorized is recorded in Stats.LastErr when the server refused a
// handshake with HTTP 401 (no token, an invalid one or an expired one).
// The next attempt calls Options.Token again.
var ErrUnauthorized = errors.New("access token refused")

// ErrRefreshFailed is returned by TokenSource.Token when the server
// refused the refresh token (HTTP 401: invalid, expired, revoked, or
// already used): the login session is over and the user must log in again.
var ErrRefreshFailed = errors.New("refresh token refused")

// refreshTimeout bounds one refresh request. A refresh runs to its end even
// if the callers waiting for it give up: abandoned midway, the server may
// have spent the refresh token without the client learning its successor.
const refreshTimeout = 30 * time.Second

// maxTokenResponse bounds the body read from /auth/refresh.
const maxTokenResponse = 1 << 20

// TokenSourceOptions configure a TokenSource. The zero value of every field
// but BaseURL and RefreshToken is a documented default.
type TokenSourceOptions struct {
	// BaseURL is the node's HTTP address, http(s)://host:port; the refresh
	// endpoint is BaseURL + "/auth/refresh". Required.
	BaseURL string
	// RefreshToken is the refresh token of a login. It is single-use: the
	// source spends it on its first refresh and keeps the successor.
	// Required.
	RefreshToken string
	// OnRotate is called with each new refresh token, before the Token
	// call that caused the refresh returns, so the app can persist it (the
	// one it had is spent: a restarted app that presents it again revokes
	// the whole login session). It is called by one refresh at a time.
	// Default: nothing.
	OnRotate func(refreshToken string)
	// HTTPClient posts the refreshes. Default: http.DefaultClient.
	HTTPClient *http.Client
	// MinValidity is how long an access token must still be valid for
	// Token to return it without a refresh; a token whose whole lifetime is
	// shorter than twice MinValidity is refreshed once half of it has
	// passed. Default: 30s.
	MinValidity time.Duration
}

// TokenSource keeps a login's access token fresh: it returns the cached
// one while it is valid long enough and otherwise spends the refresh token
// at the node's POST /auth/refresh for a new pair.
//
// Concurrency: Token is safe for concurrent use. One refresh runs at a
// time and every caller that needs one waits for the same refresh, so a
// refresh token is never presented twice (which would revoke the login
// session). Once the server refused the refresh token (ErrRefreshFailed)
// every later call fails the same way without asking it again.
type TokenSource struct {
	opts     TokenSourceOptions
	endpoint string

	mu       sync.Mutex
	refresh  string
	access   string
	expires  time.Time     // on this machine's clock
	lifetime time.Duration // of access, as the server issued it
	failed   error         // ErrRefreshFailed once the server refused refresh
	inflight *refreshCall
}

// refreshCall is one refresh, shared by the callers that wait for it.
type refreshCall struct {
	done   chan struct{}
	access string
	err    error
}

// NewTokenSource returns a TokenSource for a login's refresh token. It
// does not contact the server: the first Token call refreshes.
func NewTokenSource(o TokenSourceOptions) (*TokenSource, error) {
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: TokenSourceOptions.BaseURL %q is not http(s)://host:port", o.BaseURL)
	}
	if o.RefreshToken == "" {
		return nil, errors.New("client: TokenSourceOptions.RefreshToken is empty")
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.MinValidity <= 0 {
		o.MinValidity = 30 * time.Second
	}
	if o.OnRotate == nil {
		o.OnRotate = func(string) {}
	}
	return &TokenSource{
		opts:     o,
		endpoint: strings.TrimSuffix(o.BaseURL, "/") + "/auth/refresh",
		refresh:  o.RefreshToken,
	}, nil
}

// Token returns an access token valid for at least MinValidity, refreshing
// it if needed. If ctx ends first Token returns its error, but a refresh
// under way still completes (and calls OnRotate) for the next caller. A
// refresh the server refused with 401 is ErrRefreshFailed; other errors
// (network, HTTP 5xx) leave the refresh token unspent, and a later call
// retries. Its signature fits Options.Token.
func (s *TokenSource) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("failed to get an access token: %w", err)
	}
	s.mu.Lock()
	if s.failed != nil {
		err := s.failed
		s.mu.Unlock()
		return "", err
	}
	if s.access != "" && time.Until(s.expires) > min(s.opts.MinValidity, s.lifetime/2) {
		tok := s.access
		s.mu.Unlock()
		return tok, nil
	}
	call := s.inflight
	if call == nil {
		call = &refreshCall{done: make(chan struct{})}
		s.inflight = call
		go s.run(context.WithoutCancel(ctx), call, s.refresh)
	}
	s.mu.Unlock()
	select {
	case <-call.done:
		return call.access, call.err
	case <-ctx.Done():
		return "", fmt.Errorf("failed to refresh the access token: %w", ctx.Err())
	}
}

// run performs call: it spends refresh, hands its successor to OnRotate,
// caches the new access token and wakes the callers.
func (s *TokenSource) run(ctx context.Context, call *refreshCall, refresh string) {
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	p, err := s.post(ctx, refresh)
	if err == nil {
		s.opts.OnRotate(p.refresh)
	}
	s.mu.Lock()
	if err == nil {
		s.refresh, s.access, s.expires, s.lifetime = p.refresh, p.access, p.expires, p.lifetime
		call.access = p.access
	} else if errors.Is(err, ErrRefreshFailed) {
		s.failed = err
		s.access = ""
	}
	call.err = err
	s.inflight = nil
	s.mu.Unlock()
	close(call.done)
}

// tokenPair is a refresh's outcome.
type tokenPair struct {
	access, refresh string
	expires         time.Time // on this machine's clock
	lifetime        time.Duration
}

// post spends refresh at the endpoint.
func (s *TokenSource) post(ctx context.Context, refresh string) (tokenPair, error) {
	body, err := json.Marshal(map[string]string{"refresh_token": refresh})
	if err != nil {
		return tokenPair{}, fmt.Errorf("failed to encode the refresh request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return tokenPair{}, fmt.Errorf("failed to refresh the access token: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return tokenPair{}, fmt.Errorf("failed to refresh the access token: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	received := time.Now()
	if err != nil {
		return tokenPair{}, fmt.Errorf("failed to refresh the access token: failed to read the answer: %w", err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return tokenPair{}, fmt.Errorf("failed to refresh the access token: %w: %s", ErrRefreshFailed, errorMessage(b, resp.Status))
	}
	if resp.StatusCode != http.StatusOK {
		return tokenPair{}, fmt.Errorf("failed to refresh the access token: server answered %s: %s", resp.Status, errorMessage(b, resp.Status))
	}
	var tj struct {
		AccessToken   string    `json:"access_token"`
		AccessExpires time.Time `json:"access_expires_at"`
		RefreshToken  string    `json:"refresh_token"`
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		return tokenPair{}, fmt.Errorf("failed to refresh the access token: failed to decode the answer: %w", err)
	}
	if tj.AccessToken == "" || tj.RefreshToken == "" || tj.AccessExpires.IsZero() {
		return tokenPair{}, errors.New("failed to refresh the access token: the answer lacks access_token, access_expires_at or refresh_token")
	}
	// The lifetime is measured on the server's clock (its Date header), so
	// a client whose clock is off still refreshes in time.
	issued := received
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		issued = d
	}
	life := max(tj.AccessExpires.Sub(issued), 0)
	return tokenPair{access: tj.AccessToken, refresh: tj.RefreshToken, expires: received.Add(life), lifetime: life}, nil
}

// errorMessage returns the "error" of a JSON error body such as the
// node's {"error": "..."}, or else fallback.
func errorMessage(body []byte, fallback string) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return fallback
}
