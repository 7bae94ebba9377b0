package node

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/gofiber/fiber/v2"
)

func urlHost(origin string) (string, error) {
	u, err := url.Parse(origin)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

// matchOrigin matches like coder/websocket's OriginPatterns: against
// "scheme://host" when the pattern has a scheme, else against the host.
func matchOrigin(pattern, origin, host string) (bool, error) {
	target := host
	if strings.Contains(pattern, "://") {
		target = origin
	}
	return path.Match(strings.ToLower(pattern), strings.ToLower(target))
}

// checkOrigin applies coder/websocket's rule (same host, or a listed
// pattern) before the hijack, so that a refused handshake is a normal 403.
func (n *Node) checkOrigin(r *http.Request) error {
	// A node that is anonymous because it listens on loopback only must be
	// reached by a loopback name: a page whose own host name an attacker
	// re-points at 127.0.0.1 (DNS rebinding) would otherwise pass the
	// same-host check below.
	if n.auth == nil && !n.cfg.AllowAnonymous {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !isLoopback(strings.Trim(host, "[]")) {
			return fmt.Errorf("host %q is not a loopback name: this anonymous node serves loopback only", r.Host)
		}
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil // not a browser: no cross-site risk
	}
	return n.originAllowed(origin, r.Host)
}

// originAllowed reports whether a browser page of origin may use this node
// (reached as host): the same host, or one of --allowed-origins.
func (n *Node) originAllowed(origin, host string) error {
	u, err := urlHost(origin)
	if err != nil {
		return fmt.Errorf("invalid Origin header %q", origin)
	}
	if strings.EqualFold(u, host) {
		return nil
	}
	for _, p := range n.cfg.AllowedOrigins {
		if ok, _ := matchOrigin(p, origin, u); ok {
			return nil
		}
	}
	return fmt.Errorf("origin %q is not allowed here (see --allowed-origins)", origin)
}

// checkSameSite refuses a state-changing request a browser sent from
// another site (cross-site request forgery): its Origin must be the node's
// own or an allowed one. Programs send no Origin.
func (n *Node) checkSameSite(c *fiber.Ctx) error {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		if c.Get("Sec-Fetch-Site") == "cross-site" {
			return fiber.NewError(fiber.StatusForbidden, "cross-site request refused")
		}
		return nil
	}
	if err := n.originAllowed(origin, string(c.Request().Host())); err != nil {
		n.auditRequest(c, auditEvent{Event: "origin_rejected", Code: fiber.StatusForbidden, Reason: err.Error(), Offense: true})
		return fiber.NewError(fiber.StatusForbidden, err.Error())
	}
	return nil
}
