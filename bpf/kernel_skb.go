package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// probeIPSummed finds ip_summed in the running kernel's struct sk_buff and
// checks that a tc program may read it through bpf_cast_to_kern_ctx: nil
// when the kernel lacks BTF, the kfunc, or the field, or its verifier
// refuses the read.
func probeIPSummed() (*SkbBits, error) {
	kernel, err := btf.LoadKernelSpec()
	if errors.Is(err, ebpf.ErrNotSupported) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read kernel BTF: %w", err)
	}
	var cast *btf.Func
	if err := kernel.TypeByName("bpf_cast_to_kern_ctx", &cast); err != nil {
		return nil, nil
	}
	castID, err := kernel.TypeID(cast)
	if err != nil {
		return nil, fmt.Errorf("read kernel BTF: %w", err)
	}
	var skb *btf.Struct
	if err := kernel.TypeByName("sk_buff", &skb); err != nil {
		return nil, nil
	}
	off, size, ok := findMember(skb.Members, "ip_summed", 0)
	// One byte holds it, as since 2.6: a wider or split field is not the
	// one the datapath knows how to read.
	if !ok || size != 2 || off%8+size > 8 {
		return nil, nil
	}
	bits := &SkbBits{Byte: uint32(off / 8), Shift: uint32(off % 8)}

	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(castID)},
			asm.LoadMem(asm.R0, asm.R0, int16(bits.Byte), asm.Byte),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("probe bpf_cast_to_kern_ctx for tc programs: %w (reading the kernel's skb needs CAP_PERFMON besides CAP_BPF)", err)
	}
	if err != nil {
		return nil, nil // the verifier refuses the kfunc or the read
	}
	prog.Close()
	return bits, nil
}

// findMember looks for name in members and in the anonymous structs and
// unions among them, and returns its bit offset from the outermost struct
// and its size in bits (0 for a field that is no bitfield).
func findMember(members []btf.Member, name string, base btf.Bits) (btf.Bits, btf.Bits, bool) {
	for _, m := range members {
		if m.Name == name {
			return base + m.Offset, m.BitfieldSize, true
		}
		if m.Name != "" {
			continue
		}
		var inner []btf.Member
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			inner = t.Members
		case *btf.Union:
			inner = t.Members
		}
		if off, size, ok := findMember(inner, name, base+m.Offset); ok {
			return off, size, true
		}
	}
	return 0, 0, false
}
