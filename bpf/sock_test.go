package bpf_test

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/bpf"
)

// TestSockProgramsLoad: every socket hook passes the running kernel's
// verifier (the VM matrix runs it on each kernel), the IPv6 ones included;
// the bind hooks where bpf_set_retval exists (5.18), as the loader does.
func TestSockProgramsLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	spec, err := bpf.LoadForKernel(bpf.LoadSock)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{bpf.SockProgSockConnect6, bpf.SockProgSockSendmsg6, bpf.SockProgSockRecvmsg6, bpf.SockProgSockGetpeername6} {
		if spec.Programs[name] == nil {
			t.Errorf("the socket object has no program %s", name)
		}
	}
	if !kernelAtLeast(t, [2]int{5, 18}) {
		delete(spec.Programs, bpf.SockProgSockBind4)
		delete(spec.Programs, bpf.SockProgSockBind6)
	}
	for _, ms := range spec.Maps {
		switch ms.Type {
		case ebpf.PerCPUArray, ebpf.Array, ebpf.RingBuf:
			continue
		}
		if ms.MaxEntries > 1024 {
			ms.MaxEntries = 1024 // the programs are under test, not the tables
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("load socket programs: %v", err)
	}
	defer coll.Close()
	for name := range spec.Programs {
		if coll.Programs[name] == nil {
			t.Errorf("program %s did not load", name)
		}
	}
}
