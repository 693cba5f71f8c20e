// Package smoke is the test binary vmtest boots in each kernel to prove the
// guest is fit for Pontoon's privileged tests: root, bpffs, cgroup2, netns,
// loadable modules, and a BPF program attached with TCX where the kernel has
// it and with legacy tc (clsact + cls_bpf) everywhere. It runs only inside a
// vmtest guest (PONTOON_VMTEST=1): on a host it would load modules.
package smoke

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tcxMinKernel is the first kernel with TCX links (6.6).
var tcxMinKernel = [2]int{6, 6}

func requireGuest(t *testing.T) {
	t.Helper()
	if os.Getenv("PONTOON_VMTEST") != "1" {
		t.Skip("runs only inside a vmtest guest (PONTOON_VMTEST=1): it loads modules and attaches BPF")
	}
}

func kernelVersion(t *testing.T) (int, int) {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err != nil {
		t.Fatalf("parse kernel release %q: %v", rel, err)
	}
	return major, minor
}

func atLeast(major, minor int, want [2]int) bool {
	return major > want[0] || (major == want[0] && minor >= want[1])
}

func TestGuestEnvironment(t *testing.T) {
	requireGuest(t)
	if os.Geteuid() != 0 {
		t.Fatalf("euid %d, want root", os.Geteuid())
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil {
		t.Fatalf("statfs /sys/fs/bpf: %v", err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		t.Errorf("/sys/fs/bpf is not bpffs (magic %#x)", st.Type)
	}
	if mnt := cgroup2Mount(t); mnt == "" {
		t.Error("no cgroup2 mount in /proc/self/mountinfo")
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatalf("find lo: %v", err)
	}
	if lo.Flags&net.FlagUp == 0 {
		t.Error("lo is down")
	}
	dir, err := os.MkdirTemp("", "smoke-")
	if err != nil {
		t.Fatalf("/tmp is not writable: %v", err)
	}
	os.RemoveAll(dir)

	// vmtest passes the host's open-files limit on; the kernel's default
	// for PID 1 (4096 hard) is too low for the churn tests.
	if want := os.Getenv("PONTOON_VMTEST_WANT_NOFILE"); want != "" {
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatalf("getrlimit: %v", err)
		}
		if got := fmt.Sprint(rl.Max); got != want {
			t.Errorf("hard open-files limit %s, want the host's %s", got, want)
		}
	}

	ns := fmt.Sprintf("vmtest-smoke-%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	run(t, "ip", "netns", "exec", ns, "ip", "link", "show", "lo")
	run(t, "ip", "netns", "del", ns)
	run(t, "bpftool", "version")

	// Auto-loading goes through /proc/sys/kernel/modprobe; an explicit
	// modprobe through PATH. Both must find the package's modules.
	run(t, "modprobe", "bridge")
	if _, err := os.Stat("/sys/module/bridge"); err != nil {
		t.Errorf("bridge module not loaded after modprobe: %v", err)
	}
}

func cgroup2Mount(t *testing.T) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("open mountinfo: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fields := strings.Fields(post); len(fields) > 0 && fields[0] == "cgroup2" {
			if pf := strings.Fields(pre); len(pf) > 4 {
				return pf[4]
			}
		}
	}
	return ""
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// counterProg loads a sched_cls program that counts the packets it sees in
// slot 0 of an array map and lets them pass.
func counterProg(t *testing.T) (*ebpf.Program, *ebpf.Map) {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatalf("create counter map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			// TC_ACT_OK, which is also TCX_PASS.
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load counter program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog, m
}

// enterNewNetns moves the test's goroutine into a fresh network namespace
// with lo up. The thread stays locked and dies with the test.
func enterNewNetns(t *testing.T) netlink.Link {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare netns: %v", err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatalf("find lo: %v", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatalf("set lo up: %v", err)
	}
	return lo
}

// sendAndCount sends a few UDP datagrams over lo and returns what the
// counter saw.
func sendAndCount(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	c, err := net.Dial("udp4", "127.0.0.1:9")
	if err != nil {
		t.Fatalf("dial udp: %v", err)
	}
	defer c.Close()
	for range 3 {
		// Port 9 has no listener: the ICMP errors that come back are fine.
		_, _ = c.Write([]byte("smoke"))
	}
	var n uint64
	if err := m.Lookup(uint32(0), &n); err != nil {
		t.Fatalf("read counter: %v", err)
	}
	return n
}

func attachLegacy(lo netlink.Link, prog *ebpf.Program) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: lo.Attrs().Index,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil {
		return fmt.Errorf("add clsact qdisc to lo: %w", err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: lo.Attrs().Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    1,
			Protocol:  unix.ETH_P_ALL,
			Priority:  1,
		},
		Fd:           prog.FD(),
		Name:         "smoke",
		DirectAction: true,
	}
	if err := netlink.FilterAdd(filter); err != nil {
		return fmt.Errorf("add cls_bpf filter to lo: %w", err)
	}
	return nil
}

