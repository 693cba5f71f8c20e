package vmtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options describe one VM run.
type Options struct {
	// Kernel is a series ("6.1", "6.12") or a linux-image package name.
	Kernel string
	// Command is the argv run inside as root. In systemd mode it runs from a
	// unit once `systemctl is-system-running --wait` has returned.
	Command []string
	// Dir is the working folder in the guest; default the current one.
	Dir string
	// Env is the command's whole environment; default the host's, less the
	// variables that name host-only sockets (see guestEnv).
	Env []string
	// Share lists host folders mounted read-write at the same path. Nil
	// means the Go module holding Dir; empty means none. Everything else is
	// the host's root, read-only, under a throwaway overlay.
	Share []string
	// Files are copied into the guest before its init starts.
	Files []File
	// Systemd boots the host's systemd as PID 1 instead of a shell.
	Systemd bool
	// Timeout bounds the whole run; BootTimeout the time until the command
	// starts. Defaults: 20m and 5m (TCG on a busy 2-core machine is slow).
	Timeout     time.Duration
	BootTimeout time.Duration
	Accel       Accel
	CPUs        int // default min(2, host CPUs)
	MemoryMB    int // default 2048
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
	// Stdout receives the command's output (stdout and stderr, merged);
	// default os.Stdout.
	Stdout io.Writer
	// Console, if set, receives the kernel console as it is printed.
	Console io.Writer
	// Log receives vmtest's own progress lines; default nowhere.
	Log io.Writer
}

// Result is how a run ended when the command reported an exit status.
type Result struct {
	Kernel      *Kernel
	Accel       Accel
	ExitCode    int
	FailedTests []string // names from "--- FAIL:" lines in the output
	SystemState string   // systemd mode: what is-system-running said
	Boot        time.Duration
	Run         time.Duration
}

// ErrTimeout is wrapped by a BootError whose time limit ran out.
var ErrTimeout = errors.New("time limit reached")

// BootError is a run that ended without the command's exit status: the
// kernel did not boot, the guest could not set itself up, or time ran out.
type BootError struct {
	Kernel  string
	Reason  string
	Timeout bool
	// Started says the command had started: its output may be out.
	Started bool
	Qemu    string // qemu's own stderr, if it said anything
	Console string // tail of the kernel console
}

// CrashedBeforeCommand says the kernel oopsed before the command started:
// nothing of the command ran, so booting again is safe. Under TCG, with
// another VM busy, a kernel has oopsed in its clock code once (int3 in
// sched_clock_cpu) and booted fine the next time; a kernel that cannot
// boot at all panics without an oops and is not retried.
func (e *BootError) CrashedBeforeCommand() bool {
	if e.Started || e.Timeout {
		return false
	}
	for _, sign := range []string{"Oops:", "BUG: ", "general protection fault"} {
		if strings.Contains(e.Console, sign) {
			return true
		}
	}
	return false
}

func (e *BootError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kernel %s %s", e.Kernel, e.Reason)
	if e.Qemu != "" {
		fmt.Fprintf(&b, "; qemu said:\n%s", e.Qemu)
	}
	if e.Console != "" {
		fmt.Fprintf(&b, "\nconsole tail:\n%s", e.Console)
	} else {
		b.WriteString(" (the console printed nothing)")
	}
	return b.String()
}

func (e *BootError) Unwrap() error {
	if e.Timeout {
		return ErrTimeout
	}
	return nil
}

const consoleTailLines = 60

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return o, fmt.Errorf("find the working folder: %w", err)
		}
		o.Dir = wd
	}
	if o.Env == nil {
		o.Env = guestEnv(os.Environ())
	}
	if o.Share == nil {
		if root := moduleRoot(o.Dir); root != "" {
			o.Share = []string{root}
		}
	}
	if o.Timeout == 0 {
		o.Timeout = 20 * time.Minute
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 5 * time.Minute
	}
	if o.BootTimeout > o.Timeout {
		o.BootTimeout = o.Timeout
	}
	if o.CPUs == 0 {
		o.CPUs = min(2, runtime.NumCPU())
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 2048
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o, nil
}

// hostOnlyEnv are variables that point at host sockets or sessions; in the
// guest they would mislead (NOTIFY_SOCKET would make an agent under test
// talk to a socket that does not exist there).
var hostOnlyEnv = []string{
	"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "INVOCATION_ID",
	"JOURNAL_STREAM", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "SSH_AUTH_SOCK",
	"SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "DISPLAY", "WAYLAND_DISPLAY", "TMUX", "TMUX_PANE",
}

// guestEnv filters a host environment for the guest.
func guestEnv(env []string) []string {
	var out []string
next:
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		for _, h := range hostOnlyEnv {
			if k == h {
				continue next
			}
		}
		if k == "PONTOON_VMTEST" || k == "PONTOON_VMTEST_KERNEL" {
			continue
		}
		out = append(out, e)
	}
	return out
}

// moduleRoot returns the nearest folder at or above dir with a go.mod.
func moduleRoot(dir string) string {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if d == filepath.Dir(d) {
			return ""
		}
	}
}

