package bpf_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// bpfFTestXDPLiveFrames is BPF_F_TEST_XDP_LIVE_FRAMES: a test run hands
// what XDP passes to the stack of the device the context names, as a
// driver would, so tc ingress there sees it with XDP's metadata.
const bpfFTestXDPLiveFrames = 1 << 1

// BenchmarkMissLive measures what a packet for the host itself costs with
// XDP in front of tc, which BPF_PROG_TEST_RUN cannot show on its own (a
// tc test run gets no XDP metadata): XDP runs on live frames that go on
// into a veth's stack, where tc ingress is attached, and the
// kernel's run-time stats split the cost between the two programs.
// "note" is our XDP program, which leaves tc the miss note; "no-note" an
// XDP program that passes every packet untouched, so tc does its whole
// look, as before the note. 65,536 bindings on other ports, as in
// BenchmarkMiss.
func BenchmarkMissLive(b *testing.B) {
	if !kernelAtLeast(b, [2]int{6, 6}) {
		b.Skip("attaches tc with TCX (Linux 6.6)")
	}
	o := loadObjects(b)
	fillBindings(b, o, 65536)
	if err := maps.NewHostAddrs(o.Hostaddrs).Put(hostIP, 2); err != nil {
		b.Fatal(err)
	}
	benchPrefilter(b, o)
	passAll, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		b.Fatal(err)
	}
	defer passAll.Close()
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Skipf("enable BPF run-time stats: %v", err)
	}
	defer stats.Close()

	ns := testenv.NewNetns(b, "pbl"+testenv.UniqueID(b))
	testenv.Veth(b, ns, "pbl0", ns, "pbl1")
	in := tcpFrame(b, clientPort, ap(hostIP, 22), ack)
	for _, c := range []struct {
		name string
		xdp  *ebpf.Program
	}{
		{"no-note", passAll},
		{"note", o.xdp(b)},
	} {
		b.Run(c.name, func(b *testing.B) {
			zeroStats(b, o.Stats)
			var xdpNs, tcNs float64
			if err := ns.Do(func() error {
				dev, err := net.InterfaceByName("pbl0")
				if err != nil {
					return err
				}
				tc, err := link.AttachTCX(link.TCXOptions{Interface: dev.Index, Program: o.UplinkIngress, Attach: ebpf.AttachTCXIngress})
				if err != nil {
					return fmt.Errorf("attach tc: %w", err)
				}
				defer tc.Close()
				xdpBefore, tcBefore, err := runStats(c.xdp, o.UplinkIngress)
				if err != nil {
					return err
				}
				b.ResetTimer()
				opts := ebpf.RunOptions{Data: in, Repeat: uint32(b.N), Flags: bpfFTestXDPLiveFrames,
					Context: xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(dev.Index)}}
				if _, err := c.xdp.Run(&opts); err != nil {
					return fmt.Errorf("run xdp on live frames: %w", err)
				}
				b.StopTimer()
				xdpAfter, tcAfter, err := runStats(c.xdp, o.UplinkIngress)
				if err != nil {
					return err
				}
				xdpNs = perRun(xdpBefore, xdpAfter)
				tcNs = perRun(tcBefore, tcAfter)
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			counted, err := maps.NewStats(o.Stats).Read()
			if err != nil {
				b.Fatal(err)
			}
			// Every frame reached tc and was passed as matching nothing.
			if got := counted["pass_no_match"].Packets; got < uint64(b.N) {
				b.Fatalf("tc counted %d of %d frames as pass_no_match: %v", got, b.N, nonZero(counted))
			}
			b.ReportMetric(xdpNs, "xdp-ns/pkt")
			b.ReportMetric(tcNs, "tc-ns/pkt")
			b.ReportMetric(xdpNs+tcNs, "ns/pkt")
		})
	}
}

// runStats reads the run-time stats of two programs.
func runStats(a, b *ebpf.Program) (*ebpf.ProgramStats, *ebpf.ProgramStats, error) {
	sa, err := a.Stats()
	if err != nil {
		return nil, nil, fmt.Errorf("read program stats: %w", err)
	}
	sb, err := b.Stats()
	if err != nil {
		return nil, nil, fmt.Errorf("read program stats: %w", err)
	}
	return sa, sb, nil
}

// perRun is the mean run time between two readings, in ns.
func perRun(before, after *ebpf.ProgramStats) float64 {
	runs := after.RunCount - before.RunCount
	if runs == 0 {
		return 0
	}
	return float64(after.Runtime-before.Runtime) / float64(runs)
}
