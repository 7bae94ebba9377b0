package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token errors.
var (
	// ErrInvalidToken means a token is malformed, forged, signed by an
	// unknown key or not meant for Plait.
	ErrInvalidToken = errors.New("invalid token")
	// ErrAccessExpired means an access token is past its expiry: refresh it.
	ErrAccessExpired = errors.New("access token expired")
)

// Token lifetimes when TokenOptions leaves them zero.
const (
	DefaultAccessTTL  = 15 * time.Minute
	DefaultRefreshTTL = 30 * 24 * time.Hour
)

const (
	tokenIssuer   = "plait"
	tokenAudience = "plait-hub"
	refreshPrefix = "pr1"
	familyIDBytes = 16
	// maxTokenBytes bounds what the parsers look at: real tokens are a few
	// hundred bytes.
	maxTokenBytes = 4096
)

// TokenOptions configures Tokens. Zero durations take the defaults.
type TokenOptions struct {
	Keys       Keys
	Store      TokenStore
	AccessTTL  time.Duration
	RefreshTTL time.Duration
	Now        func() time.Time // default time.Now (tests move the clock)
}

// Tokens issues and checks Plait's own tokens: short-lived access tokens
// (JWT, HS256, a key id in the header) that open WebSockets and call the
// REST API, and refresh tokens that are rotated on every use, with reuse
// detection, through the TokenStore.
type Tokens struct {
	opts    TokenOptions
	access  []Key
	refresh []Key
}

// NewTokens checks opts and fills in the defaults.
func NewTokens(opts TokenOptions) (*Tokens, error) {
	if opts.Store == nil {
		return nil, errors.New("tokens: no store")
	}
	if len(opts.Keys.master) == 0 {
		return nil, errors.New("tokens: no keys")
	}
	if opts.AccessTTL <= 0 {
		opts.AccessTTL = DefaultAccessTTL
	}
	if opts.RefreshTTL <= 0 {
		opts.RefreshTTL = DefaultRefreshTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Tokens{opts: opts, access: opts.Keys.Derive(PurposeAccess), refresh: opts.Keys.Derive(PurposeRefresh)}, nil
}

// AccessTTL is how long an access token lives.
func (t *Tokens) AccessTTL() time.Duration { return t.opts.AccessTTL }

// RefreshTTL is how long a refresh token lives unused.
func (t *Tokens) RefreshTTL() time.Duration { return t.opts.RefreshTTL }

// Pair is what a login or a refresh hands the client.
type Pair struct {
	User           string
	Family         string
	Access         string
	AccessExpires  time.Time
	Refresh        string
	RefreshExpires time.Time
}

// Access is a verified access token.
type Access struct {
	User     string
	Family   string
	IssuedAt time.Time // whole seconds, as in the token
	Expires  time.Time
	// LoginAt is when the token's login session began (set by
	// VerifyAccess): a user revoked at or after it has lost this token.
	// Revocation compares it, not IssuedAt, which JWT rounds to seconds.
	LoginAt time.Time
}

type accessClaims struct {
	Family string `json:"sid"`
	jwt.RegisteredClaims
}

// Login starts a new login session (token family) for user.
func (t *Tokens) Login(ctx context.Context, user string) (Pair, error) {
	if user == "" {
		return Pair{}, errors.New("failed to log in: empty user id")
	}
	var raw [familyIDBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Pair{}, err
	}
	now := t.opts.Now()
	f := Family{ID: base64.RawURLEncoding.EncodeToString(raw[:]), User: user, Created: now, Expires: now.Add(t.opts.RefreshTTL)}
	if err := t.opts.Store.CreateFamily(ctx, f); err != nil {
		return Pair{}, fmt.Errorf("failed to store login session: %w", err)
	}
	return t.pair(f, now)
}

// Refresh rotates refresh token: the token is spent, and a new pair is
// issued. A token presented again after it was rotated revokes its whole
// family (ErrTokenReused). Other errors: ErrInvalidToken, ErrRevoked,
// ErrExpired, ErrNotFound.
func (t *Tokens) Refresh(ctx context.Context, refresh string) (Pair, error) {
	fam, gen, err := t.ParseRefresh(refresh)
	if err != nil {
		return Pair{}, err
	}
	now := t.opts.Now()
	f, err := t.opts.Store.Rotate(ctx, fam, gen, now.Add(t.opts.RefreshTTL))
	if err != nil {
		return Pair{}, fmt.Errorf("failed to refresh: %w", err)
	}
	// A user revoked after this login ends it: the family's tokens count
	// as issued at the login.
	if revoked, err := t.opts.Store.Revoked(ctx, f.User, f.ID, f.Created); err != nil {
		return Pair{}, fmt.Errorf("failed to check revocation: %w", err)
	} else if revoked {
		return Pair{}, fmt.Errorf("failed to refresh: %w", ErrRevoked)
	}
	return t.pair(f, now)
}

// Family returns the family of a refresh token whose signature is valid,
// without spending it (for logout).
func (t *Tokens) Family(refresh string) (string, error) {
	fam, _, err := t.ParseRefresh(refresh)
	return fam, err
}

func (t *Tokens) pair(f Family, now time.Time) (Pair, error) {
	acc, exp, err := t.signAccess(f.User, f.ID, now)
	if err != nil {
		return Pair{}, err
	}
	return Pair{User: f.User, Family: f.ID, Access: acc, AccessExpires: exp,
		Refresh: t.signRefresh(f.ID, f.Gen), RefreshExpires: f.Expires}, nil
}

func (t *Tokens) signAccess(user, family string, now time.Time) (string, time.Time, error) {
	exp := now.Add(t.opts.AccessTTL)
	var jti [12]byte
	_, _ = rand.Read(jti[:])
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, accessClaims{
		Family: family,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   user,
			Audience:  jwt.ClaimStrings{tokenAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
		},
	})
	k := t.access[0]
	tok.Header["kid"] = k.ID
	s, err := tok.SignedString(k.Secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("failed to sign access token: %w", err)
	}
	return s, exp.Truncate(time.Second), nil
}

