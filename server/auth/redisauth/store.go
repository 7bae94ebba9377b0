package redisauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
	"github.com/plaithub/plait/server/auth"
)

// DefaultPrefix starts every key when the prefix given to New or
// NewEvents is empty (the document stores use the same default).
const DefaultPrefix = "plait"

// FamilyRetention is how long a family's key lives after the family
// expired (its Redis TTL is set to Expires + FamilyRetention on every
// write of Expires). By then no token of the family is valid anyway, and
// an unknown family counts as revoked.
const FamilyRetention = 24 * time.Hour

// docsPipelineSize is how many documents DocsOf confirms per pipeline.
const docsPipelineSize = 256

// errFamilyExists refuses a CreateFamily whose id is taken: overwriting
// would un-revoke a revoked family.
var errFamilyExists = errors.New("family already exists")

var (
	_ auth.TokenStore = (*Store)(nil)
	_ access.ACL      = (*Store)(nil)
)

// Store is an auth.TokenStore and access.ACL in Redis. Create it with New;
// the zero value is not usable. It holds no state of its own: any number of
// Stores (one per node) may share a Redis and a prefix.
type Store struct {
	c      redis.UniversalClient
	prefix string
}

// New returns a Store on client with keys starting with prefix (empty:
// DefaultPrefix; it may not contain '{' or '}'), after checking with a
// PING bounded by ctx that Redis answers. The caller keeps owning client.
func New(ctx context.Context, client redis.UniversalClient, prefix string) (*Store, error) {
	if client == nil {
		return nil, errors.New("failed to create redis auth store: nil client")
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("failed to create redis auth store: prefix %q contains a brace", prefix)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("failed to reach redis: %w", err)
	}
	return &Store{c: client, prefix: prefix}, nil
}

// ---- keys ----

// escaper makes a name safe inside a hash tag: no brace may end the tag
// early. Escaping '%' too keeps the mapping one-to-one.
var escaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

func esc(s string) string {
	if !strings.ContainsAny(s, "%{}") {
		return s
	}
	return escaper.Replace(s)
}

func (s *Store) familyKey(id string) string { return s.prefix + ":auth:{fam:" + esc(id) + "}" }
func (s *Store) cutoffKey(user string) string {
	return s.prefix + ":auth:{user:" + esc(user) + "}:cutoff"
}
func (s *Store) userDocsKey(user string) string {
	return s.prefix + ":auth:{user:" + esc(user) + "}:docs"
}
func (s *Store) onceKey(key string) string { return s.prefix + ":auth:{once:" + esc(key) + "}" }
func (s *Store) docKey(doc protocol.DocumentID) string {
	return s.prefix + ":auth:{doc:" + esc(string(doc)) + "}"
}

// ---- encoding ----

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// nanos is t in decimal Unix nanoseconds, the form times are stored in;
// times that int64 nanoseconds cannot hold (before 1678, after 2262) are
// refused.
func nanos(t time.Time) (string, error) {
	if t.Before(minTime) || t.After(maxTime) {
		return "", fmt.Errorf("time %v out of range", t)
	}
	return strconv.FormatInt(t.UnixNano(), 10), nil
}

// clampNanos is t in Unix nanoseconds, clamped to what int64 holds: for
// comparisons only.
func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func parseNanos(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("malformed time %q", s)
	}
	return time.Unix(0, n), nil
}

// retentionMs is the PEXPIREAT of a family expiring at exp.
func retentionMs(exp time.Time) int64 { return exp.Add(FamilyRetention).UnixMilli() }

// newOp returns a random operation id. A script that changes something
// records it, so that when go-redis retries the script after a connection
// failure that lost the answer, the retry recognises its own first run and
// reports success instead of a reuse, a replay or a claim (see the package
// doc).
func newOp() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// reply reads a script's answer: an array of strings whose first is the
// outcome.
func reply(v any, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return nil, fmt.Errorf("unexpected script reply %v", v)
	}
	out := make([]string, len(arr))
	for i, x := range arr {
		switch x := x.(type) {
		case string:
			out[i] = x
		case int64:
			out[i] = strconv.FormatInt(x, 10)
		case nil:
		default:
			return nil, fmt.Errorf("unexpected script reply element %T", x)
		}
	}
	return out, nil
}

