package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests boot real VMs. They skip when root, qemu, busybox-static or
// the kernels are missing, except under CI, where `make deps` has installed
// them and a skip would hide a broken setup.

var buildDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// vmKernels is the kernel matrix: PONTOON_VMTEST_KERNELS or 5.10, 6.1 and 6.12.
func vmKernels() []string {
	if s := os.Getenv("PONTOON_VMTEST_KERNELS"); s != "" {
		return strings.Fields(strings.ReplaceAll(s, ",", " "))
	}
	return []string{"5.10", "6.1", "6.12"}
}

func requireVM(t *testing.T, kernels ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs: skipped in -short mode")
	}
	missing := func(why string) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf("%s; CI runs `make deps`, which should have provided it", why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		missing("needs root: qemu exports the host's / to the guest and must read all of it")
	}
	if _, err := findQemu(); err != nil {
		missing(err.Error())
	}
	if _, err := findBusybox(); err != nil {
		missing(err.Error())
	}
	for _, k := range kernels {
		if _, err := FetchKernel(context.Background(), k, testLog{t}); err != nil {
			missing(fmt.Sprintf("kernel %s: %v", k, err))
		}
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var (
	buildOnce sync.Once
	buildErr  error
)

// buildBinaries compiles the smoke test binary and vmrun once per test run.
func buildBinaries(t *testing.T) (smoke, vmrun string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "vmtest-bin-")
		if buildErr != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		for _, args := range [][]string{
			{"test", "-c", "-o", filepath.Join(buildDir, "smoke.test"), "./smoke"},
			{"build", "-o", filepath.Join(buildDir, "vmrun"), "./cmd/vmrun"},
		} {
			if out, err := exec.Command(goBin, args...).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "smoke.test"), filepath.Join(buildDir, "vmrun")
}

func hasTCX(release string) bool {
	var major, minor int
	fmt.Sscanf(release, "%d.%d", &major, &minor)
	return major > 6 || (major == 6 && minor >= 6)
}

// TestVMSmoke boots each kernel and runs the smoke tests inside: the guest
// is fit for privileged tests, and TCX is used exactly where the kernel has it.
func TestVMSmoke(t *testing.T) {
	kernels := vmKernels()
	requireVM(t, kernels...)
	smoke, _ := buildBinaries(t)
	for _, k := range kernels {
		t.Run(k, func(t *testing.T) {
			var rl unix.Rlimit
			if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			res, err := Run(context.Background(), Options{
				Kernel:  k,
				Command: []string{smoke, "-test.v", "-test.count=1"},
				Env:     append(guestEnv(os.Environ()), fmt.Sprintf("PONTOON_VMTEST_WANT_NOFILE=%d", rl.Max)),
				Stdout:  &out,
				Log:     testLog{t},
				Timeout: 5 * time.Minute,
			})
			if err != nil {
				t.Fatalf("run smoke tests: %v\noutput:\n%s", err, out.String())
			}
			t.Logf("kernel %s: boot %.1fs, tests %.1fs (%s)", res.Kernel.Release, res.Boot.Seconds(), res.Run.Seconds(), res.Accel)
			if res.ExitCode != 0 {
				t.Fatalf("smoke tests exited %d, failed %v:\n%s", res.ExitCode, res.FailedTests, out.String())
			}
			want := []string{"--- PASS: TestGuestEnvironment", "--- PASS: TestLegacyTCAttach", "--- PASS: TestAttachMode"}
			if hasTCX(res.Kernel.Release) {
				want = append(want, "--- PASS: TestTCXAttach", "attach mode: tcx")
			} else {
				want = append(want, "--- SKIP: TestTCXAttach", "needs kernel >= 6.6 for tcx", "attach mode: legacy-tc")
			}
			for _, w := range want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("kernel %s: output lacks %q:\n%s", res.Kernel.Release, w, out.String())
				}
			}
		})
	}
}

// TestVMFailingTestFailsVmrun: a test failing inside the guest makes vmrun
// exit non-zero and name the test, with the test's own output.
func TestVMFailingTestFailsVmrun(t *testing.T) {
	kernels := vmKernels()
	k := kernels[len(kernels)-1]
	requireVM(t, k)
	smoke, vmrun := buildBinaries(t)
	cmd := exec.Command(vmrun, "-kernel", k, "-timeout", "5m", "--", smoke, "-test.v", "-test.run", "TestDeliberateFailure")
	cmd.Env = append(os.Environ(), "PONTOON_VMTEST_SMOKE_FAIL=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("vmrun: %v, want exit status 1 (the test binary's)\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "failed: TestDeliberateFailure") {
		t.Errorf("vmrun's message does not name the failed test:\n%s", stderr.String())
	}
	for _, w := range []string{"--- FAIL: TestDeliberateFailure", "this line comes from inside the guest"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, stdout.String())
		}
	}
}

