// Command loadtest is Plait's load-test harness. Scenarios:
//
//	fanout     -docs D x -clients C per doc, every client editing at -rate
//	hotdoc     -typists N typing into one document at -rate each
//	           (both: -history N starts each document with N stored changes)
//	reconnect  -clients N dropped at once -storms K times; time to re-sync
//	offline    -clients N pairs; one goes offline, both edit, it resumes
//	idle       -n idle joined connections; server RSS per connection
//	docs       -n small documents held open; server RSS per document
//
// Usage: go run ./loadtest <scenario> [flags]; go run ./loadtest <scenario> -h
// lists a scenario's flags. -url takes a comma-separated list (a cluster).
// Every scenario but docs prints a summary, shows progress on stderr, and
// with -out PREFIX writes PREFIX.json (the report) and PREFIX.html (a
// latency chart); it exits 1 if the run had errors or did not converge.
// The server's RSS is read from its /metrics (process_resident_memory_bytes),
// and its CPU per edit and per delivery over the measured phase from
// process_cpu_seconds_total ("n/a" if a server does not report it). A Plait
// node also reports its own part of the latency (plait_relay_seconds: read,
// applied, stored, released; plait_send_seconds: queued for a connection
// until written), which the report shows beside the end-to-end figures as
// the server relay and send p50 and p99 over the measured phase. The
// generator shares the machine, so the report also gives its own CPU over
// that phase, and -cpuprofile FILE profiles it there.
package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

var scenarios = map[string]func(args []string) error{
	"fanout":    runFanout,
	"hotdoc":    runHotdoc,
	"reconnect": runReconnect,
	"offline":   runOffline,
	"idle":      runIdle,
	"docs":      runDocs,
}

func main() {
	if len(os.Args) < 2 || scenarios[os.Args[1]] == nil {
		fmt.Fprintf(os.Stderr, "usage: loadtest <scenario> [flags]\nscenarios: %s\n", strings.Join(slices.Sorted(maps.Keys(scenarios)), ", "))
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
