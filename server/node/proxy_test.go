package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"
	"github.com/valyala/fasthttp"

	"github.com/plaithub/plait/pkg/protocol"
)

func TestParseTrustedNets(t *testing.T) {
	nets, err := parseTrustedNets(" 10.0.0.0/8, 192.168.1.7 ,2001:db8::/32,::ffff:172.16.0.0/108,")
	if err != nil {
		t.Fatal(err)
	}
	if got := nets.String(); got != "10.0.0.0/8,192.168.1.7/32,2001:db8::/32,172.16.0.0/12" {
		t.Fatalf("parsed %s", got)
	}
	for a, want := range map[string]bool{"10.1.2.3": true, "192.168.1.7": true, "192.168.1.8": false, "2001:db8::1": true,
		"2001:db9::1": false, "::ffff:10.9.9.9": true, "172.31.255.255": true, "172.32.0.0": false, "127.0.0.1": false} {
		if got := nets.contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("contains(%s) = %v, want %v", a, got, want)
		}
	}
	if nets, err := parseTrustedNets(""); err != nil || len(nets) != 0 {
		t.Fatalf("empty: %v %v", nets, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1/8/2", "fe80::1%eth0"} {
		if _, err := parseTrustedNets(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ParseConfig([]string{"--trusted-proxies", "10.0.0.0/8", "--client-ip-header", "x-real-ip"}, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "client-ip-header") {
		t.Fatalf("client-ip-header x-real-ip: %v", err)
	}
	c, err := ParseConfig(nil, func(k string) string {
		return map[string]string{"PLAIT_TRUSTED_PROXIES": "10.0.0.0/8", "PLAIT_CLIENT_IP_HEADER": "forwarded"}[k]
	}, io.Discard)
	if err != nil || c.TrustedProxies.String() != "10.0.0.0/8" || c.ClientIPHeader != clientIPHeaderForwarded {
		t.Fatalf("from the environment: %v %v %q", err, c.TrustedProxies, c.ClientIPHeader)
	}
}

func TestResolveClient(t *testing.T) {
	trusted, err := parseTrustedNets("10.0.0.0/8,2001:db8:1::/48")
	if err != nil {
		t.Fatal(err)
	}
	proxy := &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 40000}
	other := &net.TCPAddr{IP: net.ParseIP("198.51.100.9"), Port: 40001}
	cases := []struct {
		name string
		peer *net.TCPAddr
		mode string
		hdrs [][2]string
		want string
	}{
		{"untrusted peer ignores XFF", other, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "203.0.113.1"}}, "198.51.100.9:40001"},
		{"untrusted peer ignores Forwarded", other, clientIPHeaderForwarded, [][2]string{{"Forwarded", "for=203.0.113.1"}}, "198.51.100.9:40001"},
		{"trusted peer without header", proxy, clientIPHeaderXFF, nil, "10.0.0.5:40000"},
		{"one hop", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "203.0.113.1"}}, "203.0.113.1"},
		{"forged left entry ignored", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "6.6.6.6, 203.0.113.1"}}, "203.0.113.1"},
		{"forged header line ignored", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "6.6.6.6"}, {"X-Forwarded-For", "203.0.113.1"}}, "203.0.113.1"},
		{"trusted hops skipped", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "6.6.6.6, 203.0.113.1, 10.1.1.1 ,10.2.2.2"}}, "203.0.113.1"},
		{"all trusted: leftmost", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "10.3.3.3, 10.1.1.1"}}, "10.3.3.3"},
		{"garbage stops at the proxy that added it", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "203.0.113.1, nonsense, 10.1.1.1"}}, "10.1.1.1"},
		{"garbage rightmost: the peer", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "203.0.113.1, unknown"}}, "10.0.0.5:40000"},
		{"with port", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "203.0.113.1:5555"}}, "203.0.113.1:5555"},
		{"ipv6", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "2001:db8:2::7, 2001:db8:1::1"}}, "2001:db8:2::7"},
		{"mapped ipv4", proxy, clientIPHeaderXFF, [][2]string{{"X-Forwarded-For", "::ffff:203.0.113.1"}}, "203.0.113.1"},
		{"XFF mode ignores Forwarded", proxy, clientIPHeaderXFF, [][2]string{{"Forwarded", "for=6.6.6.6"}, {"X-Forwarded-For", "203.0.113.1"}}, "203.0.113.1"},
		{"Forwarded", proxy, clientIPHeaderForwarded, [][2]string{{"Forwarded", `for=6.6.6.6, for=203.0.113.1;proto=https;by=10.0.0.5`}}, "203.0.113.1"},
		{"Forwarded quoted v6 with port", proxy, clientIPHeaderForwarded, [][2]string{{"Forwarded", `For="[2001:db8:2::7]:4711"`}}, "[2001:db8:2::7]:4711"},
		{"Forwarded quoted v6", proxy, clientIPHeaderForwarded, [][2]string{{"Forwarded", `for="[2001:db8:2::7]"`}}, "2001:db8:2::7"},
		{"Forwarded obfuscated", proxy, clientIPHeaderForwarded, [][2]string{{"Forwarded", `for=203.0.113.1, for=_hidden`}}, "10.0.0.5:40000"},
		{"Forwarded mode ignores XFF", proxy, clientIPHeaderForwarded, [][2]string{{"X-Forwarded-For", "6.6.6.6"}}, "10.0.0.5:40000"},
		{"none", proxy, clientIPHeaderNone, [][2]string{{"X-Forwarded-For", "203.0.113.1"}}, "10.0.0.5:40000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			for _, kv := range tc.hdrs {
				h.Add(kv[0], kv[1])
			}
			got := resolveClient(tc.peer, &h, trusted, tc.mode)
			if got.remote != tc.want {
				t.Fatalf("client %q, want %q", got.remote, tc.want)
			}
			if k, ok := sourceKey(got.remote); !ok || k != clientKey(got.ip.AsSlice()) {
				t.Fatalf("ip %v does not match remote %q", got.ip, got.remote)
			}
		})
	}
	// A long forged chain is looked at only as far as maxForwardedHops.
	var h fasthttp.RequestHeader
	h.Add("X-Forwarded-For", strings.Repeat("10.9.9.9, ", 100)+"10.1.1.1")
	if got := resolveClient(proxy, &h, trusted, clientIPHeaderXFF); got.remote != "10.9.9.9" {
		t.Fatalf("long trusted chain: %q", got.remote)
	}
}

