package loader

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// CgroupV2Root finds where the unified (v2) cgroup hierarchy is mounted:
// /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
func CgroupV2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	return cgroupV2FromMountinfo(bufio.NewScanner(f))
}

func cgroupV2FromMountinfo(lines *bufio.Scanner) (string, error) {
	for lines.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		fields := strings.Fields(lines.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && i >= 4 {
				if fields[i+1] == "cgroup2" {
					return unescapeMountPath(fields[4]), nil
				}
				break
			}
		}
	}
	if err := lines.Err(); err != nil {
		return "", fmt.Errorf("read mount table: %w", err)
	}
	return "", fmt.Errorf("no cgroup v2 hierarchy is mounted: mount one with 'mount -t cgroup2 none /sys/fs/cgroup/unified' or pass its path explicitly")
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
