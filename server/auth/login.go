package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/markbates/goth"
	"github.com/markbates/goth/providers/github"
	"github.com/markbates/goth/providers/google"
	"github.com/markbates/goth/providers/openidConnect"
	"golang.org/x/oauth2"
)

// Login failures. Finish returns them in a *LoginError: the client is told
// the sentinel's text (LoginError.Message), the audit gets an error
// wrapping the sentinel (and a cause with tokens and codes removed). The
// HTTP status each one answers with is noted after it.
var (
	// ErrUnknownProvider: the route names a provider that is not configured
	// (404).
	ErrUnknownProvider = errors.New("unknown login provider")
	// ErrProviderRefused: the identity provider sent the user back with an
	// error instead of a code, e.g. the user denied access (401).
	ErrProviderRefused = errors.New("the identity provider refused the login")
	// ErrNoLogin: the callback came without a valid login cookie: none was
	// sent, it was tampered with, sealed by unknown keys, or it expired
	// (400).
	ErrNoLogin = errors.New("no login in progress (missing, invalid or expired login cookie)")
	// ErrWrongProvider: the login was started with another provider than
	// the one whose callback was called (400).
	ErrWrongProvider = errors.New("the login was started with another provider")
	// ErrStateMismatch: the callback's state is not the one this browser's
	// login was started with: a forged or crossed callback (400).
	ErrStateMismatch = errors.New("state mismatch")
	// ErrLoginReplayed: the callback of this login was already served, on
	// this node or another (400).
	ErrLoginReplayed = errors.New("login already completed (replayed callback)")
	// ErrMissingCode: the callback carries no authorization code (400).
	ErrMissingCode = errors.New("missing authorization code")
	// ErrCodeExchange: the provider's token endpoint did not exchange the
	// code for tokens (401).
	ErrCodeExchange = errors.New("failed to exchange the authorization code")
	// ErrIDToken: the OpenID Connect ID token is missing or fails
	// verification (signature, issuer, audience, expiry, nonce, subject)
	// (401).
	ErrIDToken = errors.New("invalid ID token")
	// ErrProviderUser: the provider did not tell who the user is (401).
	ErrProviderUser = errors.New("failed to get the user from the identity provider")
)

// Defaults of LoginOptions.
const (
	DefaultStateTTL = 10 * time.Minute
	// DefaultProviderTimeout bounds each call to a provider when
	// LoginOptions.HTTPClient is nil (goth's calls take no context).
	DefaultProviderTimeout = 15 * time.Second
)

const (
	// loginSealName names what the login state is sealed as (the name the
	// login cookie always had), so a state cannot pass as another sealed
	// value.
	loginSealName = "plait_login"
	// loginConsumePrefix is the TokenStore key that makes a login state
	// single-use.
	loginConsumePrefix = "login-state:"
	// maxReturnTo keeps the login cookie well under 4 KiB.
	maxReturnTo = 1024
	randomBytes = 32
)

// User is who logged in, as the provider says.
type User struct {
	ID       string // Provider + ":" + Subject, e.g. "github:12345": the Plait user id
	Provider string // "github", "google" or "oidc"
	Subject  string // the provider's stable id of the user
	Email    string // empty unless the provider says it is verified (or does not say)
	Name     string
}

// ProviderConfig configures one login provider.
type ProviderConfig struct {
	Name         string // "github", "google" or "oidc"
	ClientID     string // required
	ClientSecret string // required
	// Issuer is the OpenID Connect issuer URL (oidc only, required):
	// discovery at Issuer + "/.well-known/openid-configuration". It must be
	// https, or http on a loopback address.
	Issuer string
	// Scopes default to: github "read:user user:email", google and oidc
	// "openid profile email".
	Scopes []string
}

// LoginOptions configures Login. Zero values of the optional fields take
// the documented defaults.
type LoginOptions struct {
	// PublicURL is the external base URL of the nodes, e.g.
	// https://plait.example.com (required). A provider's callback is
	// PublicURL + "/auth/" + name + "/callback": register that with it.
	PublicURL string
	Providers []ProviderConfig
	// Keys seal the login cookie (required); every node must have the same.
	Keys Keys
	// Store makes each login state single-use across nodes (required).
	Store TokenStore
	// HTTPClient makes the calls to providers (discovery, keys, token
	// exchange, user info). Default: a client with DefaultProviderTimeout.
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// StateTTL is how long a started login stays valid (default
	// DefaultStateTTL).
	StateTTL time.Duration
}