// TestProxyListener: a trusted peer's PROXY v1 and v2 headers name the
// client, a trusted peer without one stays itself, an untrusted peer's
// header is not read, and a malformed header fails the connection.
func TestProxyListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	trusted, _ := parseTrustedNets("127.0.0.9")
	pl := wrapProxyListener(ln, trusted)
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	cases := []struct {
		name, from string
		send       []byte
		remote     string // "" = the peer
		readErr    bool
	}{
		{"v1", "127.0.0.9", []byte("PROXY TCP4 203.0.113.1 10.0.0.1 1234 80\r\nhello"), "203.0.113.1:1234", false},
		{"v2", "127.0.0.9", append(proxyV2TCP4(netip.MustParseAddrPort("203.0.113.2:999"), dst), "hello"...), "203.0.113.2:999", false},
		{"v2 local", "127.0.0.9", append(proxyV2(0, 0, nil), "hello"...), "", false},
		{"no header", "127.0.0.9", []byte("hello"), "", false},
		{"untrusted peer", "127.0.0.8", []byte("PROXY TCP4 203.0.113.1 10.0.0.1 1234 80\r\nhello"), "", false},
		{"malformed", "127.0.0.9", []byte("PROXY TCP4 nonsense\r\nhello"), "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.from)}, Timeout: 5 * time.Second}
			cc, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			// Two writes: the header may arrive in pieces.
			half := len(tc.send) / 2
			go func() {
				_, _ = cc.Write(tc.send[:half])
				time.Sleep(10 * time.Millisecond)
				_, _ = cc.Write(tc.send[half:])
			}()
			sc, err := pl.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got []byte
			buf := make([]byte, 3)
			for len(got) < 5 {
				n, err := sc.Read(buf)
				if err != nil {
					if tc.readErr {
						return
					}
					t.Fatalf("read after %q: %v", got, err)
				}
				got = append(got, buf[:n]...)
			}
			if tc.readErr {
				t.Fatalf("a malformed header was accepted; read %q", got)
			}
			want := "hello"
			if tc.name == "untrusted peer" {
				want = "PROXY" // passed through as the client sent it
			}
			if string(got[:5]) != want {
				t.Fatalf("read %q, want %q", got, want)
			}
			remote := tc.remote
			if remote == "" {
				remote = cc.LocalAddr().String()
			}
			if sc.RemoteAddr().String() != remote {
				t.Fatalf("RemoteAddr %s, want %s", sc.RemoteAddr(), remote)
			}
		})
	}
}

