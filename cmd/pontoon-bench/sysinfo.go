package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sysInfo heads every result: numbers mean little without the machine.
type sysInfo struct {
	Date        string `json:"date"`
	Kernel      string `json:"kernel"`
	CPU         string `json:"cpu"`
	Cores       int    `json:"cores"`
	MemoryGiB   int    `json:"memory_gib"`
	OS          string `json:"os"`
	Go          string `json:"go"`
	Iptables    string `json:"iptables"`
	DockerProxy string `json:"docker_proxy"`
	Pontoon     string `json:"pontoon"`
	TCMode      string `json:"tc_mode,omitempty"`
	// Load averages (1 min) when the run started and ended: other work on
	// the machine shows up as noise and is worth knowing about.
	LoadBefore float64 `json:"load_before"`
	LoadAfter  float64 `json:"load_after"`
}

func loadAverage() float64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return float64(si.Loads[0]) / (1 << unix.SI_LOAD_SHIFT)
}

func collectSysInfo(ctx context.Context, iptablesBin string) sysInfo {
	s := sysInfo{
		Date:       time.Now().UTC().Format(time.RFC3339),
		Kernel:     "unknown",
		CPU:        "unknown",
		Cores:      runtime.NumCPU(),
		Go:         runtime.Version(),
		LoadBefore: loadAverage(),
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		s.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				s.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		s.MemoryGiB = int((uint64(si.Totalram)*uint64(si.Unit) + 1<<29) >> 30)
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				s.OS = strings.Trim(v, `"`)
			}
		}
	}
	if out, err := exec.CommandContext(ctx, iptablesBin, "-V").Output(); err == nil {
		s.Iptables = strings.TrimSpace(string(out))
	}
	s.Pontoon = "unknown"
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		s.Pontoon = strings.TrimSpace(string(out))
		if out, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(out) > 0 {
			s.Pontoon += " (with uncommitted changes)"
		}
	}
	return s
}
