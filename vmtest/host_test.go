package vmtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChooseAccel(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "present")
	if err := os.WriteFile(present, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "absent")
	pvm := hostPaths{kvmPVM: present, kvmDev: present}
	plain := hostPaths{kvmPVM: absent, kvmDev: present}
	none := hostPaths{kvmPVM: absent, kvmDev: absent}
	tests := []struct {
		name    string
		want    Accel
		hp      hostPaths
		got     Accel
		wantErr bool
	}{
		{"pvm host falls back to tcg", AccelAuto, pvm, AccelTCG, false},
		{"plain kvm is used", AccelAuto, plain, AccelKVM, false},
		{"no kvm device", AccelAuto, none, AccelTCG, false},
		{"tcg asked for", AccelTCG, plain, AccelTCG, false},
		{"kvm asked for on pvm", AccelKVM, pvm, "", true},
		{"unknown accelerator", "hvf", plain, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why, err := chooseAccel(tt.want, tt.hp)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.got {
				t.Errorf("accel = %q (%s), want %q", got, why, tt.got)
			}
		})
	}
}

func TestMissingErrorNamesPackage(t *testing.T) {
	err := &MissingError{Tool: QemuBinary, Package: "qemu-system-x86"}
	if msg := err.Error(); !strings.Contains(msg, "apt-get install qemu-system-x86") || !strings.Contains(msg, QemuBinary) {
		t.Errorf("message %q does not say what to install", msg)
	}
}

func TestIsStatic(t *testing.T) {
	if _, err := isStatic("/nonexistent/busybox"); err == nil {
		t.Error("isStatic on a missing file returned no error")
	}
	// A shell script is not ELF: it must not pass as a static busybox.
	p := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := isStatic(p); err == nil {
		t.Error("isStatic accepted a shell script")
	}
}