// TestProxyPendingPerClient: behind a trusted proxy sending PROXY headers,
// --max-pending-conns-per-ip counts each client, not the proxy.
func TestProxyPendingPerClient(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *Config) {
		c.TrustedProxies, _ = parseTrustedNets("127.0.0.1")
		c.MaxPendingConnsPerIP = 2
	})
	addr := strings.TrimPrefix(n.HTTP, "http://")
	// open sends a PROXY header for client and the start of a request, and
	// returns the connection left waiting for the rest of the headers.
	open := func(client string) net.Conn {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 1000 80\r\nGET /healthz HTTP/1.1\r\n", client); err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitPending := func(want int) {
		deadline := time.Now().Add(10 * time.Second)
		for n.guard.pending() != want {
			if time.Now().After(deadline) {
				t.Fatalf("pending connections %d, want %d", n.guard.pending(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	open("203.0.113.1")
	open("203.0.113.1")
	waitPending(2)
	// Wait until the node has read both headers (and counted them for the client).
	deadline := time.Now().Add(10 * time.Second)
	for {
		n.guard.mu.Lock()
		ip := n.guard.ips[netip.MustParseAddr("203.0.113.1")]
		counted := ip != nil && ip.n == 2
		n.guard.mu.Unlock()
		if counted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the node did not count the connections for 203.0.113.1")
		}
		time.Sleep(5 * time.Millisecond)
	}
	third := open("203.0.113.1")
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("third connection of one client: %d", resp.StatusCode)
		}
	} else if b, _ := io.ReadAll(third); len(b) != 0 {
		t.Fatalf("third connection of one client: %v, then %q", err, b)
	} // (else closed without a response: refused)
	// Another client behind the same proxy gets in.
	other := open("203.0.113.2")
	if _, err := io.WriteString(other, "Host: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = other.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(other), nil)
	if err != nil {
		t.Fatalf("another client behind the proxy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another client behind the proxy: %d", resp.StatusCode)
	}
	if got := metricSum(t, []*testNode{n}, `plait_limit_hits_total{limit="pending_conns_per_ip"}`); got < 1 {
		t.Fatalf("pending_conns_per_ip limit hits %v", got)
	}
}

// fromAddr returns dial options whose connections leave from the loopback
// address ip (127.0.0.0/8 is all loopback on Linux): distinct clients on
// one machine.
func fromAddr(ip string, hdr http.Header) *websocket.DialOptions {
	if hdr == nil {
		hdr = http.Header{}
	}
	return &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: httpClientFrom(ip)}
}

func httpClientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// statusFrom is the status of GET url from the loopback address ip.
func statusFrom(t *testing.T, ip, url string, hdr http.Header) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := httpClientFrom(ip).Do(req)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, ip, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// misbehave sends a malformed frame on n fresh connections from ip: each is
// an offense of its source.
func misbehave(t *testing.T, url, ip string, hdr http.Header, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		bad := dialPeerOpts(t, url, fmt.Sprintf("bad-%s-%d", ip, i), fromAddr(ip, hdr))
		if err := bad.sendRaw(websocket.MessageBinary, []byte{0xa1, 0x64, 't', 'y'}); err != nil {
			t.Fatalf("send: %v", err)
		}
		if _, code := bad.expectClose(); code != websocket.StatusCode(protocol.CloseMalformedMessage) {
			t.Fatalf("malformed frame closed with %d", code)
		}
	}
}

