package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// kernelMemory is the kernel's unreclaimable slab, per-CPU and vmalloc
// memory in bytes: where nf_tables keeps rules, their counters and the
// per-chain rule blobs.
func kernelMemory() (float64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	defer f.Close()
	var total float64
	s := bufio.NewScanner(f)
	for s.Scan() {
		name, rest, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		switch name {
		case "SUnreclaim", "Percpu", "VmallocUsed":
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("meminfo %s: %w", name, err)
			}
			total += kb * 1024
		}
	}
	return total, s.Err()
}

// processMemory sums the resident (RSS) and proportional (PSS: shared
// pages split between their users) memory of processes, in bytes.
func processMemory(pids []int) (rss, pss float64, err error) {
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			return 0, 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) < 2 {
				continue
			}
			kb, perr := strconv.ParseFloat(fields[1], 64)
			if perr != nil {
				continue
			}
			switch fields[0] {
			case "Rss:":
				rss += kb * 1024
			case "Pss:":
				pss += kb * 1024
			}
		}
		f.Close()
		if err := s.Err(); err != nil {
			return 0, 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
		}
	}
	return rss, pss, nil
}
