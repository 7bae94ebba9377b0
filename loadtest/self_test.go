package main

import (
	"strings"
	"testing"
	"time"
)

// The generator's own CPU over the measured phase, and "n/a" without one.
func TestGeneratorStats(t *testing.T) {
	g := generatorStats(window{self: 1.5}, window{self: 4.5}, 2*time.Second, true, "gen.cpu")
	if g.CPUSeconds == nil || *g.CPUSeconds != 3 || g.Cores == nil || *g.Cores != 1.5 {
		t.Fatalf("got %+v", g)
	}
	if line := g.line(); !strings.Contains(line, "3.00 s") || !strings.Contains(line, "(1.50 cores)") || !strings.Contains(line, "gen.cpu") {
		t.Fatalf("line %q", line)
	}
	none := generatorStats(window{self: 1}, window{self: 2}, time.Second, false, "")
	if none.CPUSeconds != nil || !strings.HasPrefix(none.line(), "n/a") {
		t.Fatalf("no measured phase gave %+v %q", none, none.line())
	}
	// This process's CPU only grows.
	a := selfCPU()
	for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
	}
	if b := selfCPU(); !(b > a) {
		t.Fatalf("selfCPU went from %v to %v over 20 ms of spinning", a, b)
	}
}
