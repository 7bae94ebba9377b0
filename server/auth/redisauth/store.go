package redisauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub/rediskeys"
	"github.com/plaithub/plait/hub/redisstore"
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

// esc makes a name safe inside its key's hash tag.
func esc(s string) string { return rediskeys.Escape(s) }

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

// hash reads the hash at key; notFound if it does not exist.
func (s *Store) hash(ctx context.Context, key string, notFound error) (map[string]string, error) {
	h, err := s.c.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, err
	}
	if len(h) == 0 {
		return nil, notFound
	}
	return h, nil
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
// nanosecond times do not fit them exactly. The digits compare with
// redisstore's le.
const luaLess = redisstore.LuaDecimalLE + `
local function lt(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then
    return na
  end
  if na then
    a, b = string.sub(b, 2), string.sub(a, 2)
  end
  return not le(b, a)
end
`
