package vmtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestGuestEnvDropsHostSockets(t *testing.T) {
	in := []string{"PATH=/usr/bin", "NOTIFY_SOCKET=/run/systemd/notify", "HOME=/root",
		"SSH_AUTH_SOCK=/tmp/a", "PONTOON_VMTEST=1", "PONTOON_VMTEST_SMOKE_FAIL=1", "LISTEN_FDS=3"}
	want := []string{"PATH=/usr/bin", "HOME=/root", "PONTOON_VMTEST_SMOKE_FAIL=1"}
	if got := guestEnv(in); !slices.Equal(got, want) {
		t.Errorf("guestEnv = %q, want %q", got, want)
	}
}

func TestModuleRoot(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := moduleRoot(deep); got != root {
		t.Errorf("moduleRoot(%s) = %s, want %s", deep, got, root)
	}
}

func TestQemuArgs(t *testing.T) {
	q := qemuConfig{
		Accel: AccelTCG, CPUs: 2, MemoryMB: 1024, Kernel: "/k/vmlinuz", Initrd: "/t/initrd",
		Append: "console=ttyS0", Shares: []share{{Tag: "rw0", Path: "/work/a,b"}},
	}
	args := strings.Join(q.args(), " ")
	for _, want := range []string{
		"-accel tcg,thread=multi -cpu max",
		"-no-reboot",
		"-smp 2", "-m 1024",
		"path=/dev/fd/3", "path=/dev/fd/4",
		"local,id=hostroot,path=/,security_model=none,readonly=on",
		"local,id=rw0,path=/work/a,,b,security_model=none",
		"mount_tag=rw0",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("qemu args lack %q:\n%s", want, args)
		}
	}
	q.Accel = AccelKVM
	if args := strings.Join(q.args(), " "); !strings.Contains(args, "-accel kvm -cpu host") {
		t.Errorf("kvm args lack -accel kvm: %s", args)
	}
}

func TestKernelCmdline(t *testing.T) {
	cmd := kernelCmdline(Options{Systemd: true, KernelArgs: []string{"loglevel=7"}})
	for _, want := range []string{"console=ttyS0", "panic=-1", "systemd.unit=pontoon-vmtest.target"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("cmdline %q lacks %q", cmd, want)
		}
	}
	// The kernel takes the last of repeated parameters: extras go last.
	if !strings.HasSuffix(cmd, " loglevel=7") {
		t.Errorf("cmdline %q does not end with the extra arguments", cmd)
	}
	if cmd := kernelCmdline(Options{}); strings.Contains(cmd, "systemd.unit") {
		t.Errorf("command-mode cmdline %q names a systemd unit", cmd)
	}
}

func TestMakeSharesRejectsRootAndFiles(t *testing.T) {
	if _, err := makeShares([]string{"/"}); err == nil {
		t.Error("sharing / read-write was accepted")
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := makeShares([]string{f}); err == nil {
		t.Error("sharing a file was accepted")
	}
	got, err := makeShares([]string{t.TempDir(), t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Tag != "rw0" || got[1].Tag != "rw1" {
		t.Errorf("tags %q %q, want rw0 rw1", got[0].Tag, got[1].Tag)
	}
}
