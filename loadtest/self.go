package main

import (
	"fmt"
	"math"
	"os"
	"runtime/pprof"
	"syscall"
	"time"
)

// The load generator's own cost: it shares the machine with the server
// under test, so its CPU over the measured phase is reported beside the
// server's, and -cpuprofile profiles it over that phase, to show which of
// the two is the limit.

// GeneratorStats is the harness's own CPU over the measured phase.
type GeneratorStats struct {
	// CPUSeconds is this process's user+system CPU in the measured phase
	// (null without a measured phase); Cores divides it by the phase's
	// length.
	CPUSeconds *float64 `json:"cpuSeconds"`
	Cores      *float64 `json:"cores"`
	// CPUProfile is the -cpuprofile file written for the phase, if any.
	CPUProfile string `json:"cpuProfile,omitempty"`
}

// selfCPU returns the CPU seconds (user+system) this process has used.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// generatorStats fills the generator's figures from the windows read at
// the start and the end of the measured phase, which lasted phase.
func generatorStats(start, end window, phase time.Duration, measured bool, profile string) GeneratorStats {
	g := GeneratorStats{CPUProfile: profile}
	sec := end.self - start.self
	if !measured || math.IsNaN(sec) {
		return g
	}
	round := func(v float64) *float64 { v = math.Round(v*1000) / 1000; return &v }
	g.CPUSeconds = round(sec)
	if phase > 0 {
		g.Cores = round(sec / phase.Seconds())
	}
	return g
}

// line formats the generator's figures for the summaries.
func (g GeneratorStats) line() string {
	if g.CPUSeconds == nil {
		return "n/a (no measured phase)"
	}
	s := fmt.Sprintf("%.2f s in the measured phase", *g.CPUSeconds)
	if g.Cores != nil {
		s += fmt.Sprintf(" (%.2f cores)", *g.Cores)
	}
	if g.CPUProfile != "" {
		s += "; profile in " + g.CPUProfile
	}
	return s
}

// startProfile starts -cpuprofile's CPU profile, for the measured phase.
func (r *run) startProfile() {
	if r.cpuProfile == "" || r.profileFile != nil {
		return
	}
	f, err := os.Create(r.cpuProfile)
	if err != nil {
		r.fail("cpuprofile: " + err.Error())
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		r.fail("cpuprofile: " + err.Error())
		return
	}
	r.profileFile = f
}

// stopProfile ends the profile, if one runs, and closes its file.
func (r *run) stopProfile() {
	if r.profileFile == nil {
		return
	}
	pprof.StopCPUProfile()
	if err := r.profileFile.Close(); err != nil {
		r.fail("cpuprofile: " + err.Error())
	}
	r.profileFile = nil
}