// TestTCXAttach needs kernel >= 6.6: it skips below and fails above.
func TestTCXAttach(t *testing.T) {
	requireGuest(t)
	major, minor := kernelVersion(t)
	if !atLeast(major, minor, tcxMinKernel) {
		t.Skipf("needs kernel >= %d.%d for tcx (running %d.%d)", tcxMinKernel[0], tcxMinKernel[1], major, minor)
	}
	lo := enterNewNetns(t)
	prog, m := counterProg(t)
	l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		t.Fatalf("attach tcx to lo on kernel %d.%d: %v", major, minor, err)
	}
	defer l.Close()
	if n := sendAndCount(t, m); n == 0 {
		t.Error("tcx program saw no packets on lo")
	}
}

// TestLegacyTCAttach is the fallback path every kernel must keep working;
// it also proves that sch_ingress and cls_bpf auto-load in the guest.
func TestLegacyTCAttach(t *testing.T) {
	requireGuest(t)
	lo := enterNewNetns(t)
	prog, m := counterProg(t)
	if err := attachLegacy(lo, prog); err != nil {
		t.Fatal(err)
	}
	if n := sendAndCount(t, m); n == 0 {
		t.Error("cls_bpf program saw no packets on lo")
	}
}

// TestAttachMode does what the loader does, TCX first and legacy tc when
// the kernel has no TCX, and says which mode it used.
func TestAttachMode(t *testing.T) {
	requireGuest(t)
	major, minor := kernelVersion(t)
	lo := enterNewNetns(t)
	prog, m := counterProg(t)
	mode := "tcx"
	l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXIngress})
	switch {
	case err == nil:
		defer l.Close()
	case errors.Is(err, ebpf.ErrNotSupported):
		if atLeast(major, minor, tcxMinKernel) {
			t.Fatalf("kernel %d.%d >= %d.%d reports tcx unsupported: %v", major, minor, tcxMinKernel[0], tcxMinKernel[1], err)
		}
		mode = "legacy-tc"
		if err := attachLegacy(lo, prog); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("attach tcx: %v", err)
	}
	if n := sendAndCount(t, m); n == 0 {
		t.Errorf("%s program saw no packets on lo", mode)
	}
	t.Logf("attach mode: %s (kernel %d.%d)", mode, major, minor)
}

// TestDeliberateFailure fails on purpose when PONTOON_VMTEST_SMOKE_FAIL=1,
// so that vmtest's own tests can check that a failure inside the guest
// reaches the host with its name and output.
func TestDeliberateFailure(t *testing.T) {
	requireGuest(t)
	if os.Getenv("PONTOON_VMTEST_SMOKE_FAIL") != "1" {
		t.Skip("fails only when PONTOON_VMTEST_SMOKE_FAIL=1")
	}
	t.Log("deliberate failure: this line comes from inside the guest")
	t.Fatal("deliberate failure requested by PONTOON_VMTEST_SMOKE_FAIL=1")
}