// luaLess is lt(a, b) for decimal integers (an optional '-', no leading
// zeros), exact at any size: Lua numbers are doubles, and generations and
// nanosecond times do not fit them exactly.
const luaLess = `
local function lt(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then
    return na
  end
  if na then
    a, b = string.sub(b, 2), string.sub(a, 2)
  end
  if #a ~= #b then
    return #a < #b
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return false
end
`

// ---- TokenStore ----

// createScript stores a family unless its key exists. KEYS: family.
// ARGV: user, gen, created, exp, revoked ("0"/"1"), PEXPIREAT ms, op.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'op') == ARGV[7] then
    return 1
  end
  return 0
end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'gen', ARGV[2], 'created', ARGV[3], 'exp', ARGV[4], 'revoked', ARGV[5], 'op', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
return 1
`)

// CreateFamily stores f in one script; an id already taken is refused
// (overwriting it could un-revoke a family). The key expires
// FamilyRetention after f.Expires.
func (s *Store) CreateFamily(ctx context.Context, f auth.Family) error {
	if err := s.createFamily(ctx, f, newOp()); err != nil {
		return fmt.Errorf("failed to create family %q: %w", f.ID, err)
	}
	return nil
}

func (s *Store) createFamily(ctx context.Context, f auth.Family, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.ID == "" || f.User == "" {
		return errors.New("empty id or user")
	}
	created, err := nanos(f.Created)
	if err != nil {
		return err
	}
	exp, err := nanos(f.Expires)
	if err != nil {
		return err
	}
	revoked := "0"
	if f.Revoked {
		revoked = "1"
	}
	ok, err := createScript.Run(ctx, s.c, []string{s.familyKey(f.ID)},
		f.User, strconv.FormatUint(f.Gen, 10), created, exp, revoked, retentionMs(f.Expires), op).Int()
	if err != nil {
		return err
	}
	if ok != 1 {
		return errFamilyExists
	}
	return nil
}

// rotateScript is Rotate. KEYS: family. ARGV: gen, gen+1, new exp, now,
// PEXPIREAT ms, op. The reuse check comes first, so that of concurrent
// rotations every loser reports the reuse, even after the first loser
// revoked the family.
var rotateScript = redis.NewScript(luaLess + `
local f = redis.call('HMGET', KEYS[1], 'user', 'gen', 'created', 'exp', 'revoked', 'op')
if not f[1] then
  return {'notfound'}
end
if f[6] == ARGV[6] then
  return {'ok', f[1], f[2], f[3], f[4]}
end
if lt(ARGV[1], f[2]) then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return {'reused'}
end
if f[5] == '1' then
  return {'revoked'}
end
if ARGV[1] ~= f[2] then
  return {'newer', f[2]}
end
if not lt(ARGV[4], f[4]) then
  return {'expired'}
