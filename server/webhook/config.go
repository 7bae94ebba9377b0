package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"time"
)

// Event types.
const (
	DocumentChanged = "document.changed" // changes stored; at most one per document per ChangedEvery
	DocumentCreated = "document.created"
	DocumentDeleted = "document.deleted"
	AccessChanged   = "access.changed"
)

// EventTypes lists every event type.
var EventTypes = []string{DocumentChanged, DocumentCreated, DocumentDeleted, AccessChanged}

// ChangedEvery is the debounce of document.changed: while a document's
// edits continue, its event is sent at most once and at least once per
// period (ChangedEvery after the first edit that follows the last event).
const ChangedEvery = 2 * time.Second

// Config is the JSON of a node's --webhooks-file. Zero values are the
// documented defaults.
type Config struct {
	Endpoints []Endpoint `json:"endpoints"`
	// QueueSize bounds the deliveries waiting (in memory on one node, in
	// the Redis stream for a cluster); past it new events are dropped and
	// counted. Default 10000.
	QueueSize int `json:"queueSize"`
	// Attempts bounds the tries of one delivery. Default 8.
	Attempts int `json:"attempts"`
	// MinBackoff and MaxBackoff bound the wait between tries (doubling,
	// jittered). Default 500ms and 30s.
	MinBackoff Duration `json:"minBackoff"`
	MaxBackoff Duration `json:"maxBackoff"`
	// Timeout bounds one try (connect to response). Default 10s.
	Timeout Duration `json:"timeout"`
	// ClaimAfter is how long a delivery taken by a node that stopped
	// (killed) waits before another node takes it over (cluster only).
	// It must exceed Timeout and MaxBackoff. Default 2m.
	ClaimAfter Duration `json:"claimAfter"`
}

// Endpoint is one receiver.
type Endpoint struct {
	// URL receives POSTs: https, or http on a loopback address.
	URL string `json:"url"`
	// Secret signs the deliveries (at least 16 bytes).
	Secret string `json:"secret"`
	// Events it receives; empty: every type.
	Events []string `json:"events"`
}

// wants reports whether the endpoint receives events of typ.
func (e Endpoint) wants(typ string) bool {
	return len(e.Events) == 0 || slices.Contains(e.Events, typ)
}

// Duration is a time.Duration written as a Go duration string ("2s").
type Duration time.Duration

// UnmarshalJSON reads "500ms", "2m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"2s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// ReadConfig reads and checks a webhooks file.
func ReadConfig(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("failed to read webhooks-file: %w", err)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("invalid webhooks-file %s: %w", path, err)
	}
	if err := c.fill(); err != nil {
		return Config{}, fmt.Errorf("invalid webhooks-file %s: %w", path, err)
	}
	return c, nil
}

// fill checks c and sets its defaults.
func (c *Config) fill() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("no endpoints")
	}
	for i, e := range c.Endpoints {
		u, err := url.Parse(e.URL)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("endpoint %d: url %q must be an absolute http(s) URL", i, e.URL)
		}
		if u.Scheme == "http" && !loopback(u.Hostname()) {
			return fmt.Errorf("endpoint %d: url %q: plain http only to a loopback address (the body names documents and users); use https", i, e.URL)
		}
		if len(e.Secret) < 16 {
			return fmt.Errorf("endpoint %d: secret must be at least 16 bytes", i)
		}
		for _, ev := range e.Events {
			if !slices.Contains(EventTypes, ev) {
				return fmt.Errorf("endpoint %d: unknown event %q (known: %v)", i, ev, EventTypes)
			}
		}
	}
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 10000
	}
	if c.Attempts <= 0 {
		c.Attempts = 8
	}
	def(&c.MinBackoff, 500*time.Millisecond)
	def(&c.MaxBackoff, 30*time.Second)
	def(&c.Timeout, 10*time.Second)
	def(&c.ClaimAfter, 2*time.Minute)
	if c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("maxBackoff must not be below minBackoff")
	}
	if c.ClaimAfter <= c.Timeout || c.ClaimAfter <= c.MaxBackoff {
		return fmt.Errorf("claimAfter (%s) must exceed timeout and maxBackoff, or a slow delivery would be taken over while it runs", time.Duration(c.ClaimAfter))
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
