package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/gofiber/fiber/v2"

	"github.com/plaithub/plait/hub"
	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/access"
)

// Quotas (issue 17, item 7): how many documents one user may own
// (--max-docs-per-user), and overrides of --max-doc-bytes for the
// documents of some users or for some documents (--quota-file). The size
// bound is the one --max-doc-bytes sets, enforced by the hub on every
// sync message (hub.Options.DocMaxBytes); this file decides its value per
// document.

// limitDocsPerUser labels plait_limit_hits_total for a document refused
// because its creator owns --max-docs-per-user documents already.
const limitDocsPerUser = "docs_per_user"

// quotaFile is the JSON of --quota-file.
type quotaFile struct {
	// Users' overrides, by user id ("oidc:<sub>", "github:<id>").
	Users map[string]userQuota `json:"users"`
	// Documents' overrides, by document id (bs58check, as in URLs
	// without "automerge:").
	Documents map[string]docQuota `json:"documents"`
}

// userQuota overrides the bounds of one user; a field left out keeps the
// node's flag.
type userQuota struct {
	// MaxDocs replaces --max-docs-per-user for this user (0 = no limit).
	MaxDocs *int `json:"maxDocs"`
	// MaxDocBytes replaces --max-doc-bytes for the documents this user
	// owns (0 = no limit). With several owners the largest bound wins.
	MaxDocBytes *int `json:"maxDocBytes"`
}

// docQuota overrides the bounds of one document; it wins over its
// owners'.
type docQuota struct {
	MaxDocBytes *int `json:"maxDocBytes"` // 0 = no limit
}

// quotas are the parsed overrides; the zero value has none.
type quotas struct {
	users map[string]userQuota
	docs  map[protocol.DocumentID]int // bytes; hub.Unlimited for none
}

// readQuotaFile parses --quota-file: unknown fields, bad ids and negative
// bounds are errors.
func readQuotaFile(path string) (quotas, error) {
	if path == "" {
		return quotas{}, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return quotas{}, fmt.Errorf("failed to read quota-file: %w", err)
	}
	var f quotaFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return quotas{}, fmt.Errorf("invalid quota-file %s: %w", path, err)
	}
	q := quotas{users: make(map[string]userQuota, len(f.Users)), docs: make(map[protocol.DocumentID]int, len(f.Documents))}
	for u, uq := range f.Users {
		if u == "" || (uq.MaxDocs != nil && *uq.MaxDocs < 0) || (uq.MaxDocBytes != nil && *uq.MaxDocBytes < 0) {
			return quotas{}, fmt.Errorf("invalid quota-file %s: user %q: bounds must be >= 0 (0 = no limit)", path, u)
		}
		q.users[u] = uq
	}
	for raw, dq := range f.Documents {
		id, err := protocol.ParseDocumentID(raw)
		if err != nil {
			return quotas{}, fmt.Errorf("invalid quota-file %s: document %q: %w", path, raw, err)
		}
		if dq.MaxDocBytes == nil || *dq.MaxDocBytes < 0 {
			return quotas{}, fmt.Errorf("invalid quota-file %s: document %q: maxDocBytes must be given, >= 0 (0 = no limit)", path, raw)
		}
		q.docs[id] = unlimitedIfZero(*dq.MaxDocBytes)
	}
	return q, nil
}

func unlimitedIfZero(n int) int {
	if n == 0 {
		return hub.Unlimited
	}
	return n
}

// docMaxBytes is hub.Options.DocMaxBytes: the document's own override,
// else the largest of its owners' overrides, else 0 (--max-doc-bytes).
// The API's writes of document content check the same bound (413).
func (n *Node) docMaxBytes(ctx context.Context, id protocol.DocumentID) (int, error) {
	if b, ok := n.quotas.docs[id]; ok {
		return b, nil
	}
	if len(n.quotas.users) == 0 || n.auth == nil {
		return 0, nil
	}
	acc, err := n.auth.acl.Access(ctx, id)
	if errors.Is(err, access.ErrNotFound) {
		return 0, nil // unclaimed: nobody's quota yet (asked again once claimed)
	}
	if err != nil {
		return 0, err
	}
	best, found := 0, false
	for u, r := range acc.Users {
		uq, ok := n.quotas.users[u]
		if r != hub.RoleOwner || !ok || uq.MaxDocBytes == nil {
			continue
		}
		b := unlimitedIfZero(*uq.MaxDocBytes)
		if !found || b == hub.Unlimited || (best != hub.Unlimited && b > best) {
			best = b
		}
		found = true
	}
	return best, nil
}

// checkDocQuota refuses (429, counted, audited) a new document for a user
// who owns their maximum already. Concurrent creations by one user may
// pass it by as many as are in flight.
func (n *Node) checkDocQuota(ctx context.Context, c *fiber.Ctx, user string) error {
	limit := n.cfg.MaxDocsPerUser
	if uq, ok := n.quotas.users[user]; ok && uq.MaxDocs != nil {
		limit = *uq.MaxDocs
	}
	if limit <= 0 {
		return nil
	}
	docs, err := n.auth.acl.DocsOf(ctx, user)
	if err != nil {
		return errUnavailable
	}
	owned := 0
	for _, d := range docs {
		if d.Role == hub.RoleOwner {
			owned++
		}
	}
	if owned < limit {
		return nil
	}
	n.m.LimitHits.WithLabelValues(limitDocsPerUser).Inc()
	msg := fmt.Sprintf("document quota reached: you own %d documents, the most allowed (max-docs-per-user %d); delete some first", owned, limit)
	n.auditRequest(c, auditEvent{Event: "limit", User: user, Code: fiber.StatusTooManyRequests, Reason: msg})
	return fiber.NewError(fiber.StatusTooManyRequests, msg)
}
