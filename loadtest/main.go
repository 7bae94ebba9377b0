// Command loadtest is Plait's load-test harness. Scenarios:
//
//	idle  N idle joined connections; reports server RSS per connection
//	docs  N small documents held open; reports server RSS per document
//
// Usage: go run ./loadtest <scenario> [flags]; go run ./loadtest <scenario> -h
// lists a scenario's flags. The server's RSS is read from its /metrics
// (process_resident_memory_bytes).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

var scenarios = map[string]func(args []string) error{
	"idle": runIdle,
	"docs": runDocs,
}

func main() {
	if len(os.Args) < 2 || scenarios[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: loadtest <scenario> [flags]\nscenarios: idle, docs")
		os.Exit(2)
	}
	err := scenarios[os.Args[1]](os.Args[2:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}