// ParseAccess checks an access token's signature and claims (issuer,
// audience, expiry, subject, family) without asking the store. An expired
// but otherwise valid token returns its claims with ErrAccessExpired.
func (t *Tokens) ParseAccess(s string) (Access, error) {
	if len(s) > maxTokenBytes {
		return Access{}, fmt.Errorf("%w: too long", ErrInvalidToken)
	}
	var c accessClaims
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithAudience(tokenAudience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(t.opts.Now),
		jwt.WithStrictDecoding(),
	)
	_, err := p.ParseWithClaims(s, &c, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		for _, k := range t.access {
			if k.ID == kid {
				return k.Secret, nil
			}
		}
		return nil, fmt.Errorf("unknown key id %q", kid)
	})
	expired := errors.Is(err, jwt.ErrTokenExpired)
	if err != nil && !expired {
		return Access{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Subject == "" || c.Family == "" || c.IssuedAt == nil || c.ExpiresAt == nil {
		return Access{}, fmt.Errorf("%w: missing claims", ErrInvalidToken)
	}
	a := Access{User: c.Subject, Family: c.Family, IssuedAt: c.IssuedAt.Time, Expires: c.ExpiresAt.Time}
	if expired {
		return a, ErrAccessExpired
	}
	return a, nil
}

// VerifyAccess is ParseAccess plus the revocation check in the store: the
// token's family must exist and not be revoked, and its user must not have
// been revoked since the login.
func (t *Tokens) VerifyAccess(ctx context.Context, s string) (Access, error) {
	a, err := t.ParseAccess(s)
	if err != nil {
		return a, err
	}
	f, err := t.opts.Store.Family(ctx, a.Family)
	if errors.Is(err, ErrNotFound) {
		return a, ErrRevoked
	}
	if err != nil {
		return Access{}, fmt.Errorf("failed to check revocation: %w", err)
	}
	a.LoginAt = f.Created
	revoked, err := t.opts.Store.Revoked(ctx, a.User, a.Family, f.Created)
	if err != nil {
		return Access{}, fmt.Errorf("failed to check revocation: %w", err)
	}
	if revoked || f.User != a.User {
		return a, ErrRevoked
	}
	return a, nil
}

// signRefresh makes "pr1.<family>.<gen>.<mac>": the MAC proves the server
// issued that generation, so presenting an old generation is a real reuse
// and not a guess (which could otherwise revoke someone's session).
func (t *Tokens) signRefresh(family string, gen uint64) string {
	return refreshPrefix + "." + family + "." + strconv.FormatUint(gen, 10) + "." +
		base64.RawURLEncoding.EncodeToString(refreshMAC(t.refresh[0].Secret, family, gen))
}

func refreshMAC(key []byte, family string, gen uint64) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(family))
	var g [8]byte
	binary.BigEndian.PutUint64(g[:], gen)
	m.Write(g[:])
	return m.Sum(nil)
}

// ParseRefresh checks a refresh token's form and MAC and returns its
// family and generation; the store decides whether it is still valid.
func (t *Tokens) ParseRefresh(s string) (family string, gen uint64, err error) {
	if len(s) > maxTokenBytes {
		return "", 0, fmt.Errorf("%w: too long", ErrInvalidToken)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != refreshPrefix {
		return "", 0, fmt.Errorf("%w: not a refresh token", ErrInvalidToken)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[1])
	if err != nil || len(raw) != familyIDBytes {
		return "", 0, fmt.Errorf("%w: bad family", ErrInvalidToken)
	}
	gen, err = strconv.ParseUint(parts[2], 10, 64)
	if err != nil || strconv.FormatUint(gen, 10) != parts[2] {
		return "", 0, fmt.Errorf("%w: bad generation", ErrInvalidToken)
	}
	mac, err := base64.RawURLEncoding.Strict().DecodeString(parts[3])
	if err != nil {
		return "", 0, fmt.Errorf("%w: bad signature", ErrInvalidToken)
	}
	for _, k := range t.refresh {
		if hmac.Equal(mac, refreshMAC(k.Secret, parts[1], gen)) {
			return parts[1], gen, nil
		}
	}
	return "", 0, fmt.Errorf("%w: bad signature", ErrInvalidToken)
}
