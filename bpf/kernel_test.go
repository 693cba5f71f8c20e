package bpf_test

import (
	"bytes"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/maps"
)

// TestProbeKernel: each helper is found exactly on the kernels that have
// it, so the datapath never runs the fallback where it need not, nor the
// helper where it cannot.
func TestProbeKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("probing BPF helpers needs root")
	}
	k, err := bpf.RunningKernel()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		got   bool
		since [2]int
	}{
		{"bpf_check_mtu", k.CheckMTU, [2]int{5, 12}},
		{"bpf_ktime_get_coarse_ns", k.CoarseClock, [2]int{5, 11}},
	} {
		if want := kernelAtLeast(t, c.since); c.got != want {
			t.Errorf("%s found: %v, want %v (Linux %d.%d)", c.name, c.got, want, c.since[0], c.since[1])
		}
	}
	// ip_summed through bpf_cast_to_kern_ctx needs the kfunc (6.2) and
	// the kernel's BTF to find the field in.
	// Backports may bring them to older releases: only "6.2 and BTF
	// means found" holds everywhere.
	_, btfErr := os.Stat("/sys/kernel/btf/vmlinux")
	if kernelAtLeast(t, [2]int{6, 2}) && btfErr == nil && k.IPSummed == nil {
		t.Error("ip_summed not readable from tc programs on Linux 6.2 or later with BTF")
	}
	if btfErr != nil && k.IPSummed != nil {
		t.Errorf("ip_summed found at %+v without kernel BTF", *k.IPSummed)
	}
	if k.IPSummed != nil && (k.IPSummed.Byte < 64 || k.IPSummed.Shift > 6) {
		// Past the list pointers, the socket, the timestamp and cb[48].
		t.Errorf("ip_summed at byte %d, bit %d of struct sk_buff: not where any kernel has it", k.IPSummed.Byte, k.IPSummed.Shift)
	}
}

// TestFallbackVariantsLoad loads every tc object configured as for the
// 5.10 floor, whatever the kernel: the fallbacks must pass a new kernel's
// verifier too (the VM matrix runs the newest variant on each kernel).
func TestFallbackVariantsLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	if _, err := bpf.RunningKernel(); err != nil { // lifts the memlock limit
		t.Fatal(err)
	}
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){
		"tc_uplink": bpf.LoadTcUplink, "tc_bridge": bpf.LoadTcBridge, "tc_endpoint": bpf.LoadTcEndpoint,
	} {
		spec, err := load()
		if err != nil {
			t.Fatal(err)
		}
		if name != "tc_endpoint" {
			// A renamed constant would leave the helper call in place.
			for _, v := range []string{"kernel_has_check_mtu", "kernel_has_coarse_clock", "kernel_has_skb_ip_summed", "skb_ip_summed_byte", "skb_ip_summed_shift"} {
				if _, ok := spec.Variables[v]; !ok {
					t.Errorf("%s has no constant %s", name, v)
				}
			}
		}
		if err := (bpf.Kernel{}).Configure(spec); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// A verifier that cannot run kfuncs refuses even dead calls.
		for pname, p := range spec.Programs {
			for _, ins := range p.Instructions {
				if ins.IsKfuncCall() {
					t.Errorf("%s/%s keeps a kfunc call with every feature off: %v", name, pname, ins)
				}
			}
		}
		for _, ms := range spec.Maps {
			switch ms.Type {
			case ebpf.PerCPUArray, ebpf.Array, ebpf.RingBuf:
				continue // sized by their index or in pages
			}
			if ms.MaxEntries > 1024 {
				ms.MaxEntries = 1024 // the programs are under test, not the tables
			}
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			t.Fatalf("load %s with every feature off: %v", name, err)
		}
		coll.Close()
	}
}

// TestIPIPIngressBefore514 runs uplink_ingress_ipip configured for a
// kernel before 5.14, where tc ingress of an ipip device shows the outer
// Ethernet and IP headers first: the inner packet is translated past
// them, the outer headers are left alone, and the packet goes to the
// stack (BPF cannot forward it with them on).
func TestIPIPIngressBefore514(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs and BPF_PROG_TEST_RUN need root")
	}
	if _, err := bpf.RunningKernel(); err != nil { // lifts the memlock limit
		t.Fatal(err)
	}
	spec, err := bpf.LoadTcUplink()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := spec.Variables["kernel_ipip_inner_at_ingress"]; !ok {
		t.Fatal("tc_uplink has no constant kernel_ipip_inner_at_ingress")
	}
	if err := (bpf.Kernel{}).Configure(spec); err != nil {
		t.Fatal(err)
	}
	var o bpf.TcUplinkObjects
	if err := spec.LoadAndAssign(&o, nil); err != nil {
		t.Fatalf("load tc_uplink configured for 5.10: %v", err)
	}
	defer o.Close()
	if err := maps.NewBindings(o.Bindings).Put(tcpWeb); err != nil {
		t.Fatal(err)
	}
	outer := func(inner []byte) []byte {
		ip := ipv4(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), layers.IPProtocolIPv4)
		return frame(t, serialize(t, ip, gopacket.Payload(inner)))
	}
	in := outer(tcpDatagram(t, clientPort, tcpWeb.Host, syn))
	want := outer(tcpDatagram(t, clientPort, tcpWeb.Backend, syn))
	ret, got := run(t, o.UplinkIngressIpip, in)
	if ret != actUnspec {
		t.Errorf("returned %#x, want TC_ACT_UNSPEC", ret)
	}
	if !bytes.Equal(got[:len(want)], want) {
		t.Errorf("%s", describeDiff(want, got[:len(want)]))
	}
	stats, err := maps.NewStats(o.Stats).Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := stats["dnat"].Packets; got != 1 {
		t.Errorf("dnat counted %d packets, want 1 (stats: %v)", got, nonZero(stats))
	}
}
