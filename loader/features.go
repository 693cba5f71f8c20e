package loader

import (
	"errors"
	"fmt"
	"math"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pontoon-net/pontoon/bpf"
)

// MinKernel is the oldest Linux release the datapath loads on. Each
// feature newer than it is probed at load and either replaced by a fallback
// or switched off, and Features says which.
const MinKernel = "5.10"

// Feature is one kernel capability beyond MinKernel, as probed at load.
type Feature struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	// Since is the first Linux release that has it.
	Since string `json:"since"`
	// Without says what Pontoon does on a kernel that lacks it.
	Without string `json:"without"`
}

// String is the feature's line in `pontoon status`.
func (f Feature) String() string {
	if f.Available {
		return f.Name + ": available"
	}
	return fmt.Sprintf("%s: unavailable, needs Linux %s (%s)", f.Name, f.Since, f.Without)
}

// Feature names, as `pontoon status` shows them.
const (
	FeatureTCX             = "tcx"
	FeaturePortReservation = "published-port reservation"
	FeatureGSOMTUCheck     = "gso mtu check"
	FeatureCoarseClock     = "coarse conntrack clock"
	FeatureIPIPForwarding  = "bpf forwarding from ipip uplinks"
	FeatureChecksumInPlace = "checksums folded in place"
)

// kernelFeatures is what one probe of the running kernel found.
type kernelFeatures struct {
	bpf             bpf.Kernel
	tcx             bool
	portReservation bool
}

func (k kernelFeatures) list() []Feature {
	return []Feature{
		{FeatureTCX, k.tcx, "6.6", "legacy tc: clsact qdisc + cls_bpf filters"},
		{FeaturePortReservation, k.portReservation, "5.18",
			"host processes may bind published ports; local clients still reach the container"},
		{FeatureGSOMTUCheck, k.bpf.CheckMTU, "5.12",
			"GRO packets forwarded in BPF are not checked against a smaller egress MTU"},
		{FeatureCoarseClock, k.bpf.CoarseClock, "5.11", "conntrack reads the precise clock, dearer per call"},
		{FeatureIPIPForwarding, k.bpf.IPIPInnerAtIngress, "5.14",
			"the stack forwards what arrives on an ipip uplink, after translation: its FORWARD policy applies"},
		{FeatureChecksumInPlace, k.bpf.IPSummed != nil, "6.2",
			"tc NAT folds TCP/UDP checksums by helper calls, dearer per packet (in place also needs kernel BTF)"},
	}
}

// probeKernel asks the running kernel for everything the datapath may use
// beyond MinKernel.
func probeKernel() (kernelFeatures, error) {
	var k kernelFeatures
	var err error
	if k.bpf, err = bpf.RunningKernel(); err != nil {
		return k, err
	}
	// The bind hooks refuse with EADDRINUSE through bpf_set_retval (5.18)
	// and look at every host address with bpf_for_each_map_elem (5.13).
	if k.portReservation, err = bpf.HaveHelper(ebpf.CGroupSockAddr, asm.FnSetRetval); err != nil {
		return k, err
	}
	if k.tcx, err = haveTCX(); err != nil {
		return k, err
	}
	return k, nil
}

// haveTCX attaches a trivial program to an interface that cannot exist:
// cilium/ebpf tells a kernel without TCX (ErrNotSupported) from the
// missing interface.
func haveTCX() (bool, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return false, fmt.Errorf("probe tcx: load a program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxInt32, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		l.Close()
		return true, nil
	}
	return !errors.Is(err, ebpf.ErrNotSupported), nil
}

// Features lists the kernel features beyond MinKernel and whether this
// datapath has them.
func (d *Datapath) Features() []Feature { return d.kernel.list() }
