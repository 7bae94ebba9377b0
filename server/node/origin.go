package node

import (
	"net/url"
	"path"
	"strings"
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