end
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'exp', ARGV[3], 'op', ARGV[6])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
return {'ok', f[1], ARGV[2], f[3], ARGV[3]}
`)

// Rotate runs one script on the family's key, which Redis runs atomically:
// of concurrent rotations of one generation the first wins and the others
// find an older generation, a reuse, whose revocation the script writes
// before it answers. Expiry is checked against this node's clock.
func (s *Store) Rotate(ctx context.Context, id string, gen uint64, exp time.Time) (auth.Family, error) {
	f, err := s.rotate(ctx, id, gen, exp, newOp())
	if err != nil {
		return auth.Family{}, fmt.Errorf("failed to rotate family %q: %w", id, err)
	}
	return f, nil
}

func (s *Store) rotate(ctx context.Context, id string, gen uint64, exp time.Time, op string) (auth.Family, error) {
	if err := ctx.Err(); err != nil {
		return auth.Family{}, err
	}
	if gen == math.MaxUint64 {
		return auth.Family{}, fmt.Errorf("generation %d cannot be rotated", gen)
	}
	expN, err := nanos(exp)
	if err != nil {
		return auth.Family{}, err
	}
	res, err := reply(rotateScript.Run(ctx, s.c, []string{s.familyKey(id)},
		strconv.FormatUint(gen, 10), strconv.FormatUint(gen+1, 10), expN,
		strconv.FormatInt(clampNanos(time.Now()), 10), retentionMs(exp), op).Result())
	if err != nil {
		return auth.Family{}, err
	}
	switch res[0] {
	case "ok":
		if len(res) != 5 {
			return auth.Family{}, fmt.Errorf("unexpected script reply %q", res)
		}
		return parseFamily(id, map[string]string{"user": res[1], "gen": res[2], "created": res[3], "exp": res[4], "revoked": "0"})
	case "notfound":
		return auth.Family{}, auth.ErrNotFound
	case "reused":
		return auth.Family{}, auth.ErrTokenReused
	case "revoked":
		return auth.Family{}, auth.ErrRevoked
	case "newer":
		return auth.Family{}, fmt.Errorf("generation %d is newer than the stored %s: %w", gen, res[1], auth.ErrRevoked)
	case "expired":
		return auth.Family{}, auth.ErrExpired
	}
	return auth.Family{}, fmt.Errorf("unexpected script reply %q", res)
}

func parseFamily(id string, h map[string]string) (auth.Family, error) {
	f := auth.Family{ID: id, User: h["user"], Revoked: h["revoked"] == "1"}
	var err error
	if f.Gen, err = strconv.ParseUint(h["gen"], 10, 64); err != nil {
		return auth.Family{}, fmt.Errorf("malformed generation %q", h["gen"])
	}
	if f.Created, err = parseNanos(h["created"]); err != nil {
		return auth.Family{}, err
	}
	if f.Expires, err = parseNanos(h["exp"]); err != nil {
		return auth.Family{}, err
	}
	if f.User == "" {
		return auth.Family{}, errors.New("family without a user")
	}
	return f, nil
}

// Family reads the family's hash.
func (s *Store) Family(ctx context.Context, id string) (auth.Family, error) {
	f, err := s.family(ctx, id)
	if err != nil {
		return auth.Family{}, fmt.Errorf("failed to read family %q: %w", id, err)
	}
	return f, nil
}

func (s *Store) family(ctx context.Context, id string) (auth.Family, error) {
	if err := ctx.Err(); err != nil {
		return auth.Family{}, err
	}
	h, err := s.c.HGetAll(ctx, s.familyKey(id)).Result()
	if err != nil {
		return auth.Family{}, err
	}
	if len(h) == 0 {
		return auth.Family{}, auth.ErrNotFound
	}
	return parseFamily(id, h)
}

// revokeFamilyScript marks a family revoked. KEYS: family.
var revokeFamilyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 1
`)

