package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sysInfo heads every result: numbers mean little without the machine.
type sysInfo struct {
	Date   string `json:"date"`
	Kernel string `json:"kernel"`
	CPU    string `json:"cpu"`
	// Mitigations are the kernel's speculation mitigations that tax every
	// call and return (a BPF program's helpers and subprograms): with
	// SRSO's Safe RET, for one, the per-packet figures of the same code
	// measured 2.2x those of a host without it, the floor included.
	Mitigations string `json:"mitigations,omitempty"`
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

// callMitigations names the speculation mitigations on calls and returns
// the kernel reports (in dir, /sys/devices/system/cpu/vulnerabilities) as
// in force, or "" when it reports none of them.
func callMitigations(dir string) string {
	var in []string
	for _, name := range []string{"spectre_v2", "retbleed", "spec_rstack_overflow"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if v := strings.TrimSpace(string(b)); err == nil && v != "Not affected" {
			in = append(in, name+": "+v)
		}
	}
	return strings.Join(in, "; ")
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
		var family, model string
		sc := bufio.NewScanner(f)
		for sc.Scan() && sc.Text() != "" { // the first CPU's block
			k, v, _ := strings.Cut(sc.Text(), ":")
			switch strings.TrimSpace(k) {
			case "model name":
				s.CPU = strings.TrimSpace(v)
			case "cpu family":
				family = strings.TrimSpace(v)
			case "model":
				model = strings.TrimSpace(v)
			}
		}
		f.Close()
		if family != "" && model != "" {
			s.CPU += " (family " + family + ", model " + model + ")"
		}
	}
	s.Mitigations = callMitigations("/sys/devices/system/cpu/vulnerabilities")
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
