package bpf_test

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/maps"
)

// oneEntryCTNew makes ct_new a plain hash of one entry. The agent's
// ct_new is an LRU, which evicts rather than refuse an insert, so the
// datapath's answer to a refused insert is unreachable on purpose there;
// a full plain hash refuses the second flow (E2BIG) and reaches it. Not
// preallocated: a preallocated one took a second entry on 6.1 (its free
// list is spread over the CPUs), while this one counts its entries.
func oneEntryCTNew(spec *ebpf.CollectionSpec) {
	m := spec.Maps["ct_new"]
	m.Type, m.MaxEntries, m.Flags = ebpf.Hash, 1, unix.BPF_F_NO_PREALLOC
}

// TestConntrackFullDrops: a new flow to a published port whose conntrack
// insert the kernel refuses is dropped, not translated without state:
// counted drop_ct_full and reported to the monitor, in tc over IPv4 and
// IPv6, and in XDP. The flow already in the table still translates.
//
// From Linux 6.12: on 5.10 and 6.1 the one-entry hash took the second
// flow's entry from the program too (the first flow's entry was there, and
// counted), so the full table this test needs cannot be made that way.
func TestConntrackFullDrops(t *testing.T) {
	if !kernelAtLeast(t, [2]int{6, 12}) {
		t.Skip("needs Linux 6.12: older kernels let the program insert past a one-entry hash's limit, so no table refuses the insert")
	}
	o := loadObjects(t, oneEntryCTNew)
	rd, err := ringbuf.NewReader(o.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	first, second := clientPort, ap(netip.MustParseAddr("192.0.2.77"), 40001)
	first6, second6 := v6ClientPort, ap(netip.MustParseAddr("2001:db8:77::1"), 40001)
	v4 := seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: []netip.Addr{hostIP}}
	v6 := seed{bindings: []maps.Binding{tcpWeb6}, hostAddrs: v6Hosts}
	type dropCase struct {
		name          string
		seed          seed
		prog          func(t *testing.T) (*ebpf.Program, uint32, uint32) // program, pass, drop verdicts
		first, second []byte
		src, dst      netip.AddrPort
		proto         string
	}
	tc := func(*testing.T) (*ebpf.Program, uint32, uint32) { return o.UplinkIngress, actUnspec, tcActShot }
	xdp := func(t *testing.T) (*ebpf.Program, uint32, uint32) { return o.xdp(t), xdpPass, xdpDrop }
	for _, c := range []dropCase{
		{"tc IPv4", v4, tc, tcpFrame(t, first, tcpWeb.Host, syn), tcpFrame(t, second, tcpWeb.Host, syn), second, tcpWeb.Host, "tcp"},
		{"tc IPv6", v6, tc, tcp6Frame(t, first6, tcpWeb6.Host, syn), tcp6Frame(t, second6, tcpWeb6.Host, syn), second6, tcpWeb6.Host, "tcp"},
		{"XDP IPv4", v4, xdp, tcpFrame(t, first, tcpWeb.Host, syn), tcpFrame(t, second, tcpWeb.Host, syn), second, tcpWeb.Host, "tcp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			prog, pass, drop := c.prog(t)
			seedCase(t, o, datapathCase{seed: c.seed}, skbModes[0])
			zeroStats(t, o.Stats)
			setEvents(t, o, true)
			defer setEvents(t, o, false)
			if ret, _ := run(t, prog, c.first); ret != pass {
				t.Fatalf("the first flow: returned %d, want %d (it takes ct_new's one entry)", ret, pass)
			}
			if stats, err := maps.NewStats(o.Stats).Read(); err != nil || nonZero(stats)["dnat"] != 1 {
				t.Fatalf("the first flow moved counters %v (%v), want dnat", nonZero(stats), err)
			}
			if n, err := maps.CountEntries(o.CtNew); err != nil || n != 1 {
				t.Fatalf("ct_new holds %d entries after the first flow (%v), want 1", n, err)
			}
			drainEvents(t, rd)
			zeroStats(t, o.Stats)
			if ret, _ := run(t, prog, c.second); ret != drop {
				t.Fatalf("the second flow: returned %d, want %d (drop: ct_new is full)", ret, drop)
			}
			stats, err := maps.NewStats(o.Stats).Read()
			if err != nil {
				t.Fatal(err)
			}
			if got := nonZero(stats); len(got) != 1 || got["drop_ct_full"] != 1 {
				t.Errorf("counters %v, want drop_ct_full once", got)
			}
			events := drainEvents(t, rd)
			if len(events) != 1 {
				t.Fatalf("%d events, want the drop: %+v", len(events), events)
			}
			if e := events[0].View(); e.Type != "drop" || e.Reason != "drop_ct_full" || e.Source != c.src || e.Destination != c.dst || e.Proto != c.proto {
				t.Errorf("event %q, want a drop drop_ct_full of %s %s -> %s", e, c.proto, c.src, c.dst)
			}
			// The flow that holds the entry goes on.
			zeroStats(t, o.Stats)
			if ret, _ := run(t, prog, c.first); ret != pass {
				t.Errorf("the first flow again: returned %d, want %d", ret, pass)
			}
		})
	}
}
