package bpf

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Kernel says which helpers newer than the 5.10 floor the running kernel
// has. The programs are built once; Configure tells each object which
// branches the kernel can run (bpf/lib/kernel.h).
type Kernel struct {
	CheckMTU    bool // bpf_check_mtu, 5.12: GSO segments checked against the egress MTU
	CoarseClock bool // bpf_ktime_get_coarse_ns, 5.11: the cheaper clock for conntrack
	// IPIPInnerAtIngress: tc ingress of an ipip device starts at the inner
	// IP header (5.14); before, the outer headers come first and BPF cannot
	// forward what arrives there. No helper to probe: the release says.
	IPIPInnerAtIngress bool
	// IPSummed is where a tc program reads an skb's checksum state
	// (bpf_cast_to_kern_ctx, 6.2, and ip_summed of the kernel's struct
	// sk_buff, from its BTF); nil without them. With it, a NAT rewrite
	// folds the TCP/UDP checksum in the packet rather than by helper.
	IPSummed *SkbBits
}

// SkbBits locates a bitfield of struct sk_buff: its byte, and its shift
// within that byte.
type SkbBits struct{ Byte, Shift uint32 }

// ProbeKernel asks the running kernel. A probe that fails for another
// reason than a missing helper (no privileges) is an error: guessing
// "missing" would load slower or weaker code without saying why.
func ProbeKernel() (Kernel, error) {
	var k Kernel
	for _, p := range []struct {
		have *bool
		fn   asm.BuiltinFunc
	}{
		{&k.CheckMTU, asm.FnCheckMtu},
		{&k.CoarseClock, asm.FnKtimeGetCoarseNs},
	} {
		ok, err := HaveHelper(ebpf.SchedCLS, p.fn)
		if err != nil {
			return Kernel{}, err
		}
		*p.have = ok
	}
	var err error
	if k.IPIPInnerAtIngress, err = releaseAtLeast(5, 14); err != nil {
		return Kernel{}, err
	}
	if k.IPSummed, err = probeIPSummed(); err != nil {
		return Kernel{}, err
	}
	return k, nil
}

// releaseAtLeast compares the running kernel's release with major.minor.
func releaseAtLeast(major, minor int) (bool, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return false, fmt.Errorf("read kernel release: %w", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	var maj, min int
	if _, err := fmt.Sscanf(release, "%d.%d", &maj, &min); err != nil {
		return false, fmt.Errorf("parse kernel release %q: %w", release, err)
	}
	return maj > major || maj == major && min >= minor, nil
}

// HaveHelper reports whether programs of type pt may call fn on this kernel.
func HaveHelper(pt ebpf.ProgramType, fn asm.BuiltinFunc) (bool, error) {
	err := features.HaveProgramHelper(pt, fn)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("probe helper %s for %s programs: %w", fn, pt, err)
	}
	return true, nil
}

// Configure sets the kernel constants in spec before it is loaded; an
// object that does not use one has no such variable, which is fine.
func (k Kernel) Configure(spec *ebpf.CollectionSpec) error {
	var summed SkbBits
	if k.IPSummed != nil {
		summed = *k.IPSummed
	}
	for name, val := range map[string]uint32{
		"kernel_has_check_mtu":         flag(k.CheckMTU),
		"kernel_has_coarse_clock":      flag(k.CoarseClock),
		"kernel_ipip_inner_at_ingress": flag(k.IPIPInnerAtIngress),
		"kernel_has_skb_ip_summed":     flag(k.IPSummed != nil),
		"skb_ip_summed_byte":           summed.Byte,
		"skb_ip_summed_shift":          summed.Shift,
	} {
		v, ok := spec.Variables[name]
		if !ok {
			continue
		}
		if err := v.Set(val); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	if k.IPSummed == nil {
		dropKfuncCalls(spec)
	}
	return nil
}

// dropKfuncCalls turns every kfunc call into r0 = 0. The constants make
// them dead code, but a verifier vets kfunc calls before it removes dead
// code, and refuses them all where it cannot run them (no JIT, or one
// without kfunc calls): the program would not load at all.
func dropKfuncCalls(spec *ebpf.CollectionSpec) {
	for _, p := range spec.Programs {
		for i, ins := range p.Instructions {
			if !ins.IsKfuncCall() {
				continue
			}
			// The same size, so jumps over it still land; the symbol
			// and source line stay, the kfunc's name goes.
			mov := asm.Mov.Imm(asm.R0, 0).WithSource(ins.Source())
			if sym := ins.Symbol(); sym != "" {
				mov = mov.WithSymbol(sym)
			}
			p.Instructions[i] = mov
		}
	}
}

func flag(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// running is probed once per process: the kernel does not change under it.
var running = sync.OnceValues(func() (Kernel, error) {
	// Before 5.11 BPF maps count against RLIMIT_MEMLOCK (8 MiB by
	// default, less than the conntrack tables); later kernels charge the
	// memory cgroup and RemoveMemlock leaves the limit alone.
	if err := rlimit.RemoveMemlock(); err != nil {
		return Kernel{}, fmt.Errorf("lift the locked-memory limit BPF maps count against before Linux 5.11: %w", err)
	}
	return ProbeKernel()
})

// RunningKernel is ProbeKernel for this machine, asked once; it also lifts
// the locked-memory limit that kernels before 5.11 charge maps to.
func RunningKernel() (Kernel, error) { return running() }

// LoadForKernel reads an object with load (LoadTcUplink, ...) and
// configures it for the running kernel.
func LoadForKernel(load func() (*ebpf.CollectionSpec, error)) (*ebpf.CollectionSpec, error) {
	k, err := RunningKernel()
	if err != nil {
		return nil, err
	}
	spec, err := load()
	if err != nil {
		return nil, err
	}
	if err := k.Configure(spec); err != nil {
		return nil, err
	}
	return spec, nil
}
