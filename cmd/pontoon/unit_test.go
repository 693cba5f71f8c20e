package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitFile checks the shipped unit with systemd's own verifier and
// holds the settings the agent's notify protocol relies on.
func TestUnitFile(t *testing.T) {
	unit, err := os.ReadFile("pontoon.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "ExecStart=/usr/local/bin/pontoon agent", "CAP_BPF", "CAP_NET_ADMIN", "RequiresMountsFor=/sys/fs/bpf", "Before=docker.service", "$PONTOON_AGENT_ARGS", "--docker-plugin"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("needs systemd-analyze (Debian package systemd) to verify the unit")
	}
	// Verify a copy whose ExecStart points at the binary under test:
	// systemd-analyze checks that the executable exists.
	path := filepath.Join(t.TempDir(), "pontoon.service")
	text := strings.Replace(string(unit), "/usr/local/bin/pontoon", bin, 1)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "verify", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "pontoon.service") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