// RevokeFamily marks the family revoked, in one script that checks it
// exists.
func (s *Store) RevokeFamily(ctx context.Context, id string) error {
	err := ctx.Err()
	if err == nil {
		var ok int
		ok, err = revokeFamilyScript.Run(ctx, s.c, []string{s.familyKey(id)}).Int()
		if err == nil && ok != 1 {
			err = auth.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("failed to revoke family %q: %w", id, err)
	}
	return nil
}

// revokeUserScript moves a user's cut-off forward, never back. KEYS:
// cut-off. ARGV: at.
var revokeUserScript = redis.NewScript(luaLess + `
local cur = redis.call('GET', KEYS[1])
if cur and not lt(cur, ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`)

// RevokeUser moves user's cut-off to at unless it is there or later
// already, in one script (the compare and the write are atomic).
func (s *Store) RevokeUser(ctx context.Context, user string, at time.Time) error {
	err := ctx.Err()
	if err == nil && user == "" {
		err = errors.New("empty user")
	}
	var atN string
	if err == nil {
		atN, err = nanos(at)
	}
	if err == nil {
		err = revokeUserScript.Run(ctx, s.c, []string{s.cutoffKey(user)}, atN).Err()
	}
	if err != nil {
		return fmt.Errorf("failed to revoke user %q: %w", user, err)
	}
	return nil
}

// Revoked reads the family and the user's cut-off in one pipeline (two
// keys, in two slots of a cluster: two reads, not one snapshot; each
// revocation only ever moves one way, so the answer is never less revoked
// than the state before the call). A family issued to another user than
// the token names counts as revoked too (fail closed).
func (s *Store) Revoked(ctx context.Context, user, family string, issuedAt time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return true, fmt.Errorf("failed to check revocation of family %q: %w", family, err)
	}
	var fam *redis.SliceCmd
	var cut *redis.StringCmd
	_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		fam = p.HMGet(ctx, s.familyKey(family), "user", "revoked")
		cut = p.Get(ctx, s.cutoffKey(user))
		return nil
	})
	f, err := fam.Result()
	if err == nil {
		err = cut.Err()
		if errors.Is(err, redis.Nil) {
			err = nil
		}
	}
	if err != nil {
		return true, fmt.Errorf("failed to check revocation of family %q: %w", family, err)
	}
	if len(f) != 2 || f[0] != user || f[1] == "1" {
		return true, nil
	}
	if c := cut.Val(); c != "" {
		at, err := strconv.ParseInt(c, 10, 64)
		if err != nil {
			return true, fmt.Errorf("failed to check revocation of user %q: malformed cut-off %q", user, c)
		}
		if clampNanos(issuedAt) <= at {
			return true, nil
		}
	}
	return false, nil
}

// consumeScript records a key with a ttl unless it is there. KEYS: key.
// ARGV: op, ttl ms.
var consumeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  return 1
end
if v then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// ConsumeOnce records key with the ttl (rounded up to a millisecond, the
// resolution of Redis expiry) in one script: of concurrent calls, on any
// nodes, the first reports true.
func (s *Store) ConsumeOnce(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ok, err := s.consumeOnce(ctx, key, ttl, newOp())
	if err != nil {
		return false, fmt.Errorf("failed to consume key %q: %w", key, err)
	}
	return ok, nil
}

func (s *Store) consumeOnce(ctx context.Context, key string, ttl time.Duration, op string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if key == "" || ttl <= 0 {
		return false, fmt.Errorf("empty key or ttl %v not positive", ttl)
	}
	ms := (ttl + time.Millisecond - 1) / time.Millisecond
	n, err := consumeScript.Run(ctx, s.c, []string{s.onceKey(key)}, op, int64(ms)).Int()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// ---- ACL ----

// userField is the field of user's role in a document's hash.
func userField(user string) string { return "u:" + user }

// claimScript creates a document's access hash unless it exists. KEYS:
// doc. ARGV: user field, created, op. Answers {outcome, version, the
// user's role now}.
var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  local ver = redis.call('HGET', KEYS[1], 'ver') or '0'
  local role = redis.call('HGET', KEYS[1], ARGV[1]) or 'none'
  if redis.call('HGET', KEYS[1], 'op') == ARGV[3] then
    return {'ok', ver, role}
  end
  return {'claimed', ver, role}
end
redis.call('HSET', KEYS[1], 'created', ARGV[2], 'link', 'none', 'ver', '1', 'op', ARGV[3], ARGV[1], 'owner')
return {'ok', '1', 'owner'}
`)

// shareScript changes one user's role, refusing to demote the last owner.
// KEYS: doc. ARGV: user field, role name, op. Answers {outcome, version,
// the user's role now}.
var shareScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'notfound', '0', 'none'}
end
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or 'none'
if cur == 'owner' and ARGV[2] ~= 'owner' then
  local owners = 0
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'u:' and all[i + 1] == 'owner' then
      owners = owners + 1
    end
  end
  if owners < 2 then
    return {'lastowner', redis.call('HGET', KEYS[1], 'ver') or '0', cur}
  end
end
if ARGV[2] == 'none' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('HSET', KEYS[1], 'op', ARGV[3])
return {'ok', tostring(redis.call('HINCRBY', KEYS[1], 'ver', 1)), ARGV[2]}
`)

