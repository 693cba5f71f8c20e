package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentCPUProfile: PONTOON_CPUPROFILE's file holds a profile once the
// agent stops, a path that cannot be written is refused with the
// variable's name, and the agent's help names the variable.
func TestAgentCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.prof")
	stop, err := startCPUProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A profile is gzipped protobuf: empty or unflushed would fail here.
	if len(raw) < 20 || raw[0] != 0x1f || raw[1] != 0x8b {
		t.Errorf("profile file holds %d bytes and no gzip header", len(raw))
	}
	if _, err := startCPUProfile(filepath.Join(t.TempDir(), "missing", "agent.prof")); err == nil || !strings.Contains(err.Error(), "PONTOON_CPUPROFILE") {
		t.Errorf("unwritable path: %v, want an error naming PONTOON_CPUPROFILE", err)
	}
	if help := newAgent(&opts{}).Long; !strings.Contains(help, "PONTOON_CPUPROFILE=FILE") {
		t.Error("'pontoon agent --help' does not name PONTOON_CPUPROFILE")
	}
}