// Run boots o.Kernel and runs o.Command inside. A command that ran and
// exited, whatever its status, gives a Result and no error; a run that ended
// otherwise gives a *BootError with the console tail.
func Run(ctx context.Context, o Options) (*Result, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(o.Command) == 0 {
		return nil, errors.New("no command to run in the guest")
	}
	if strings.Contains(o.Command[0], "=") {
		return nil, fmt.Errorf("command %q: a program name with '=' is not supported", o.Command[0])
	}
	qemu, err := findQemu()
	if err != nil {
		return nil, err
	}
	bb, err := findBusybox()
	if err != nil {
		return nil, err
	}
	accel, why, err := chooseAccel(o.Accel, defaultHostPaths)
	if err != nil {
		return nil, err
	}
	k, err := FetchKernel(ctx, o.Kernel, o.Log)
	if err != nil {
		return nil, err
	}
	mods, err := bootModuleFiles(k)
	if err != nil {
		return nil, err
	}
	shares, err := makeShares(o.Share)
	if err != nil {
		return nil, err
	}
	envPath, err := exec.LookPath("env")
	if err != nil {
		return nil, &MissingError{Tool: "env", Package: "coreutils"}
	}
	if envPath, err = filepath.Abs(envPath); err != nil {
		return nil, fmt.Errorf("find env: %w", err)
	}
	nonce, err := newNonce()
	if err != nil {
		return nil, err
	}
	mode := modeCommand
	if o.Systemd {
		mode = modeSystemd
	}
	env := append(append([]string(nil), o.Env...), "PONTOON_VMTEST=1", "PONTOON_VMTEST_KERNEL="+k.Release)
	spec := guestSpec{
		Busybox: bb, Release: k.Release, ModRoot: k.ModulesRoot(), Modules: mods,
		Nonce: nonce, Mode: mode, Shares: shares, Files: o.Files,
		Job:    jobScript(envPath, o.Dir, env, o.Command),
		Limits: hostLimits(),
	}

	tmp, err := os.MkdirTemp("", "pontoon-vmtest-")
	if err != nil {
		return nil, fmt.Errorf("create a temporary folder: %w", err)
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initramfs.cpio")
	if err := writeInitramfsFile(initrd, spec); err != nil {
		return nil, err
	}

	q := qemuConfig{
		Accel: accel, CPUs: o.CPUs, MemoryMB: o.MemoryMB,
		Kernel: k.Vmlinuz(), Initrd: initrd, Append: kernelCmdline(o), Shares: shares,
	}
	fmt.Fprintf(o.Log, "vmtest: booting %s (%s) with %s: %s\n", k.Release, k.Package, accel, why)
	res := &Result{Kernel: k, Accel: accel}
	if err := boot(ctx, o, qemu, q.args(), nonce, k, res); err != nil {
		return nil, err
	}
	return res, nil
}

func writeInitramfsFile(p string, spec guestSpec) error {
	f, err := os.Create(p)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := writeInitramfs(w, spec); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}

func bootModuleFiles(k *Kernel) ([]string, error) {
	dir := filepath.Join(k.ModulesRoot(), k.Release)
	dep, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("open the module index of %s (remove %s to fetch it again): %w", k.Release, k.Root, err)
	}
	defer dep.Close()
	var builtin io.Reader
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		defer f.Close()
		builtin = f
	}
	idx, err := parseModuleIndex(dep, builtin)
	if err != nil {
		return nil, err
	}
	order, err := idx.loadOrder(bootModules)
	if err != nil {
		return nil, fmt.Errorf("kernel %s cannot mount the host root: %w", k.Release, err)
	}
	return order, nil
}

func makeShares(paths []string) ([]share, error) {
	var shares []share
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("share %s: %w", p, err)
		}
		if st, err := os.Stat(abs); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("share %s: not a folder", p)
		}
		if abs == "/" {
			return nil, errors.New("share /: the host root is always shared read-only; share a folder below it")
		}
		shares = append(shares, share{Tag: fmt.Sprintf("rw%d", i), Path: abs})
	}
	return shares, nil
}

func newNonce() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a nonce: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func kernelCmdline(o Options) string {
	args := []string{
		"console=ttyS0", "panic=-1", "loglevel=7",
		// Spectre mitigations only slow an emulated CPU down.
		"mitigations=off",
		// No keyboard or mouse: skip probing for them.
		"i8042.noaux", "i8042.nokbd", "i8042.nopnp",
	}
	if o.Systemd {
		args = append(args, "systemd.unit=pontoon-vmtest.target", "systemd.show_status=error")
	}
	return strings.Join(append(args, o.KernelArgs...), " ")
}

// hostLimits reads the limits the command would have on the host. The Go
// runtime has raised our soft open-files limit to the hard one, and so do Go
// test binaries in the guest, so the soft value read here is what they see.
func hostLimits() map[string]string {
	limits := map[string]string{}
	for flag, res := range map[string]struct {
		resource int
		unit     uint64
	}{"n": {unix.RLIMIT_NOFILE, 1}, "l": {unix.RLIMIT_MEMLOCK, 1024}} {
		var rl unix.Rlimit
		if err := unix.Getrlimit(res.resource, &rl); err != nil {
			continue
		}
		limits[flag] = ulimitValue(rl.Cur, res.unit) + " " + ulimitValue(rl.Max, res.unit)
	}
	return limits
}

func ulimitValue(v, unit uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v/unit, 10)
}