// indexScript applies a document's version to a user's index: the entry
// is set (present "1") or removed ("0") unless the index already holds the
// same or a later version, so writes that arrive out of order never undo a
// later one. KEYS: user's docs. ARGV: doc, version, present.
var indexScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
`)

// setLinkScript sets the link role of an existing document. KEYS: doc.
// ARGV: role name.
var setLinkScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'link', ARGV[1])
return 1
`)

// pending is the version of an index entry written before its document
// changed: lower than any real version, so the document's write replaces
// or removes it.
const pending = "0"

// change runs a document script, with the user's index around it (see
// "Documents of a user" in the package doc): before a change that may give
// user a role, a pending entry (HSETNX, so a later version is kept); after
// it, the document's version and whether user has a role now, whatever the
// outcome (a refused claim removes the pending entry again). It returns
// the script's outcome.
func (s *Store) change(ctx context.Context, doc protocol.DocumentID, user string, mayAdd bool, script *redis.Script, args ...any) (string, error) {
	idx := s.userDocsKey(user)
	if mayAdd {
		if err := s.c.HSetNX(ctx, idx, string(doc), pending).Err(); err != nil {
			return "", fmt.Errorf("failed to index: %w", err)
		}
	}
	res, err := reply(script.Run(ctx, s.c, []string{s.docKey(doc)}, args...).Result())
	if err != nil {
		return "", err
	}
	if len(res) != 3 {
		return "", fmt.Errorf("unexpected script reply %q", res)
	}
	if res[0] == "notfound" {
		// Nothing to confirm; a pending entry is left for DocsOf to skip
		// (removing it could race with a claim of the same document).
		return res[0], nil
	}
	present := "1"
	if res[2] == "none" {
		present = "0"
	}
	if err := indexScript.Run(ctx, s.c, []string{idx}, string(doc), res[1], present).Err(); err != nil {
		return "", fmt.Errorf("failed to index: %w", err)
	}
	return res[0], nil
}

// Claim creates the document's access in one script, between the two
// index writes of change.
func (s *Store) Claim(ctx context.Context, doc protocol.DocumentID, user string, at time.Time) error {
	err := hub.CheckStoreCall(ctx, false, doc)
	if err == nil && user == "" {
		err = errors.New("empty user")
	}
	var atN string
	if err == nil {
		atN, err = nanos(at)
	}
	var outcome string
	if err == nil {
		outcome, err = s.change(ctx, doc, user, true, claimScript, userField(user), atN, newOp())
	}
	if err == nil && outcome == "claimed" {
		err = access.ErrClaimed
	}
	if err != nil {
		return fmt.Errorf("failed to claim %s: %w", doc, err)
	}
	return nil
}

// Share changes the user's role in one script on the document's key, which
// counts the owners (atomic per document: of two concurrent demotions of
// the last two owners, one is refused), between the two index writes of
// change.
func (s *Store) Share(ctx context.Context, doc protocol.DocumentID, user string, role hub.Role) error {
	err := hub.CheckStoreCall(ctx, false, doc)
	if err == nil && user == "" {
		err = errors.New("empty user")
	}
	if err == nil && (role < hub.RoleNone || role > hub.RoleOwner) {
		err = fmt.Errorf("role %d: %w", int(role), access.ErrInvalidRole)
	}
	var outcome string
	if err == nil {
		outcome, err = s.change(ctx, doc, user, role != hub.RoleNone, shareScript, userField(user), role.String(), newOp())
	}
	if err == nil {
		switch outcome {
		case "notfound":
			err = access.ErrNotFound
		case "lastowner":
			err = access.ErrLastOwner
		}
	}
	if err != nil {
		return fmt.Errorf("failed to share %s with %q: %w", doc, user, err)
	}
	return nil
}

