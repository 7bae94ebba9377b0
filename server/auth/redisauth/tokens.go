package redisauth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/server/auth"
)

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
	h, err := s.hash(ctx, s.familyKey(id), auth.ErrNotFound)
	if err != nil {
		return auth.Family{}, err
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