// waitStatus polls GET url from ip until it answers want.
func waitStatus(t *testing.T, ip, url string, hdr http.Header, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := statusFrom(t, ip, url, hdr)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s from %s: %d, want %d", url, ip, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditBlocked returns the remote of every "blocked" event in the node's
// audit log.
func auditBlocked(t *testing.T, n *testNode) []string {
	t.Helper()
	b, err := os.ReadFile(n.cfg.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		var ev struct{ Event, Remote string }
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Event == "blocked" {
			out = append(out, ev.Remote)
		}
	}
	return out
}

func hostOf(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// TestTrustedProxyHAProxy runs a node behind a real haproxy that connects
// from 127.0.0.9, the one trusted proxy: one frontend sends the PROXY
// protocol (send-proxy-v2), another X-Forwarded-For (option forwardfor).
// Through each, a client that sends malformed frames is blocked while
// another client behind the same haproxy keeps syncing, and the audit log
// names the client. A client that forges X-Forwarded-For or a PROXY header
// directly to the node gains nothing: it is blocked under its own address.
func TestTrustedProxyHAProxy(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatalf("haproxy is not installed (make deps installs it, or: apt-get install haproxy): %v", err)
	}
	const threshold = 3
	n := startNode(t, t.TempDir(), func(c *Config) {
		c.TrustedProxies, _ = parseTrustedNets("127.0.0.9")
		c.BlockThreshold, c.BlockWindow, c.BlockDuration = threshold, time.Minute, 10*time.Minute
	})
	nodeAddr := strings.TrimPrefix(n.HTTP, "http://")
	lbPP, lbXFF := startProxyHAProxy(t, nodeAddr, "127.0.0.9")

	for _, tc := range []struct{ name, lb, bad, good string }{
		{"send-proxy-v2", lbPP, "127.0.0.2", "127.0.0.3"},
		{"forwardfor", lbXFF, "127.0.0.4", "127.0.0.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := protocol.NewDocumentID()
			doc := newDoc(t, "k", "v0")
			ss := automerge.NewSyncState(doc)
			good := dialPeerOpts(t, "ws://"+tc.lb+"/ws", "good", fromAddr(tc.good, nil))
			good.syncDoc(id, doc, ss, false)

			misbehave(t, "ws://"+tc.lb+"/ws", tc.bad, nil, threshold)
			waitStatus(t, tc.bad, "http://"+tc.lb+"/", nil, http.StatusTooManyRequests)

			// The good client keeps syncing on its connection, and opens new ones.
			if err := doc.RootMap().Set("k", "after "+tc.name); err != nil {
				t.Fatal(err)
			}
			doc.Commit("edit")
			good.syncDoc(id, doc, ss, false)
			if got := statusFrom(t, tc.good, "http://"+tc.lb+"/", nil); got != http.StatusOK {
				t.Fatalf("good client behind haproxy: %d", got)
			}
			check := dialPeerOpts(t, "ws://"+tc.lb+"/ws", "check", fromAddr(tc.good, nil))
			docC := automerge.New()
			check.syncDoc(id, docC, automerge.NewSyncState(docC), true)
			if got := getString(t, docC, "k"); got != "after "+tc.name {
				t.Fatalf("the good client reads k=%q", got)
			}
			found := false
			for _, r := range auditBlocked(t, n) {
				if hostOf(r) == "127.0.0.9" {
					t.Fatalf("the audit log blocked haproxy's address: %q", r)
				}
				found = found || hostOf(r) == tc.bad
			}
			if !found {
				t.Fatalf("no blocked event for %s in the audit log: %v", tc.bad, auditBlocked(t, n))
			}
		})
	}

	t.Run("forged headers direct", func(t *testing.T) {
		const forger = "127.0.0.6"
		// A PROXY header from an untrusted peer is not read: it is no HTTP.
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(forger)}, Timeout: 5 * time.Second}).Dial("tcp", nodeAddr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "PROXY TCP4 198.51.100.9 127.0.0.1 1000 80\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode == http.StatusOK {
			t.Fatal("an untrusted peer's PROXY header was taken as a header")
		}
		c.Close()

		xff := http.Header{"X-Forwarded-For": {"198.51.100.7"}}
		misbehave(t, n.URL, forger, xff, threshold)
		// Blocked under its own address, whatever it claims next.
		waitStatus(t, forger, n.HTTP+"/", http.Header{"X-Forwarded-For": {"198.51.100.8"}}, http.StatusTooManyRequests)
		waitStatus(t, forger, n.HTTP+"/", nil, http.StatusTooManyRequests)
		for _, r := range auditBlocked(t, n) {
			if strings.HasPrefix(r, "198.51.100.") {
				t.Fatalf("the audit log took a forged address: %q", r)
			}
		}
		// The clients behind haproxy still get in.
		if got := statusFrom(t, "127.0.0.3", "http://"+lbPP+"/", nil); got != http.StatusOK {
			t.Fatalf("a client behind haproxy after the forger's block: %d", got)
		}
	})
}

