package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/protocol"
)

// Metric names the harness reads from every server of the target.
const (
	metricRSS = "process_resident_memory_bytes"
	metricCPU = "process_cpu_seconds_total"
)

// errNoMetric: the server's metrics lack the metric (it does not report it).
var errNoMetric = errors.New("metric not reported")

// scanMetrics reads a Prometheus text endpoint and calls line with each
// line until it returns false.
func scanMetrics(ctx context.Context, metricsURL string, line func(string) (more bool)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("failed to read metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && line(sc.Text()) {
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("failed to read metrics: %w", err)
	}
	return nil
}

// serverMetric reads the unlabelled sample name from a Prometheus text
// endpoint.
func serverMetric(ctx context.Context, metricsURL, name string) (float64, error) {
	var v string
	found := false
	err := scanMetrics(ctx, metricsURL, func(l string) bool {
		v, found = strings.CutPrefix(l, name+" ")
		return !found
	})
	switch {
	case err != nil:
		return 0, err
	case !found:
		return 0, fmt.Errorf("no %s in %s: %w", name, metricsURL, errNoMetric)
	}
	return strconv.ParseFloat(strings.TrimSpace(v), 64)
}

// sourceDialer spreads outgoing connections over 127.0.0.1..127.0.0.k so
// that many connections to one loopback port do not exhaust the ephemeral
// ports of a single source address.
type sourceDialer struct {
	k    int
	next atomic.Uint64
}

func (d *sourceDialer) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			i := d.next.Add(1) % uint64(d.k)
			nd := net.Dialer{Timeout: 10 * time.Second}
			host, _, _ := net.SplitHostPort(addr)
			if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() && ip.To4() != nil {
				nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}
			}
			return nd.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: -1,
	}}
}

// joinedConn dials url and completes the join handshake.
func joinedConn(ctx context.Context, hc *http.Client, url, peerID string) (*websocket.Conn, *protocol.Message, error) {
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, nil, err
	}
	ws.SetReadLimit(64 << 20)
	join, _ := protocol.Encode(&protocol.Message{Type: protocol.TypeJoin, SenderID: peerID, SupportedProtocolVersions: []string{protocol.ProtocolVersion}, PeerMetadata: &protocol.PeerMetadata{IsEphemeral: true}})
	if err := ws.Write(ctx, websocket.MessageBinary, join); err != nil {
		ws.CloseNow()
		return nil, nil, err
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, nil, err
	}
	m, err := protocol.Decode(b)
	if err != nil || m.Type != protocol.TypePeer {
		ws.CloseNow()
		return nil, nil, fmt.Errorf("expected peer message, got %v %v", m, err)
	}
	return ws, m, nil
}

func metricsURLFor(wsURL string) string {
	u := strings.Replace(strings.Replace(wsURL, "wss://", "https://", 1), "ws://", "http://", 1)
	return strings.TrimSuffix(u, "/ws") + "/metrics"
}

// settle waits for the server's RSS to stop moving (GC, finalizers).
func settle(ctx context.Context, tg *target, wait time.Duration) (float64, error) {
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return tg.rss(ctx)
}

// target is what every scenario measures against: the server's WebSocket
// and metrics URLs (comma-separated lists, for a cluster), a scenario size
// and the wait before measuring.
type target struct {
	url, metrics string
	n            int
	hold         time.Duration
}

// targetFlags declares the flags every scenario has; what is the scenario's
// unit ("idle connections to hold", "documents to open"). With what empty,
// -n and -hold are left out (the scenario sizes itself with its own flags).
func targetFlags(fs *flag.FlagSet, what string) *target {
	t := &target{}
	fs.StringVar(&t.url, "url", "ws://127.0.0.1:8080/ws", "server WebSocket URL, or a comma-separated list of them")
	fs.StringVar(&t.metrics, "metrics", "", "server metrics URL(s), comma-separated (default: derived from -url)")
	if what != "" {
		fs.IntVar(&t.n, "n", 2000, what)
		fs.DurationVar(&t.hold, "hold", 5*time.Second, "time to wait before measuring")
	}
	return t
}

// urls returns the WebSocket URLs of -url.
func (t *target) urls() []string { return splitList(t.url) }

// metricsURLs returns the metrics URLs of -metrics, or one per -url.
func (t *target) metricsURLs() []string {
	if t.metrics != "" {
		return splitList(t.metrics)
	}
	var out []string
	for _, u := range t.urls() {
		if m := metricsURLFor(u); !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// rss returns the summed RSS of every server of the target.
func (t *target) rss(ctx context.Context) (float64, error) { return t.sum(ctx, metricRSS) }

// cpu returns the CPU seconds (user+system) every server of the target has
// used, summed. A server without process_cpu_seconds_total is an error
// (wrapping errNoMetric): a sum over part of the nodes would mislead.
func (t *target) cpu(ctx context.Context) (float64, error) { return t.sum(ctx, metricCPU) }

// sum returns the metric name summed over every server of the target.
func (t *target) sum(ctx context.Context, name string) (float64, error) {
	var sum float64
	for _, u := range t.metricsURLs() {
		v, err := serverMetric(ctx, u, name)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// start reads the server's RSS before the scenario.
func (t *target) start(ctx context.Context) (rssBefore float64, err error) {
	return t.rss(ctx)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
