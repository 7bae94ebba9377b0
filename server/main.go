// Command plait runs one Plait node: an automerge-repo compatible sync
// server. See README.md and `go run ./server --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/plaithub/plait/server/node"
)

func main() {
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