// startProxyHAProxy starts haproxy with two frontends in front of the node
// at nodeAddr, both connecting from source: one sends the PROXY protocol
// v2, the other adds X-Forwarded-For. It returns their addresses once both
// route /readyz.
func startProxyHAProxy(t *testing.T, nodeAddr, source string) (pp, xff string) {
	t.Helper()
	dir := t.TempDir()
	pp = "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	xff = "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	cfg := fmt.Sprintf(`global
    log stderr format raw local0 info
    maxconn 1000

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout tunnel 1h
    timeout client-fin 5s

frontend pp
    bind %[1]s
    default_backend pp

frontend xff
    bind %[2]s
    default_backend xff

backend pp
    option httpchk GET /readyz
    server node %[3]s source %[4]s send-proxy-v2 check inter 200ms

backend xff
    option forwardfor
    option httpchk GET /readyz
    server node %[3]s source %[4]s check inter 200ms
`, pp, xff, nodeAddr, source)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
	logPath := filepath.Join(dir, "haproxy.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "haproxy", "-f", path, "-db")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		_ = f.Close()
		t.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("haproxy did not exit")
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("haproxy log (last lines):\n%s", lastLines(string(b), 40))
		}
	})
	for _, lb := range []string{pp, xff} {
		deadline := time.Now().Add(15 * time.Second)
		for {
			select {
			case <-done:
				b, _ := os.ReadFile(logPath)
				t.Fatalf("haproxy exited at start:\n%s", b)
			default:
			}
			resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + lb + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy on %s does not reach the node: %v", lb, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return pp, xff
}

// TestProxyProtocolUnderTLS: a proxy that passes TLS through (haproxy in
// TCP mode) sends the PROXY header before the handshake; the node reads it
// under TLS and blocks the client it names, not the proxy.
func TestProxyProtocolUnderTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	n := startNode(t, t.TempDir(), func(c *Config) {
		c.TLSCert, c.TLSKey = certFile, keyFile
		c.TrustedProxies, _ = parseTrustedNets("127.0.0.1")
		c.BlockThreshold, c.BlockWindow, c.BlockDuration = 1, time.Minute, 10*time.Minute
	})
	addr := strings.TrimPrefix(strings.Replace(n.HTTP, "http://", "", 1), "https://")
	// get sends GET path over TLS after a PROXY header naming client.
	get := func(client, path string, hdr string) int {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 4000 443\r\n", client)
		tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n", path, hdr)
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatalf("GET %s as %s: %v", path, client, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("203.0.113.5", "/", ""); code != http.StatusOK {
		t.Fatalf("GET /: %d", code)
	}
	// A refused origin is an offense: with threshold 1 it blocks the client.
	ws := "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://evil.example\r\n"
	if code := get("203.0.113.5", "/ws", ws); code != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", code)
	}
	if code := get("203.0.113.5", "/", ""); code != http.StatusTooManyRequests {
		t.Fatalf("the blocked client: %d", code)
	}
	if code := get("203.0.113.6", "/", ""); code != http.StatusOK {
		t.Fatalf("another client behind the same proxy: %d", code)
	}
	if b := auditBlocked(t, n); len(b) != 1 || hostOf(b[0]) != "203.0.113.5" {
		t.Fatalf("blocked: %v", b)
	}
}
