package loader

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/pontoon-net/pontoon/bpf"
	"golang.org/x/sys/unix"
)

// InNetns runs fn on a thread inside the network namespace at path and
// brings that thread back before anything else runs on it. Sockets fn
// opens stay in the namespace. A thread left inside would be ended with
// its goroutine, except the process's first: Go never ends that one, and
// /proc/PID/ns/net, which names the first thread's namespace, would name
// a container's from then on.
func InNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		err := fmt.Errorf("in netns %s: the function ended its goroutine", path)
		defer func() { errc <- err }() // also after runtime.Goexit in fn
		runtime.LockOSThread()
		err = inNetnsLocked(path, fn)
	}()
	return <-errc
}

// inNetnsLocked is InNetns on the calling goroutine, locked to its thread;
// it unlocks the thread unless the thread could not come home, which then
// ends with its goroutine.
func inNetnsLocked(path string, fn func() error) (err error) {
	lost := false
	defer func() {
		if !lost {
			runtime.UnlockOSThread()
		}
	}()
	// thread-self, not /proc/PID/task/TID: /proc may be another pid
	// namespace's.
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open own netns: %w", err)
	}
	defer unix.Close(home)
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	defer func() {
		if serr := unix.Setns(home, unix.CLONE_NEWNET); serr != nil {
			lost = true
			err = errors.Join(err, fmt.Errorf("leave netns %s: %w", path, serr))
		}
	}()
	return fn()
}

// NetnsCookie identifies the calling thread's network namespace the way
// bpf_get_netns_cookie() does inside the socket hooks, which only translate
// loopback destinations for sockets of that namespace. Kernels before 5.14
// have no SO_NETNS_COOKIE: there a BPF program asks the helper itself.
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open socket for netns cookie: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if errors.Is(err, unix.ENOPROTOOPT) {
		return netnsCookieFromBPF()
	}
	if err != nil {
		return 0, fmt.Errorf("read netns cookie: %w", err)
	}
	return cookie, nil
}

// cookieProbeAddr is where the probe socket connects: a documentation
// address (RFC 5737), never a host's or a published one, so no socket hook
// of ours rewrites it first. A UDP connect sends nothing.
var cookieProbeAddr = [4]byte{192, 0, 2, 1}

// netnsCookieFromBPF attaches a connect4 program to this process's own
// cgroup for as long as one UDP connect to cookieProbeAddr on a random
// port takes; the program records bpf_get_netns_cookie() of that connect
// only, and is gone again when this returns.
func netnsCookieFromBPF() (uint64, error) {
	cg, err := ownCgroup()
	if err != nil {
		return 0, fmt.Errorf("read netns cookie: %w", err)
	}
	// Kernels without SO_NETNS_COOKIE charge maps to RLIMIT_MEMLOCK,
	// which RunningKernel lifts.
	if _, err := bpf.RunningKernel(); err != nil {
		return 0, fmt.Errorf("read netns cookie: %w", err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return 0, fmt.Errorf("read netns cookie: create map: %w", err)
	}
	defer m.Close()
	port := uint16(1024 + rand.IntN(64000))
	portBE := int32(port>>8 | (port&0xff)<<8)
	addrLE := int32(uint32(cookieProbeAddr[0]) | uint32(cookieProbeAddr[1])<<8 | uint32(cookieProbeAddr[2])<<16 | uint32(cookieProbeAddr[3])<<24)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.CGroupSockAddr,
		AttachType: ebpf.AttachCGroupInet4Connect,
		License:    "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.LoadMem(asm.R2, asm.R1, 24, asm.Word), // user_port
			asm.JNE.Imm(asm.R2, portBE, "out"),
			asm.LoadMem(asm.R2, asm.R1, 4, asm.Word), // user_ip4
			asm.JNE.Imm(asm.R2, addrLE, "out"),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.FnGetNetnsCookie.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			asm.StoreImm(asm.RFP, -12, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -12),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		return 0, fmt.Errorf("read netns cookie: load probe: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ebpf.AttachCGroupInet4Connect, Program: prog})
	if err != nil {
		return 0, fmt.Errorf("read netns cookie: attach probe to %s: %w", cg, err)
	}
	defer l.Close()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("read netns cookie: open socket: %w", err)
	}
	// The hook runs before the route lookup: a namespace with no route to
	// the address fails the connect, after the program has seen it.
	_ = unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: cookieProbeAddr})
	unix.Close(fd)
	var cookie uint64
	if err := m.Lookup(uint32(0), &cookie); err != nil {
		return 0, fmt.Errorf("read netns cookie: %w", err)
	}
	if cookie == 0 {
		return 0, fmt.Errorf("read netns cookie: the probe on cgroup %s saw no connect", cg)
	}
	return cookie, nil
}

// ownCgroup is the cgroup v2 directory this process belongs to.
func ownCgroup() (string, error) {
	root, err := CgroupV2Root()
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return filepath.Join(root, p), nil
		}
	}
	return "", errors.New("read own cgroup: /proc/self/cgroup has no cgroup v2 line")
}
