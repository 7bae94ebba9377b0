// Command plait runs one Plait node: an automerge-repo compatible sync
// server. See README.md and `go run ./server --help`. `plait export FILE`
// and `plait import FILE` back up and restore a node's storage
// (server/backup); `plait probe URL` is the container health check.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/plaithub/plait/server/backup"
	"github.com/plaithub/plait/server/node"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "probe" {
		os.Exit(probe(os.Args[2]))
	}
	if len(os.Args) >= 2 && (os.Args[1] == "export" || os.Args[1] == "import") {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		code := backup.Main(ctx, os.Args[1], os.Args[2:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	cfg, err := node.ParseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "plait:", err)
		os.Exit(2)
	}
	log := cfg.NewLogger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := node.Run(ctx, cfg, log); err != nil {
		log.Error("plait stopped with an error", "err", err)
		os.Exit(1)
	}
}

// probe is the container health check: `plait probe URL` exits 0 when URL
// answers 200 within 3 seconds (the runtime image has no curl).
func probe(url string) int {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "probe:", resp.Status)
		return 1
	}
	return 0
}
