package bpf_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/maps"
)

// routeIPv6World gives the fuzz world's namespace what the bridge's IPv6
// hairpin looks up: networks 1 and 2's gateways on bridge0 (so their
// subnets route there), the containers as neighbours, and forwarding on.
func routeIPv6World(t *testing.T, w *fuzzWorld) {
	t.Helper()
	var err error
	w.ns.do(func() {
		err = func() error {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644); err != nil {
				return fmt.Errorf("enable ipv6 forwarding: %w", err)
			}
			br, err := netlink.LinkByName("bridge0")
			if err != nil {
				return fmt.Errorf("find bridge0: %w", err)
			}
			for _, gw := range []string{v6GW1.String() + "/64", v6GW2.String() + "/64"} {
				a, err := netlink.ParseAddr(gw)
				if err != nil {
					return err
				}
				a.Flags = unix.IFA_F_NODAD
				if err := netlink.AddrAdd(br, a); err != nil {
					return fmt.Errorf("add %s to bridge0: %w", gw, err)
				}
			}
			for _, a := range []netip.Addr{v6Me, v6Peer, v6Me2} {
				nb := &netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V6, State: netlink.NUD_PERMANENT,
					IP: a.AsSlice(), HardwareAddr: macPeer}
				if err := netlink.NeighAdd(nb); err != nil {
					return fmt.Errorf("add neighbour %s: %w", a, err)
				}
			}
			return nil
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestIPv6Hairpin: a container dialling a published port at one of the
// host's IPv6 addresses (an uplink's, or its network's gateway) from the
// bridge reaches the backend SNATed to the backend network's gateway, on
// another network and on its own; the backend's replies come back as the
// address and port dialled. Each output's IPv6 datagram is compared byte
// for byte, its checksums recomputed from scratch, and every packet is
// forwarded by BPF to the neighbour's MAC. A flow's first packet writes
// its flow_new event (as the DNAT from outside does), later ones none, and
// each flow's conntrack entry carries its start.
func TestIPv6Hairpin(t *testing.T) {
	w := newFuzzWorld(t)
	routeIPv6World(t, w)
	m := &w.uplink.TcUplinkMaps
	if err := maps.NewHostAddrs(m.Hostaddrs).Put(v6Host, 2); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewBindings(m.Bindings).PutBatch([]maps.Binding{udpApp6, tcpAny6}); err != nil {
		t.Fatal(err)
	}
	var resetErr error
	w.ns.do(func() { resetErr = w.reset(0) }) // the SNAT range: 40000-40999
	if resetErr != nil {
		t.Fatal(resetErr)
	}

	// The DNAT's conntrack entry writes the flow's event, as from outside.
	cfg := maps.NewConfig(m.Config)
	cv, err := cfg.Get()
	if err != nil {
		t.Fatal(err)
	}
	cv.Flags |= maps.ConfigEvents
	if err := cfg.Set(cv); err != nil {
		t.Fatal(err)
	}
	rd, err := ringbuf.NewReader(m.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	big := bytes.Repeat([]byte("hairpin6"), 200) // 1600 bytes: two fragments
	cross := ap(v6Me2, 40100)
	same := ap(v6Me, 40200)
	bigIn := fragments6(udp6Frame(t, ap(v6Me2, 40300), udpApp6.Host, big), 0xabcd, 1232)
	bigOut := fragments6(udp6Frame(t, ap(v6GW1, 40300), udpApp6.Backend, big), 0xabcd, 1232)
	steps := []struct {
		name string
		in   []byte
		ret  uint32
		out  []byte // nil: unchanged
		stat string
		ev   string // the flow event it writes, if any
	}{
		{"from another network to an uplink address", udp6Frame(t, cross, udpApp6.Host, []byte("q")), fuzzActRedirect,
			udp6Frame(t, ap(v6GW1, cross.Port()), udpApp6.Backend, []byte("q")), "hairpin",
			fmt.Sprintf("flow_new published udp %s -> %s to %s binding %d", cross, udpApp6.Host, udpApp6.Backend, udpApp6.ID)},
		{"the backend's reply", udp6Frame(t, udpApp6.Backend, ap(v6GW1, cross.Port()), []byte("a")), fuzzActRedirect,
			udp6Frame(t, udpApp6.Host, cross, []byte("a")), "hairpin_reply", ""},
		{"the flow's next datagram", udp6Frame(t, cross, udpApp6.Host, []byte("q2")), fuzzActRedirect,
			udp6Frame(t, ap(v6GW1, cross.Port()), udpApp6.Backend, []byte("q2")), "hairpin", ""},
		{"within a network to its gateway's wildcard port", tcp6Frame(t, same, ap(v6GW1, 80), syn), fuzzActRedirect,
			tcp6Frame(t, ap(v6GW1, same.Port()), tcpAny6.Backend, syn), "hairpin",
			fmt.Sprintf("flow_new published tcp %s -> %s to %s binding %d SYN_SENT", same, ap(v6GW1, 80), tcpAny6.Backend, tcpAny6.ID)},
		{"its syn-ack", tcp6Frame(t, tcpAny6.Backend, ap(v6GW1, same.Port()), syn|ack), fuzzActRedirect,
			tcp6Frame(t, ap(v6GW1, 80), same, syn|ack), "hairpin_reply", ""},
		{"its ack", tcp6Frame(t, same, ap(v6GW1, 80), ack), fuzzActRedirect,
			tcp6Frame(t, ap(v6GW1, same.Port()), tcpAny6.Backend, ack), "hairpin", ""},
		{"first fragment", bigIn[0], fuzzActRedirect, bigOut[0], "hairpin",
			fmt.Sprintf("flow_new published udp %s -> %s to %s binding %d", ap(v6Me2, 40300), udpApp6.Host, udpApp6.Backend, udpApp6.ID)},
		{"later fragment", bigIn[1], fuzzActRedirect, bigOut[1], "hairpin", ""},
		{"a port not published", udp6Frame(t, cross, ap(v6Host, 5301), []byte("q")), fuzzActUnspec, nil, "pass_no_match", ""},
		{"a reply to a port no flow holds", udp6Frame(t, udpApp6.Backend, ap(v6GW1, 40999), []byte("a")), fuzzActUnspec, nil, "pass_no_match", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			drainEvents(t, rd)
			ret, out, moved := runBridgeIngress(t, w, s.in)
			if ret != s.ret {
				t.Errorf("returned %#x, want %#x", ret, s.ret)
			}
			expectForwarded6(t, s.in, out, s.out)
			if moved[s.stat] != 1 {
				t.Errorf("counter %s moved by %d packets, want one", s.stat, moved[s.stat])
			}
			var evs []string
			for _, e := range drainEvents(t, rd) {
				if e.Type != maps.EventDrop {
					evs = append(evs, e.View().String())
				}
			}
			if want := []string{s.ev}; s.ev == "" && len(evs) != 0 || s.ev != "" && fmt.Sprint(evs) != fmt.Sprint(want) {
				t.Errorf("flow events %q, want %q", evs, s.ev)
			}
		})
	}
	// Each flow's conntrack entry has its start. (The world's IPv4 seeds
	// are written from Go, without one.)
	all, err := maps.NewCT(m.Ct, m.CtNew).All()
	if err != nil {
		t.Fatal(err)
	}
	var v6 int
	for _, e := range all {
		if !e.Backend.Addr().Is6() {
			continue
		}
		v6++
		if e.CreatedNs == 0 || e.CreatedNs > e.LastSeenNs {
			t.Errorf("ct entry %+v: want a created time, no later than its last-seen time", e)
		}
	}
	if v6 != 3 {
		t.Errorf("%d IPv6 conntrack entries, want 3 (UDP, TCP, the fragmented datagram): %+v", v6, all)
	}
}

// expectForwarded6 checks what bridge_ingress made of in: out is in as it
// was when forwarded is nil; else it is forwarded, with one hop less, to
// the neighbour's MAC, every checksum right.
func expectForwarded6(t *testing.T, in, out, forwarded []byte) {
	t.Helper()
	want := in
	if forwarded != nil {
		want = bytes.Clone(forwarded)
		want[fuzzEthLen+7]--
	}
	if len(out) != len(want) || !bytes.Equal(out[fuzzEthLen:], want[fuzzEthLen:]) {
		t.Errorf("output datagram differs: %s", describeDiff(want[fuzzEthLen:], out[fuzzEthLen:]))
	} else if forwarded != nil {
		verifyChecksums6(t, out[fuzzEthLen:])
		if !bytes.Equal(out[:6], macPeer) {
			t.Errorf("forwarded to MAC %x, want the neighbour's %x", out[:6], macPeer)
		}
	}
}

// runBridgeIngress runs bridge_ingress on in, in the world's namespace,
// and returns its verdict, its output, and the packets each counter moved
// by.
func runBridgeIngress(t *testing.T, w *fuzzWorld, in []byte) (uint32, []byte, map[string]uint64) {
	t.Helper()
	stats := maps.NewStats(w.uplink.Stats)
	before, err := stats.Read()
	if err != nil {
		t.Fatal(err)
	}
	var ret uint32
	var out []byte
	w.ns.do(func() {
		ro := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
		ret, err = w.bridge.BridgeIngress.Run(&ro)
		out = ro.DataOut
	})
	if err != nil {
		t.Fatal(err)
	}
	after, err := stats.Read()
	if err != nil {
		t.Fatal(err)
	}
	moved := map[string]uint64{}
	for name, c := range after {
		if c.Packets != before[name].Packets {
			moved[name] = c.Packets - before[name].Packets
		}
	}
	return ret, out, moved
}