// SetLink sets the link role in one script that checks the document
// exists.
func (s *Store) SetLink(ctx context.Context, doc protocol.DocumentID, role hub.Role) error {
	err := hub.CheckStoreCall(ctx, false, doc)
	if err == nil && role != hub.RoleNone && role != hub.RoleViewer && role != hub.RoleEditor {
		err = fmt.Errorf("role %d: %w", int(role), access.ErrInvalidRole)
	}
	if err == nil {
		var ok int
		ok, err = setLinkScript.Run(ctx, s.c, []string{s.docKey(doc)}, role.String()).Int()
		if err == nil && ok != 1 {
			err = access.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("failed to set the link role of %s: %w", doc, err)
	}
	return nil
}

// Access reads the document's hash.
func (s *Store) Access(ctx context.Context, doc protocol.DocumentID) (access.DocAccess, error) {
	a, err := s.access(ctx, doc)
	if err != nil {
		return access.DocAccess{}, fmt.Errorf("failed to read access to %s: %w", doc, err)
	}
	return a, nil
}

func (s *Store) access(ctx context.Context, doc protocol.DocumentID) (access.DocAccess, error) {
	if err := hub.CheckStoreCall(ctx, false, doc); err != nil {
		return access.DocAccess{}, err
	}
	h, err := s.c.HGetAll(ctx, s.docKey(doc)).Result()
	if err != nil {
		return access.DocAccess{}, err
	}
	if len(h) == 0 {
		return access.DocAccess{}, access.ErrNotFound
	}
	a := access.DocAccess{Users: make(map[string]hub.Role)}
	if a.Created, err = parseNanos(h["created"]); err != nil {
		return access.DocAccess{}, err
	}
	if a.Link, err = access.ParseRole(h["link"]); err != nil {
		return access.DocAccess{}, err
	}
	for k, v := range h {
		u, ok := strings.CutPrefix(k, "u:")
		if !ok {
			continue
		}
		r, err := access.ParseRole(v)
		if err != nil || r == hub.RoleNone {
			return access.DocAccess{}, fmt.Errorf("malformed role of %q: %q", u, v)
		}
		a.Users[u] = r
	}
	return a, nil
}

// DocsOf reads the user's index and confirms every entry against its
// document's hash (pipelined, docsPipelineSize at a time): an entry whose
// document gives the user no role is stale and skipped, and the role
// reported is the document's. Sorted by id.
func (s *Store) DocsOf(ctx context.Context, user string) ([]access.UserDoc, error) {
	docs, err := s.docsOf(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("failed to list the documents of %q: %w", user, err)
	}
	return docs, nil
}

func (s *Store) docsOf(ctx context.Context, user string) ([]access.UserDoc, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ids, err := s.c.HKeys(ctx, s.userDocsKey(user)).Result()
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	var out []access.UserDoc
	field := userField(user)
	for chunk := range slices.Chunk(ids, docsPipelineSize) {
		cmds := make([]*redis.StringCmd, len(chunk))
		_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range chunk {
				cmds[i] = p.HGet(ctx, s.docKey(protocol.DocumentID(id)), field)
			}
			return nil
		})
		for i, cmd := range cmds {
			v, err := cmd.Result()
			if errors.Is(err, redis.Nil) {
				continue // stale: the user has no role there (any more)
			}
			if err != nil {
				return nil, err
			}
			r, err := access.ParseRole(v)
			if err != nil {
				return nil, err
			}
			out = append(out, access.UserDoc{ID: protocol.DocumentID(chunk[i]), Role: r})
		}
	}
	return out, nil
}
