package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The PROXY protocol (haproxy's send-proxy and send-proxy-v2): a proxy
// opens each connection to the node with one header that names the client
// it forwards. See https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt.
// The node reads it only from trusted proxies (proxyListener).

// Sentinel errors of parseProxyHeader.
var (
	// errProxyNeedMore: the bytes so far are the start of a header; read more.
	errProxyNeedMore = errors.New("proxy protocol: incomplete header")
	// errNotProxy: the bytes do not start with a PROXY header (plain
	// HTTP or TLS from the peer itself).
	errNotProxy = errors.New("not a proxy protocol header")
	// errProxyMalformed: a header that starts like one but is invalid.
	errProxyMalformed = errors.New("malformed proxy protocol header")
)

const (
	proxyV1Prefix = "PROXY "
	// proxyV1Max is the longest v1 header, CRLF included (the spec's 107).
	proxyV1Max = 107
	// proxyV2MaxLen bounds a v2 header's address and TLV bytes (the spec
	// allows 65535; haproxy sends 12 or 36 and a few TLVs at most).
	proxyV2MaxLen = 4096
	// proxyHeaderMax is the most bytes a header may take.
	proxyHeaderMax = 16 + proxyV2MaxLen
)

// proxyV2Sig starts every v2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// proxyHeader is a parsed PROXY header. Src is the client; it is not
// valid when the header names no client (v1 UNKNOWN, v2 LOCAL, as haproxy
// sends on its own health checks, or a family other than TCP/UDP over
// IPv4/IPv6): then the connection is the proxy's own.
type proxyHeader struct {
	Src netip.AddrPort
}

// parseProxyHeader parses the PROXY header (v1 or v2) at the start of b and
// returns it with its length. errProxyNeedMore: b is a proper prefix of a
// header; errNotProxy: b starts with something else; errProxyMalformed
// (wrapped): an invalid header.
func parseProxyHeader(b []byte) (proxyHeader, int, error) {
	switch {
	case len(b) == 0:
		return proxyHeader{}, 0, errProxyNeedMore
	case b[0] == proxyV1Prefix[0]:
		if len(b) < len(proxyV1Prefix) {
			if bytes.HasPrefix([]byte(proxyV1Prefix), b) {
				return proxyHeader{}, 0, errProxyNeedMore
			}
			return proxyHeader{}, 0, errNotProxy
		}
		if !bytes.HasPrefix(b, []byte(proxyV1Prefix)) {
			return proxyHeader{}, 0, errNotProxy
		}
		return parseProxyV1(b)
	case b[0] == proxyV2Sig[0]:
		n := min(len(b), len(proxyV2Sig))
		if !bytes.Equal(b[:n], proxyV2Sig[:n]) {
			return proxyHeader{}, 0, errNotProxy
		}
		if n < len(proxyV2Sig) {
			return proxyHeader{}, 0, errProxyNeedMore
		}
		return parseProxyV2(b)
	}
	return proxyHeader{}, 0, errNotProxy
}

// parseProxyV1 parses "PROXY TCP4|TCP6 src dst sport dport\r\n" or
// "PROXY UNKNOWN ...\r\n".
func parseProxyV1(b []byte) (proxyHeader, int, error) {
	end := bytes.Index(b[:min(len(b), proxyV1Max)], []byte("\r\n"))
	if end < 0 {
		if len(b) >= proxyV1Max {
			return proxyHeader{}, 0, fmt.Errorf("%w: v1 line longer than %d bytes", errProxyMalformed, proxyV1Max)
		}
		if bytes.IndexByte(b, '\n') >= 0 {
			return proxyHeader{}, 0, fmt.Errorf("%w: v1 line not ended by CRLF", errProxyMalformed)
		}
		return proxyHeader{}, 0, errProxyNeedMore
	}
	n := end + 2
	f := strings.Split(string(b[len(proxyV1Prefix):end]), " ")
	if f[0] == "UNKNOWN" {
		return proxyHeader{}, n, nil
	}
	if len(f) != 5 || (f[0] != "TCP4" && f[0] != "TCP6") {
		return proxyHeader{}, 0, fmt.Errorf("%w: v1 wants TCP4|TCP6 and four fields", errProxyMalformed)
	}
	src, err1 := netip.ParseAddr(f[1])
	dst, err2 := netip.ParseAddr(f[2])
	sport, err3 := parseProxyPort(f[3])
	_, err4 := parseProxyPort(f[4])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return proxyHeader{}, 0, fmt.Errorf("%w: v1 addresses: %v", errProxyMalformed, err)
	}
	if src.Zone() != "" || dst.Zone() != "" || src.Is4() != dst.Is4() || src.Is4() != (f[0] == "TCP4") {
		return proxyHeader{}, 0, fmt.Errorf("%w: v1 addresses do not match %s", errProxyMalformed, f[0])
	}
	return proxyHeader{Src: netip.AddrPortFrom(src, sport)}, n, nil
}

// parseProxyPort parses a v1 port: decimal, no sign, no leading zero.
func parseProxyPort(s string) (uint16, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	p, err := strconv.ParseUint(s, 10, 16)
	return uint16(p), err
}

// parseProxyV2 parses a binary v2 header (b starts with proxyV2Sig).
func parseProxyV2(b []byte) (proxyHeader, int, error) {
	if len(b) < 16 {
		return proxyHeader{}, 0, errProxyNeedMore
	}
	verCmd, fam := b[12], b[13]
	size := int(binary.BigEndian.Uint16(b[14:16]))
	if verCmd>>4 != 2 {
		return proxyHeader{}, 0, fmt.Errorf("%w: v2 version %d", errProxyMalformed, verCmd>>4)
	}
	cmd := verCmd & 0x0f
	if cmd > 1 {
		return proxyHeader{}, 0, fmt.Errorf("%w: v2 command %d", errProxyMalformed, cmd)
	}
	if size > proxyV2MaxLen {
		return proxyHeader{}, 0, fmt.Errorf("%w: v2 length %d over %d", errProxyMalformed, size, proxyV2MaxLen)
	}
	if len(b) < 16+size {
		return proxyHeader{}, 0, errProxyNeedMore
	}
	n, body := 16+size, b[16:16+size]
	if cmd == 0 { // LOCAL: the proxy's own connection (health checks)
		return proxyHeader{}, n, nil
	}
	switch fam >> 4 {
	case 1: // AF_INET: src(4) dst(4) sport(2) dport(2)
		if len(body) < 12 {
			return proxyHeader{}, 0, fmt.Errorf("%w: v2 IPv4 addresses need 12 bytes, have %d", errProxyMalformed, len(body))
		}
		src := netip.AddrFrom4([4]byte(body[0:4]))
		return proxyHeader{Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[8:10]))}, n, nil
	case 2: // AF_INET6: src(16) dst(16) sport(2) dport(2)
		if len(body) < 36 {
			return proxyHeader{}, 0, fmt.Errorf("%w: v2 IPv6 addresses need 36 bytes, have %d", errProxyMalformed, len(body))
		}
		src := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		return proxyHeader{Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[32:34]))}, n, nil
	case 0, 3: // AF_UNSPEC, AF_UNIX: no client address to take
		return proxyHeader{}, n, nil
	}
	return proxyHeader{}, 0, fmt.Errorf("%w: v2 address family %#x", errProxyMalformed, fam)
}
