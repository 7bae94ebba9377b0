package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// proxyV2 builds a v2 header: command cmd (0 LOCAL, 1 PROXY), family fam,
// and the address block body.
func proxyV2(cmd, fam byte, body []byte) []byte {
	b := append([]byte{}, proxyV2Sig...)
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func proxyV2TCP4(src, dst netip.AddrPort) []byte {
	var body []byte
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	body = append(body, s4[:]...)
	body = append(body, d4[:]...)
	body = binary.BigEndian.AppendUint16(body, src.Port())
	body = binary.BigEndian.AppendUint16(body, dst.Port())
	return proxyV2(1, 0x11, body)
}

func proxyV2TCP6(src, dst netip.AddrPort) []byte {
	var body []byte
	s, d := src.Addr().As16(), dst.Addr().As16()
	body = append(body, s[:]...)
	body = append(body, d[:]...)
	body = binary.BigEndian.AppendUint16(body, src.Port())
	body = binary.BigEndian.AppendUint16(body, dst.Port())
	return proxyV2(1, 0x21, body)
}

func TestParseProxyHeader(t *testing.T) {
	src4 := netip.MustParseAddrPort("203.0.113.7:51234")
	dst4 := netip.MustParseAddrPort("10.0.0.2:8080")
	src6 := netip.MustParseAddrPort("[2001:db8::7]:443")
	dst6 := netip.MustParseAddrPort("[2001:db8::1]:8080")
	withTLV := func() []byte { // a PROXY TCP4 header with a 5-byte TLV (type 0x04 NOOP)
		b := proxyV2TCP4(src4, dst4)
		b = append(b, 0x04, 0, 2, 'x', 'y')
		binary.BigEndian.PutUint16(b[14:16], 12+5)
		return b
	}()
	cases := []struct {
		name string
		in   []byte
		src  netip.AddrPort // zero: no client
		n    int
		err  error
	}{
		{"v1 tcp4", []byte("PROXY TCP4 203.0.113.7 10.0.0.2 51234 8080\r\nGET /"), src4, 44, nil},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 443 8080\r\n"), src6, 45, nil},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\nGET /"), netip.AddrPort{}, 15, nil},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"), netip.AddrPort{}, 59, nil},
		{"v1 partial", []byte("PROXY TCP4 203.0.113.7 10."), netip.AddrPort{}, 0, errProxyNeedMore},
		{"v1 prefix", []byte("PRO"), netip.AddrPort{}, 0, errProxyNeedMore},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::7 10.0.0.2 1 2\r\n"), netip.AddrPort{}, 0, errProxyMalformed},
		{"v1 bad port", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), netip.AddrPort{}, 0, errProxyMalformed},
		{"v1 leading zero port", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"), netip.AddrPort{}, 0, errProxyMalformed},
		{"v1 too few fields", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n"), netip.AddrPort{}, 0, errProxyMalformed},
		{"v1 bare LF", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 80 81\n"), netip.AddrPort{}, 0, errProxyMalformed},
		{"v1 too long", append([]byte("PROXY TCP4 "), bytes.Repeat([]byte("1"), 200)...), netip.AddrPort{}, 0, errProxyMalformed},
		{"v2 tcp4", append(proxyV2TCP4(src4, dst4), "GET /"...), src4, 28, nil},
		{"v2 tcp6", proxyV2TCP6(src6, dst6), src6, 52, nil},
		{"v2 tcp4 with TLV", withTLV, src4, 33, nil},
		{"v2 local", proxyV2(0, 0x00, nil), netip.AddrPort{}, 16, nil},
		{"v2 local with addresses", proxyV2(0, 0x11, make([]byte, 12)), netip.AddrPort{}, 28, nil},
		{"v2 unix", proxyV2(1, 0x31, make([]byte, 216)), netip.AddrPort{}, 232, nil},
		{"v2 partial signature", proxyV2Sig[:7], netip.AddrPort{}, 0, errProxyNeedMore},
		{"v2 partial body", proxyV2TCP4(src4, dst4)[:20], netip.AddrPort{}, 0, errProxyNeedMore},
		{"v2 short ipv4 block", proxyV2(1, 0x11, make([]byte, 8)), netip.AddrPort{}, 0, errProxyMalformed},
		{"v2 short ipv6 block", proxyV2(1, 0x21, make([]byte, 12)), netip.AddrPort{}, 0, errProxyMalformed},
		{"v2 bad version", append(append(append([]byte{}, proxyV2Sig...), 0x11, 0x11), 0, 0), netip.AddrPort{}, 0, errProxyMalformed},
		{"v2 bad command", proxyV2(2, 0x11, make([]byte, 12)), netip.AddrPort{}, 0, errProxyMalformed},
		{"v2 bad family", proxyV2(1, 0x41, make([]byte, 12)), netip.AddrPort{}, 0, errProxyMalformed},
		{"v2 too long", append(append(append([]byte{}, proxyV2Sig...), 0x21, 0x11), 0xff, 0xff), netip.AddrPort{}, 0, errProxyMalformed},
		{"http", []byte("GET / HTTP/1.1\r\n"), netip.AddrPort{}, 0, errNotProxy},
		{"P but not PROXY", []byte("POST / HTTP/1.1\r\n"), netip.AddrPort{}, 0, errNotProxy},
		{"CR but not v2", []byte("\r\nGET / HTTP/1.1\r\n"), netip.AddrPort{}, 0, errNotProxy},
		{"tls client hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00}, netip.AddrPort{}, 0, errNotProxy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := parseProxyHeader(tc.in)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if n != tc.n || h.Src != tc.src {
				t.Fatalf("got src %v, %d bytes; want %v, %d", h.Src, n, tc.src, tc.n)
			}
		})
	}
}

// FuzzParseProxyHeader: no input crashes the parser, a header it accepts
// is self-delimiting (the same from its own bytes, and whatever follows),
// and "need more" is only said of inputs shorter than the longest header.
func FuzzParseProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 203.0.113.7 10.0.0.2 51234 8080\r\nGET / HTTP/1.1\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 443 8080\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(proxyV2TCP4(netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("6.7.8.9:10")))
	f.Add(proxyV2TCP6(netip.MustParseAddrPort("[::1]:5"), netip.MustParseAddrPort("[::2]:10")))
	f.Add(proxyV2(0, 0, nil))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseProxyHeader(b)
		switch {
		case err == nil:
			if n <= 0 || n > len(b) || n > proxyHeaderMax {
				t.Fatalf("consumed %d of %d bytes", n, len(b))
			}
			h2, n2, err2 := parseProxyHeader(b[:n:n])
			if err2 != nil || n2 != n || h2 != h {
				t.Fatalf("the header alone parses as %v %d %v, not %v %d", h2, n2, err2, h, n)
			}
			h3, n3, err3 := parseProxyHeader(append(b[:n:n], "trailing"...))
			if err3 != nil || n3 != n || h3 != h {
				t.Fatalf("with trailing bytes: %v %d %v, not %v %d", h3, n3, err3, h, n)
			}
			if h.Src.IsValid() && (h.Src.Addr().Is4In6() || h.Src.Addr().Zone() != "") {
				t.Fatalf("client %v is mapped or zoned", h.Src)
			}
		case errors.Is(err, errProxyNeedMore):
			if len(b) >= proxyHeaderMax || n != 0 {
				t.Fatalf("need more after %d bytes (n %d)", len(b), n)
			}
		case errors.Is(err, errNotProxy), errors.Is(err, errProxyMalformed):
			if n != 0 {
				t.Fatalf("error %v with n %d", err, n)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}