// TestVMKernelThatCannotBoot: a kernel whose init does not exist panics;
// the run ends at once (not at its time limit) with the panic in the tail.
func TestVMKernelThatCannotBoot(t *testing.T) {
	k := vmKernels()[0]
	requireVM(t, k)
	_, err := Run(context.Background(), Options{
		Kernel:     k,
		Command:    []string{"/bin/true"},
		KernelArgs: []string{"rdinit=/no/such/init"},
		Stdout:     testLog{t},
		Log:        testLog{t},
		Timeout:    5 * time.Minute,
	})
	var be *BootError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want a BootError", err)
	}
	if be.Timeout {
		t.Errorf("the run hit its time limit instead of ending at the panic: %v", err)
	}
	if !strings.Contains(be.Console, "Kernel panic") {
		t.Errorf("console tail lacks the panic:\n%s", be.Console)
	}
	if !strings.Contains(err.Error(), "console tail:") {
		t.Errorf("error does not show the console tail: %v", err)
	}
	if be.Started || be.CrashedBeforeCommand() {
		t.Errorf("a kernel that cannot boot reads as started %v, crashed (worth a retry) %v", be.Started, be.CrashedBeforeCommand())
	}
}

// TestVMTimeLimit: a guest that never gets to the command (its init is a
// shell waiting on a console with no input) ends at its time limit with
// ErrTimeout and the console tail. The limit leaves a loaded machine ample
// time to print the kernel's first lines.
func TestVMTimeLimit(t *testing.T) {
	k := vmKernels()[0]
	requireVM(t, k)
	_, err := Run(context.Background(), Options{
		Kernel:     k,
		Command:    []string{"/bin/true"},
		KernelArgs: []string{"rdinit=/bin/sh"},
		Stdout:     testLog{t},
		Log:        testLog{t},
		Timeout:    30 * time.Second,
	})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	var be *BootError
	if !errors.As(err, &be) || !strings.Contains(be.Reason, "did not boot within 30s") {
		t.Fatalf("err = %v, want one saying it did not boot within 30s", err)
	}
	// Kernel lines carry a printk timestamp: "[    1.234567] ...".
	if !strings.Contains(be.Console, "] ") || !strings.Contains(err.Error(), "console tail:") {
		t.Errorf("error shows no kernel console output: %v", err)
	}
}

// TestVMSystemd boots systemd as PID 1 with a unit file from the
// repository, starts it and a transient unit with systemctl, and checks the
// system reached running (or degraded).
func TestVMSystemd(t *testing.T) {
	kernels := vmKernels()
	k := kernels[len(kernels)-1]
	requireVM(t, k)
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		t.Skip("the host has no systemd to boot")
	}
	out, res, err := Script(context.Background(), Options{
		Kernel:  k,
		Systemd: true,
		Files:   []File{UnitFile("testdata/vmtest-hello.service")},
		Log:     testLog{t},
		Timeout: 10 * time.Minute,
	}, `
test "$(cat /proc/1/comm)" = systemd
systemctl start vmtest-hello.service
systemctl is-active vmtest-hello.service
cat /run/vmtest-hello
systemd-run --wait --quiet --unit vmtest-transient sh -c 'echo transient ran > /run/vmtest-transient'
cat /run/vmtest-transient
echo "system: $(systemctl is-system-running)"
`)
	if err != nil {
		t.Fatalf("boot systemd: %v\noutput:\n%s", err, out)
	}
	t.Logf("kernel %s with systemd: boot %.1fs, script %.1fs", res.Kernel.Release, res.Boot.Seconds(), res.Run.Seconds())
	if res.ExitCode != 0 {
		t.Fatalf("script exited %d:\n%s", res.ExitCode, out)
	}
	if !slices.Contains([]string{"running", "degraded"}, res.SystemState) {
		t.Errorf("systemctl is-system-running said %q, want running or degraded", res.SystemState)
	}
	for _, w := range []string{"active", "hello from a unit", "transient ran"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
