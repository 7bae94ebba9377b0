package redisauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/hub/rediskeys"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
)

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
	h, err := s.hash(ctx, s.docKey(doc), access.ErrNotFound)
	if err != nil {
		return access.DocAccess{}, err
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

// deleteScript removes a document's access hash and returns its version
// and the users who had a role. KEYS: doc.
var deleteScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'notfound'}
end
local out = {'ok', redis.call('HGET', KEYS[1], 'ver') or '0'}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'u:' then
    table.insert(out, string.sub(all[i], 3))
  end
end
redis.call('DEL', KEYS[1])
return out
`)

// Delete removes the document's hash in one script, then its users' index
// entries (each removed unless it holds a later version: a claim of the
// same id made meanwhile keeps its entry). An index write that fails
// leaves a stale entry, which DocsOf skips.
func (s *Store) Delete(ctx context.Context, doc protocol.DocumentID) error {
	if err := hub.CheckStoreCall(ctx, false, doc); err != nil {
		return fmt.Errorf("failed to delete the access of %s: %w", doc, err)
	}
	res, err := reply(deleteScript.Run(ctx, s.c, []string{s.docKey(doc)}).Result())
	if err == nil && (len(res) == 0 || res[0] == "notfound") {
		err = access.ErrNotFound
	}
	if err == nil && len(res) < 2 {
		err = fmt.Errorf("unexpected script reply %q", res)
	}
	if err != nil {
		return fmt.Errorf("failed to delete the access of %s: %w", doc, err)
	}
	ver, err := strconv.ParseInt(res[1], 10, 64)
	if err != nil {
		return fmt.Errorf("failed to delete the access of %s: version %q", doc, res[1])
	}
	for _, u := range res[2:] {
		if err := indexScript.Run(ctx, s.c, []string{s.userDocsKey(u)}, string(doc), strconv.FormatInt(ver+1, 10), "0").Err(); err != nil {
			return fmt.Errorf("deleted the access of %s, but failed to unindex it for %q: %w", doc, u, err)
		}
	}
	return nil
}

// ClaimedDocs returns the id of every document that has an access hash
// (every claimed document), sorted. It walks the keyspace with SCAN (on
// every master of a Redis Cluster), which does not block Redis; documents
// claimed while it runs may or may not be listed. Backups (server/backup)
// use it to find the access lists to export.
func (s *Store) ClaimedDocs(ctx context.Context) ([]protocol.DocumentID, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("failed to list claimed documents: %w", err)
	}
	ids, err := rediskeys.ScanIDs(ctx, s.c, s.prefix+":auth:{doc:", "}")
	if err != nil {
		return nil, fmt.Errorf("failed to list claimed documents: %w", err)
	}
	return ids, nil
}
