package node

import (
	"errors"
	"flag"
)

// lifeConfig configures deletion, webhooks and quotas (docs/api.md);
// Config embeds it.
type lifeConfig struct {
	MaxDocsPerUser int    // documents one user may own (0 = no limit)
	QuotaFile      string // JSON overrides of max-docs-per-user and max-doc-bytes per user and per document
	WebhooksFile   string // JSON webhook endpoints (URL, secret, events) and delivery settings
}

func (c *lifeConfig) registerFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxDocsPerUser, "max-docs-per-user", 10000, "documents one user may own; creating (claiming) one more is refused with HTTP 429 (0 = no limit; login only)")
	fs.StringVar(&c.WebhooksFile, "webhooks-file", "", "JSON file of webhook endpoints (url, secret, events) and delivery settings (docs/api.md, \"Webhooks\"); keep it readable by the node only (it holds the secrets)")
	fs.StringVar(&c.QuotaFile, "quota-file", "", "JSON file of per-user and per-document overrides of max-docs-per-user and max-doc-bytes (docs/api.md, \"Quotas\")")
}

func (c *lifeConfig) validate() error {
	if c.MaxDocsPerUser < 0 {
		return errors.New("max-docs-per-user must be >= 0 (0 = no limit)")
	}
	return nil
}