// Login runs the OAuth 2.0 / OpenID Connect login with goth over plain
// values, for the HTTP layer to adapt: Start says where to send the browser
// and what state to keep in its login cookie; Finish takes the callback's
// parameters and that state back and returns the authenticated User.
//
// Nodes are stateless: the state of a login in progress lives in a cookie
// sealed with the cluster's keys, so the callback may land on any node;
// the TokenStore makes each login state single-use. The state is always
// made by the node, never taken from the client. OpenID Connect ID tokens
// are verified with go-oidc (signature, issuer, audience, expiry) and the
// nonce checked here; goth's own unverified decoding of ID tokens is never
// used.
//
// A Login is immutable after NewLogin and safe for concurrent use.
type Login struct {
	opts      LoginOptions
	sealer    *Sealer
	providers map[string]*loginProvider
	names     []string
	client    *http.Client
}

type loginProvider struct {
	name     string
	goth     goth.Provider
	verifier *oidc.IDTokenVerifier // oidc only
	clientID string
	pkce     bool // goth passes code_verifier to the token endpoint
}

// loginState is what the login cookie carries between Start and Finish.
type loginState struct {
	Provider string `json:"p"`
	State    string `json:"s"`
	Nonce    string `json:"n,omitempty"`
	Verifier string `json:"v,omitempty"`
	ReturnTo string `json:"r"`
}

// NewLogin checks o, discovers the OpenID Connect provider (ctx bounds the
// discovery) and builds the goth providers. It refuses a configuration
// with a missing setting, naming it, so a node never starts with a
// provider it cannot use safely.
func NewLogin(ctx context.Context, o LoginOptions) (*Login, error) {
	base, err := checkPublicURL(o.PublicURL)
	if err != nil {
		return nil, err
	}
	if len(o.Keys.master) == 0 {
		return nil, errors.New("login: no auth keys (Keys)")
	}
	if o.Store == nil {
		return nil, errors.New("login: no token store (Store)")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.StateTTL <= 0 {
		o.StateTTL = DefaultStateTTL
	}
	client := o.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: DefaultProviderTimeout}
	}
	l := &Login{
		opts:      o,
		sealer:    NewSealer(o.Keys),
		providers: make(map[string]*loginProvider, len(o.Providers)),
		client:    client,
	}
	for _, pc := range o.Providers {
		if _, dup := l.providers[pc.Name]; dup {
			return nil, fmt.Errorf("login provider %q: configured twice", pc.Name)
		}
		p, err := l.newProvider(ctx, base.String(), pc)
		if err != nil {
			return nil, err
		}
		l.providers[pc.Name] = p
		l.names = append(l.names, pc.Name)
	}
	slices.Sort(l.names)
	return l, nil
}

func checkPublicURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("login: PublicURL %q: want an absolute http(s) URL without query, e.g. https://plait.example.com", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func (l *Login) newProvider(ctx context.Context, base string, pc ProviderConfig) (*loginProvider, error) {
	switch pc.Name {
	case "github", "google", "oidc":
	case "":
		return nil, errors.New("login provider: empty name (want github, google or oidc)")
	default:
		return nil, fmt.Errorf("login provider %q: unknown (want github, google or oidc)", pc.Name)
	}
	if pc.ClientID == "" {
		return nil, fmt.Errorf("login provider %q: missing client id (ClientID)", pc.Name)
	}
	if pc.ClientSecret == "" {
		return nil, fmt.Errorf("login provider %q: missing client secret (ClientSecret)", pc.Name)
	}
	if pc.Name != "oidc" && pc.Issuer != "" {
		return nil, fmt.Errorf("login provider %q: Issuer is for oidc only", pc.Name)
	}
	callback := base + "/auth/" + pc.Name + "/callback"
	scopes := pc.Scopes
	p := &loginProvider{name: pc.Name, clientID: pc.ClientID}
	switch pc.Name {
	case "github":
		if len(scopes) == 0 {
			scopes = []string{"read:user", "user:email"}
		}
		gp := github.New(pc.ClientID, pc.ClientSecret, callback, scopes...)
		gp.HTTPClient = l.client
		p.goth = gp
	case "google":
		if len(scopes) == 0 {
			scopes = []string{"openid", "profile", "email"}
		}
		gp := google.New(pc.ClientID, pc.ClientSecret, callback, scopes...)
		gp.HTTPClient = l.client
		p.goth = gp // goth's google session does not pass code_verifier: no PKCE
	case "oidc":
		if len(scopes) == 0 {
			scopes = []string{"openid", "profile", "email"}
		}
		if err := checkIssuer(pc.Issuer); err != nil {
			return nil, err
		}
		// Discover once, with go-oidc, through our client: it checks that
		// the document names the configured issuer. goth's openidConnect.New
		// would discover again with http.DefaultClient and check nothing, so
		// its provider is built from go-oidc's endpoints instead.
		op, err := oidc.NewProvider(oidc.ClientContext(ctx, l.client), pc.Issuer)
		if err != nil {
			return nil, fmt.Errorf("login provider \"oidc\": failed to discover issuer %q: %w", pc.Issuer, err)
		}
		ep := op.Endpoint()
		if ep.AuthURL == "" || ep.TokenURL == "" {
			return nil, fmt.Errorf("login provider \"oidc\": issuer %q: discovery names no authorization or token endpoint", pc.Issuer)
		}
		gp, err := openidConnect.NewCustomisedURL(pc.ClientID, pc.ClientSecret, callback,
			ep.AuthURL, ep.TokenURL, pc.Issuer, op.UserInfoEndpoint(), "", scopes...)
		if err != nil {
			return nil, fmt.Errorf("login provider \"oidc\": %w", err)
		}
		gp.HTTPClient = l.client
		gp.SkipUserInfoRequest = true
		p.goth = gp
		p.pkce = true
		p.verifier = op.Verifier(&oidc.Config{ClientID: pc.ClientID, Now: l.opts.Now})
	}
	return p, nil
}

// checkIssuer wants https, or http on a loopback address (a local test
// provider): discovery over plain HTTP elsewhere could be rewritten in
// transit, and with it the keys that sign the ID tokens.
func checkIssuer(s string) error {
	if s == "" {
		return errors.New("login provider \"oidc\": missing issuer URL (Issuer)")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("login provider \"oidc\": Issuer %q: want an absolute https URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("login provider \"oidc\": Issuer %q: want https (http only on a loopback address)", s)
}

// Providers lists the configured provider names, sorted.
func (l *Login) Providers() []string { return slices.Clone(l.names) }

// LoginStart is a started login: where to send the browser, and the state
// the HTTP layer keeps in the browser's login cookie until the callback.
type LoginStart struct {
	RedirectURL string        // the provider's authorization URL
	State       string        // the sealed login state: the login cookie's value
	TTL         time.Duration // how long State stays valid: the cookie's lifetime
}

// Start starts a login with provider (GET /auth/:provider/login?return_to=/path).
// It makes a fresh state, nonce and PKCE verifier and seals them (with the
// provider and returnTo, kept only if it is a local path) into the state
// that the login cookie carries. Errors: ErrUnknownProvider, or a failure
// to make the state.
func (l *Login) Start(provider, returnTo string) (LoginStart, error) {
	p := l.providers[provider]
	if p == nil {
		return LoginStart{}, ErrUnknownProvider
	}
	st := loginState{Provider: p.name, ReturnTo: safeReturnTo(returnTo)}
	var err error
	if st.State, err = randomString(); err != nil {
		return LoginStart{}, fmt.Errorf("failed to begin login: %w", err)
	}
	sess, err := p.goth.BeginAuth(st.State)
	if err != nil {
		return LoginStart{}, fmt.Errorf("failed to begin login: %w", err)
	}
	authURL, err := sess.GetAuthURL()
	if err != nil {
		return LoginStart{}, fmt.Errorf("failed to begin login: %w", err)
	}
	if p.verifier != nil {
		if st.Nonce, err = randomString(); err != nil {
			return LoginStart{}, fmt.Errorf("failed to begin login: %w", err)
		}
		u, err := url.Parse(authURL)
		if err != nil {
			return LoginStart{}, fmt.Errorf("failed to begin login: %w", err)
		}
		q := u.Query()
		q.Set("nonce", st.Nonce)
		if p.pkce {
			st.Verifier = oauth2.GenerateVerifier()
			q.Set("code_challenge", oauth2.S256ChallengeFromVerifier(st.Verifier))
			q.Set("code_challenge_method", "S256")
		}
		u.RawQuery = q.Encode()
		authURL = u.String()
	}
	sealed, err := l.sealer.Seal(loginSealName, st, l.opts.Now().Add(l.opts.StateTTL))
	if err != nil {
		return LoginStart{}, fmt.Errorf("failed to begin login: %w", err)
	}
	return LoginStart{RedirectURL: authURL, State: sealed, TTL: l.opts.StateTTL}, nil
}

// Callback is what the provider's redirect back brings (GET
// /auth/:provider/callback): the provider named in the route, the query's
// state, code and error, and the login cookie's value (the State of
// Start). The HTTP layer copies them out of its request buffers.
type Callback struct {
	Provider string
	State    string // the query's state
	Code     string // the query's code
	Error    string // the query's error: the provider refused
	Cookie   string // the login cookie; "" if none came
}

// LoginError is a failed callback.
type LoginError struct {
	// Message is what the client is told: the sentinel's text, and for
	// ErrProviderRefused the provider's OAuth error code.
	Message string
	// Err wraps one of the Err* sentinels (errors.Is) and a cause with
	// tokens and codes removed: for the audit.
	Err error
}

func (e *LoginError) Error() string { return e.Err.Error() }
func (e *LoginError) Unwrap() error { return e.Err }

// Finish finishes a login: it checks cb against the state of Start,
// makes the state single-use across nodes, exchanges the code and returns
// who logged in and the local path to send them back to. A refused login
// is a *LoginError; any other error is a failure of the TokenStore.
func (l *Login) Finish(ctx context.Context, cb Callback) (u User, returnTo string, err error) {
	p := l.providers[cb.Provider]
	if p == nil {
		return User{}, "", loginError(ErrUnknownProvider, "", nil)
	}
	if cb.Error != "" {
		return User{}, "", loginError(ErrProviderRefused, oauthErrorCode(cb.Error), nil)
	}
	var st loginState
	if cb.Cookie == "" {
		return User{}, "", loginError(ErrNoLogin, "", errors.New("no login cookie"))
	}
	if err := l.sealer.Open(loginSealName, cb.Cookie, &st, l.opts.Now()); err != nil {
		return User{}, "", loginError(ErrNoLogin, "", err)
	}
	if st.Provider != p.name {
		return User{}, "", loginError(ErrWrongProvider, "", nil)
	}
	if st.State == "" || subtle.ConstantTimeCompare([]byte(cb.State), []byte(st.State)) != 1 {
		return User{}, "", loginError(ErrStateMismatch, "", nil)
	}
	if cb.Code == "" {
		return User{}, "", loginError(ErrMissingCode, "", nil)
	}

	ctx, cancel := context.WithTimeout(ctx, DefaultProviderTimeout)
	defer cancel()
	fresh, err := l.opts.Store.ConsumeOnce(ctx, loginConsumePrefix+st.State, l.opts.StateTTL)
	if err != nil {
		return User{}, "", fmt.Errorf("failed to record the login state: %w", err)
	}
	if !fresh {
		return User{}, "", loginError(ErrLoginReplayed, "", nil)
	}

	sess, err := p.goth.BeginAuth(st.State)
	if err != nil {
		return User{}, "", loginError(ErrCodeExchange, "", err)
	}
	params := url.Values{"code": {cb.Code}}
	if p.pkce {
		params.Set("code_verifier", st.Verifier)
	}
	if err := noPanic(func() error { _, err := sess.Authorize(p.goth, params); return err }); err != nil {
		return User{}, "", loginError(ErrCodeExchange, "", err)
	}

	if p.verifier != nil {
		u, err = l.oidcUser(ctx, p, sess, st.Nonce)
		if err != nil {
			return User{}, "", loginError(ErrIDToken, "", err)
		}
	} else {
		u, err = fetchUser(p, sess)
		if err != nil {
			return User{}, "", loginError(ErrProviderUser, "", err)
		}
	}
	return u, st.ReturnTo, nil
}

// oidcUser verifies the raw ID token of sess and builds the user from its
// claims. It never calls goth's FetchUser: that decodes the ID token
// without checking its signature (and panics on a token without exp).
func (l *Login) oidcUser(ctx context.Context, p *loginProvider, sess goth.Session, nonce string) (User, error) {
	osess, ok := sess.(*openidConnect.Session)
	if !ok || osess.IDToken == "" {
		return User{}, errors.New("the token response has no id_token")
	}
	idt, err := p.verifier.Verify(ctx, osess.IDToken)
	if err != nil {
		return User{}, err // go-oidc's errors name claims, never the token
	}
	if idt.Expiry.IsZero() {
		return User{}, errors.New("the ID token has no expiry")
	}
	if nonce == "" || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return User{}, errors.New("the ID token's nonce is not this login's")
	}
	var cl struct {
		Email             string          `json:"email"`
		EmailVerified     json.RawMessage `json:"email_verified"`
		Name              string          `json:"name"`
		PreferredUsername string          `json:"preferred_username"`
		AuthorizedParty   string          `json:"azp"`
	}
	if err := idt.Claims(&cl); err != nil {
		return User{}, fmt.Errorf("failed to decode the ID token's claims: %w", err)
	}
	// OpenID Connect Core 3.1.3.7: with several audiences, azp must name us.
	if (len(idt.Audience) > 1 || cl.AuthorizedParty != "") && cl.AuthorizedParty != p.clientID {
		return User{}, errors.New("the ID token was issued to another party (azp)")
	}
	if err := checkSubject(idt.Subject); err != nil {
		return User{}, err
	}
	name := cl.Name
	if name == "" {
		name = cl.PreferredUsername
	}
	email := cl.Email
	if v := strings.Trim(string(cl.EmailVerified), `"`); v == "false" {
		email = ""
	}
	return newUser(p.name, idt.Subject, email, name), nil
}

// fetchUser asks GitHub or Google who the user is, with the access token
// that came straight from the provider's token endpoint over TLS.
func fetchUser(p *loginProvider, sess goth.Session) (User, error) {
	var gu goth.User
	err := noPanic(func() error {
		var err error
		gu, err = p.goth.FetchUser(sess)
		return err
	})
	if err != nil {
		return User{}, err
	}
	// goth's GitHub user id is strconv.Itoa of an int: "0" when absent.
	if gu.UserID == "0" && p.name == "github" {
		gu.UserID = ""
	}
	if err := checkSubject(gu.UserID); err != nil {
		return User{}, err
	}
	email := gu.Email
	if v, ok := gu.RawData["verified_email"].(bool); ok && !v { // Google
		email = ""
	}
	name := gu.Name
	if name == "" {
		name = gu.NickName
	}
	return newUser(p.name, gu.UserID, email, name), nil
}

func newUser(provider, subject, email, name string) User {
	return User{ID: provider + ":" + subject, Provider: provider, Subject: subject, Email: email, Name: name}
}

// checkSubject wants what OpenID Connect promises of sub: 1 to 255
// printable ASCII characters.
func checkSubject(s string) error {
	if s == "" || len(s) > 255 {
		return errors.New("the provider gave no usable user id")
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return errors.New("the provider gave no usable user id")
		}
	}
	return nil
}

