// Package redistest starts real redis-server processes for tests: a single
// server (with or without persistence) and a small Redis Cluster. Each server
// listens on a free loopback port, keeps its files in t.TempDir and is
// stopped by t.Cleanup.
//
// redis-server (and redis-cli, for clusters) must be on PATH; `make deps`
// installs them. A missing binary fails the test: it is never skipped.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process started by a test.
type Server struct {
	t       testing.TB
	Port    int
	Dir     string
	persist bool
	extra   []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Options configure Start.
type Options struct {
	// Persist turns on the append-only file with an fsync per write, so a
	// restarted server keeps its data. Default: no persistence at all.
	Persist bool
	// Args are extra redis-server arguments ("--cluster-enabled", "yes").
	Args []string
}

// Start starts a redis-server on a free loopback port.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (make deps installs it): %v", err)
	}
	s := &Server{t: t, Port: freePort(t), Dir: t.TempDir(), persist: opts.Persist, extra: opts.Args}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Client returns a client of the server, closed by t.Cleanup.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *Server) start() {
	s.t.Helper()
	args := []string{
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir,
		"--save", "", "--protected-mode", "yes", "--enable-debug-command", "local",
	}
	if s.persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.extra...)
	cmd := exec.Command("redis-server", args...)
	log, err := os.OpenFile(filepath.Join(s.Dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("failed to start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = log.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.t.Fatalf("redis-server on %s not ready: %v\n%s", s.Addr(), err, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: nothing is saved beyond what the append-only
// file already holds) and waits for it to exit. Stopping twice is harmless.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("redis-server on %s did not exit after SIGKILL", s.Addr())
	}
}

// Restart stops the server and starts it again on the same port. With empty
// set, its files are removed first: it comes back with no data at all.
func (s *Server) Restart(empty bool) {
	s.t.Helper()
	s.Stop()
	if empty {
		entries, _ := os.ReadDir(s.Dir)
		for _, e := range entries {
			if e.Name() != "redis.log" {
				_ = os.RemoveAll(filepath.Join(s.Dir, e.Name()))
			}
		}
	}
	s.start()
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	Servers []*Server
}

// StartCluster starts n (at least 3) cluster-enabled servers and joins them
// into one cluster with the slots spread evenly.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 3 {
		t.Fatalf("a Redis Cluster needs at least 3 masters, got %d", n)
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli is not installed (make deps installs it): %v", err)
	}
	c := &Cluster{}
	args := []string{"create"}
	for i := 0; i < n; i++ {
		s := Start(t, Options{Args: []string{"--cluster-enabled", "yes", "--cluster-node-timeout", "2000"}})
		c.Servers = append(c.Servers, s)
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command("redis-cli", append([]string{"--cluster"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Wait until every node reports the cluster as ok.
	deadline := time.Now().Add(15 * time.Second)
	for _, s := range c.Servers {
		cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
		for {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				_ = cl.Close()
				t.Fatalf("cluster not ok on %s: %v %s", s.Addr(), err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cl.Close()
	}
	return c
}

// Addrs returns host:port of every node.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		out[i] = s.Addr()
	}
	return out
}

// URL is a cluster URL as redis.ParseClusterURL reads it: the first node in
// the host part and the others as addr parameters.
func (c *Cluster) URL() string {
	u := "redis://" + c.Servers[0].Addr()
	for i, s := range c.Servers[1:] {
		if i == 0 {
			u += "?"
		} else {
			u += "&"
		}
		u += "addr=" + s.Addr()
	}
	return u
}

// Client returns a cluster client, closed by t.Cleanup.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// CPUSeconds reads the server's used_cpu_sys + used_cpu_user from INFO.
func (s *Server) CPUSeconds(ctx context.Context) (float64, error) {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("bad INFO line %q: %w", sc.Text(), err)
			}
			total += f
		}
	}
	return total, nil
}

// freePort returns a free loopback port below 55000, so that a cluster
// node's bus port (port+10000) is a valid port too.
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port < 55000 {
			if b, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000)); err == nil {
				_ = b.Close()
				return port
			}
		}
	}
	t.Fatal("no free port pair below 55000")
	return 0
}
