// Package rediskeys holds what Plait's Redis stores (hub/redisstore,
// server/auth/redisauth) share about their keys: the escaping that keeps a name inside a cluster hash tag, and the SCAN over
// every master that lists the documents a family of keys is about.
package rediskeys

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/plaithub/plait/pkg/protocol"
)

// escaper makes a name safe inside a hash tag: no brace may end (or, for
// a name starting with '}', empty) the tag early. Escaping '%' too keeps
// the mapping one-to-one.
var escaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// unescaper undoes escaper: its escapes are unambiguous, so one pass left
// to right restores the name.
var unescaper = strings.NewReplacer("%7B", "{", "%7D", "}", "%25", "%")

// Escape returns s made safe inside a hash tag ({...}); most names need
// no escaping and are returned as they are.
func Escape(s string) string {
	if !strings.ContainsAny(s, "%{}") {
		return s
	}
	return escaper.Replace(s)
}

// Unescape undoes Escape.
func Unescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	return unescaper.Replace(s)
}

// GlobEscape quotes the characters a SCAN MATCH pattern gives a meaning.
func GlobEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^-`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ScanIDs returns, sorted and once each, the document ids of the keys
// head + Escape(id) + tail, found with SCAN on c, or on every master of a
// Redis Cluster (ForEachMaster). SCAN does not block Redis; keys created
// or deleted while it runs may or may not be listed. A key whose middle is
// empty or holds a brace is not one of ours and is skipped.
func ScanIDs(ctx context.Context, c redis.Cmdable, head, tail string) ([]protocol.DocumentID, error) {
	pattern := GlobEscape(head) + "*" + GlobEscape(tail)
	var mu sync.Mutex
	seen := make(map[protocol.DocumentID]struct{})
	scan := func(ctx context.Context, c redis.Cmdable) error {
		it := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for it.Next(ctx) {
			e, ok := strings.CutPrefix(it.Val(), head)
			if !ok {
				continue
			}
			if e, ok = strings.CutSuffix(e, tail); !ok || e == "" || strings.ContainsAny(e, "{}") {
				continue
			}
			mu.Lock() // ForEachMaster scans the masters concurrently
			seen[protocol.DocumentID(Unescape(e))] = struct{}{}
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	ids := make([]protocol.DocumentID, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}
