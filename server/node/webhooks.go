package node

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/webhook"
)

// Webhooks (issue 17, item 6; docs/api.md, "Webhooks"): the node emits
// document.created (a claim, or without login the first store of a
// document), document.changed (debounced, from the hub's OnStored),
// document.deleted and access.changed; the webhook package queues,
// signs and delivers them, once per cluster.

// startWebhooks starts the dispatcher of --webhooks-file, if any.
func (n *Node) startWebhooks(ctx context.Context, reg prometheus.Registerer, peerID string) error {
	if n.cfg.WebhooksFile == "" {
		return nil
	}
	cfg, err := webhook.ReadConfig(n.cfg.WebhooksFile)
	if err != nil {
		return err
	}
	d, err := webhook.New(ctx, webhook.Options{Config: cfg, Redis: n.be.redis, Prefix: n.cfg.RedisPrefix,
		NodeID: peerID, Logger: n.log, Registerer: reg})
	if err != nil {
		return err
	}
	n.hooks = d
	n.log.Info("webhooks", "endpoints", len(cfg.Endpoints), "cluster", n.be.redis != nil)
	return nil
}

// emit queues a webhook event (no-op without webhooks).
func (n *Node) emit(typ string, id protocol.DocumentID, user string) {
	if n.hooks != nil {
		n.hooks.Emit(typ, string(id), user)
	}
}

// onStored is the hub's OnStored: it must not block.
func (n *Node) onStored(id protocol.DocumentID, created bool) {
	h := n.hooks
	if h == nil {
		return
	}
	if created && n.auth == nil {
		// Without login, storing a document's first record creates it;
		// with login, claiming it does (createDoc).
		h.EmitLater(webhook.DocumentCreated, string(id), "")
	}
	h.Changed(string(id))
}