// loginError is the failure sentinel, with detail (told to the client)
// and cause (redacted, for the audit).
func loginError(sentinel error, detail string, cause error) *LoginError {
	msg := sentinel.Error()
	if detail != "" {
		msg += ": " + detail
	}
	err := sentinel
	switch {
	case cause != nil && detail != "":
		err = fmt.Errorf("%w: %s: %w", sentinel, detail, redact(cause))
	case cause != nil:
		err = fmt.Errorf("%w: %w", sentinel, redact(cause))
	case detail != "":
		err = fmt.Errorf("%w: %s", sentinel, detail)
	}
	return &LoginError{Message: msg, Err: err}
}

// redact removes what may carry a secret from a provider error: goth's
// Google user request puts the access token in the URL, and token
// endpoints echo the code in their error descriptions (mockoidc does).
func redact(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if code := oauthErrorCode(re.ErrorCode); code != "" {
			return fmt.Errorf("token endpoint answered %d %s", status, code)
		}
		return fmt.Errorf("token endpoint answered %d", status)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		where := "provider"
		if u, perr := url.Parse(ue.URL); perr == nil {
			where = u.Scheme + "://" + u.Host + u.Path
		}
		inner := "request failed"
		if ue.Err != nil {
			inner = ue.Err.Error()
		}
		return fmt.Errorf("%s %s: %s", ue.Op, where, inner)
	}
	return err
}

// oauthErrorCode returns e if it looks like an OAuth error code
// ("access_denied"), else "": it comes from the query string.
func oauthErrorCode(e string) string {
	if len(e) > 64 {
		return ""
	}
	for i := 0; i < len(e); i++ {
		if ch := e[i]; ch != '_' && ch != '.' && ch != '-' && (ch < 'a' || ch > 'z') && (ch < '0' || ch > '9') {
			return ""
		}
	}
	return e
}

// noPanic runs f and turns a panic into an error: goth type-asserts
// provider responses (an id_token that is not a string panics in
// Authorize), and a provider must not be able to crash the node.
func noPanic(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("the provider's response could not be processed")
		}
	}()
	return f()
}

// safeReturnTo keeps return_to if it is a path on this site: it must
// start with one "/", and holds no backslash or control character
// (browsers drop tabs and newlines from URLs, so "/\t/evil.com" is
// "//evil.com", another site).
func safeReturnTo(s string) string {
	if s == "" || len(s) > maxReturnTo || s[0] != '/' || strings.HasPrefix(s, "//") {
		return "/"
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; ch < 0x20 || ch == 0x7f || ch == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return strings.Clone(s)
}

func randomString() (string, error) {
	var b [randomBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
