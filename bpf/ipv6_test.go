package bpf_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pontoon-net/pontoon/maps"
)

// The IPv6 world: network 1 (dual-stack, fd00:18::/64) holds the endpoint
// behind the test run's device (ifindex 1) and a peer; network 2
// (fd00:19::/64, icc=false, NAT66 behind v6Host) one of each too; network
// 3 (fd00:20::/64) is routed.
var (
	v6GW1    = netip.MustParseAddr("fd00:18::1")
	v6Me     = netip.MustParseAddr("fd00:18::2") // behind ifindex 1, MAC macPeer
	v6Peer   = netip.MustParseAddr("fd00:18::3") // behind ifindex 1001
	v6GW2    = netip.MustParseAddr("fd00:19::1")
	v6Me2    = netip.MustParseAddr("fd00:19::2") // behind ifindex 1, MAC macOther
	v6Peer2  = netip.MustParseAddr("fd00:19::3")
	v6Routed = netip.MustParseAddr("fd00:20::2")
	v6Stray  = netip.MustParseAddr("fd00:18::99") // in network 1, nobody's
	v6Out    = netip.MustParseAddr("2001:db8::7")
	macOther = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x03}
	// The link-local addresses the MACs give (modified EUI-64).
	v6LLMe       = netip.MustParseAddr("fe80::ff:fe00:2")
	v6LLPeer     = netip.MustParseAddr("fe80::ff:fe00:4")
	v6AllNodes   = netip.MustParseAddr("ff02::1")
	v6AllRouters = netip.MustParseAddr("ff02::2")
)

// seedIPv6 adds the IPv6 world to the maps, as the agent writes them.
func seedIPv6(t testing.TB, w *fuzzWorld) {
	t.Helper()
	m := &w.uplink.TcUplinkMaps
	for _, n := range []maps.Network{
		{Subnet: netip.MustParsePrefix("fd00:18::/64"), Gateway: v6GW1, ID: 1, Masquerade: true},
		{Subnet: netip.MustParsePrefix("fd00:19::/64"), Gateway: v6GW2, ID: 2, Masquerade: true, NoICC: true, NAT66: true},
		{Subnet: netip.MustParsePrefix("fd00:20::/64"), Gateway: netip.MustParseAddr("fd00:20::1"), ID: 3, Routed: true},
	} {
		if err := maps.NewNetworks(m.Networks).Put(n); err != nil {
			t.Fatal(err)
		}
		if err := maps.NewHostAddrs(m.Hostaddrs).Put(n.Gateway, 2); err != nil {
			t.Fatal(err)
		}
		if n.Masquerade {
			w.masquerading = append(w.masquerading, n.Subnet)
		}
	}
	// NAT66 finds its address by the egress device, as masquerade does.
	for _, ifindex := range []uint32{1, uint32(w.ns.uplinkIndex)} {
		if err := maps.NewUplinks(m.Uplinks6).Put(ifindex, v6Host); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []struct {
		addr      netip.Addr
		ifindex   uint32
		networkID uint32
		mac       net.HardwareAddr
		flags     uint16
	}{
		{v6Me, 1, 1, macPeer, 0},
		{v6LLMe, 1, 1, macPeer, 0},
		{v6Peer, 1001, 1, macUplink, 0},
		{v6LLPeer, 1001, 1, macUplink, 0},
		{v6Me2, 1, 2, macOther, maps.EndpointNoICC},
		{v6Peer2, 1002, 2, nil, maps.EndpointNoICC},
	} {
		v := maps.EndpointValue{Ifindex: e.ifindex, NetworkID: e.networkID, Flags: e.flags}
		copy(v.MAC[:], e.mac)
		if err := m.Endpoints.Put(maps.EndpointKey{Family: 10, Addr: e.addr.As16()}, v); err != nil {
			t.Fatal(err)
		}
	}
}

type v6Opt func(*layers.Ethernet, *layers.IPv6)

func fromMAC(mac net.HardwareAddr) v6Opt {
	return func(eth *layers.Ethernet, _ *layers.IPv6) { eth.SrcMAC = mac }
}

// v6Frame builds an Ethernet frame from macPeer carrying IPv6 from src to
// dst with the given upper layers (their checksums computed).
func v6Frame(t testing.TB, src, dst netip.Addr, upper []gopacket.SerializableLayer, opts ...v6Opt) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: macPeer, DstMAC: macUplink, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	for _, o := range opts {
		o(eth, ip)
	}
	ls := []gopacket.SerializableLayer{eth, ip}
	for _, l := range upper {
		switch l := l.(type) {
		case *layers.ICMPv6:
			ip.NextHeader = layers.IPProtocolICMPv6
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			ip.NextHeader = layers.IPProtocolUDP
			l.SetNetworkLayerForChecksum(ip)
		case *layers.TCP:
			ip.NextHeader = layers.IPProtocolTCP
			l.SetNetworkLayerForChecksum(ip)
		}
		ls = append(ls, l)
	}
	return serialize(t, ls...)
}

func icmp6(typ uint8, body ...gopacket.SerializableLayer) []gopacket.SerializableLayer {
	return append([]gopacket.SerializableLayer{&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}}, body...)
}

func ns(target netip.Addr) []gopacket.SerializableLayer {
	return icmp6(layers.ICMPv6TypeNeighborSolicitation, &layers.ICMPv6NeighborSolicitation{TargetAddress: target.AsSlice()})
}

func na(target netip.Addr) []gopacket.SerializableLayer {
	return icmp6(layers.ICMPv6TypeNeighborAdvertisement, &layers.ICMPv6NeighborAdvertisement{TargetAddress: target.AsSlice(), Flags: 0x60})
}

func udp6(sport, dport uint16) []gopacket.SerializableLayer {
	return []gopacket.SerializableLayer{&layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, gopacket.Payload("v6")}
}

func echo6() []gopacket.SerializableLayer {
	return icmp6(layers.ICMPv6TypeEchoRequest, &layers.ICMPv6Echo{Identifier: 7, SeqNumber: 1})
}

// mldFromUnspecified is the MLDv2 report an interface sends from :: as it
// comes up, before its link-local address is there (RFC 3590).
func mldFromUnspecified(t testing.TB, opts ...v6Opt) []byte {
	return withHopByHop(t, v6Frame(t, netip.IPv6Unspecified(), netip.MustParseAddr("ff02::16"),
		icmp6(layers.ICMPv6TypeMLDv2MulticastListenerReportMessageV2, gopacket.Payload{0, 0, 0, 0}), opts...))
}

// withHopByHop puts a hop-by-hop header (router alert, as MLD carries)
// in front of the ICMPv6 header of frame f.
func withHopByHop(t testing.TB, f []byte) []byte {
	t.Helper()
	const l3 = fuzzEthLen
	hbh := []byte{f[l3+6], 0, 5, 2, 0, 0, 1, 0} // next, len 0, router alert, PadN
	out := append(bytes.Clone(f[:l3+40]), hbh...)
	out = append(out, f[l3+40:]...)
	out[l3+6] = 0 // next header: hop-by-hop
	plen := int(out[l3+4])<<8 | int(out[l3+5]) + len(hbh)
	out[l3+4], out[l3+5] = byte(plen>>8), byte(plen)
	return out
}

// TestIPv6Decisions: what the endpoint, bridge and uplink programs decide
// about IPv6 (anti-spoofing, neighbour discovery, router advertisements,
// icc, isolation, the way in from outside), one verdict each, with packets
// that pass or are redirected left byte for byte as they came.
func TestIPv6Decisions(t *testing.T) {
	w := newFuzzWorld(t)
	type prog int
	const (
		endpoint prog = iota
		bridge
		uplinkIn
		uplinkOut
	)
	progs := map[prog]*ebpf.Program{endpoint: w.endpoint.EndpointIngress, bridge: w.bridge.BridgeIngress,
		uplinkIn: w.uplink.UplinkIngress, uplinkOut: w.uplink.UplinkEgress}
	ll := v6LLMe
	for _, c := range []struct {
		name  string
		prog  prog
		frame []byte
		want  string
		ret   uint32
	}{
		// anti-spoofing
		{"from its address", endpoint, v6Frame(t, v6Me, v6GW1, echo6()), "pass_no_match", actUnspec},
		{"from its link-local address", endpoint, v6Frame(t, ll, v6AllRouters, icmp6(layers.ICMPv6TypeRouterSolicitation, &layers.ICMPv6RouterSolicitation{})), "pass_no_match", actUnspec},
		{"from another endpoint's address", endpoint, v6Frame(t, v6Peer, v6GW1, echo6()), "drop_spoofed", fuzzActShot},
		{"from nobody's address in its network", endpoint, v6Frame(t, v6Stray, v6GW1, udp6(1, 53)), "drop_spoofed", fuzzActShot},
		{"from an address outside", endpoint, v6Frame(t, v6Out, v6GW1, udp6(1, 53)), "drop_spoofed", fuzzActShot},
		{"from another endpoint's link-local address", endpoint, v6Frame(t, v6LLPeer, v6AllNodes, echo6()), "drop_spoofed", fuzzActShot},
		{"from its address, another MAC", endpoint, v6Frame(t, v6Me, v6GW1, echo6(), fromMAC(macOther)), "drop_spoofed", fuzzActShot},
		{"a link-local address not from its MAC", endpoint, v6Frame(t, netip.MustParseAddr("fe80::1"), v6AllNodes, echo6()), "drop_spoofed", fuzzActShot},
		// neighbour discovery and router advertisements
		{"neighbour solicitation", endpoint, v6Frame(t, v6Me, netip.MustParseAddr("ff02::1:ff00:1"), ns(v6GW1)), "pass_no_match", actUnspec},
		{"duplicate address detection of its own", endpoint, v6Frame(t, netip.IPv6Unspecified(), netip.MustParseAddr("ff02::1:ff00:2"), ns(v6Me)), "pass_no_match", actUnspec},
		{"duplicate address detection of its link-local", endpoint, v6Frame(t, netip.IPv6Unspecified(), netip.MustParseAddr("ff02::1:ff00:2"), ns(ll)), "pass_no_match", actUnspec},
		{"duplicate address detection of a peer's", endpoint, v6Frame(t, netip.IPv6Unspecified(), netip.MustParseAddr("ff02::1:ff00:3"), ns(v6Peer)), "drop_spoofed", fuzzActShot},
		{"an MLD report before its link-local address", endpoint, mldFromUnspecified(t), "pass_no_match", actUnspec},
		{"an MLD report from :: with a MAC not its own", endpoint, mldFromUnspecified(t, fromMAC(macUplink)), "drop_spoofed", fuzzActShot},
		{"an MLD report from :: to another group", endpoint, withHopByHop(t, v6Frame(t, netip.IPv6Unspecified(), v6AllNodes,
			icmp6(layers.ICMPv6TypeMLDv2MulticastListenerReportMessageV2, gopacket.Payload{0, 0, 0, 0}))), "drop_spoofed", fuzzActShot},
		{"anything else from ::", endpoint, v6Frame(t, netip.IPv6Unspecified(), v6AllNodes, echo6()), "drop_spoofed", fuzzActShot},
		{"neighbour advertisement of its own", endpoint, v6Frame(t, v6Me, v6GW1, na(v6Me)), "pass_no_match", actUnspec},
		{"neighbour advertisement of the gateway", endpoint, v6Frame(t, v6Me, v6AllNodes, na(v6GW1)), "drop_spoofed", fuzzActShot},
		{"neighbour advertisement of a peer", endpoint, v6Frame(t, ll, v6AllNodes, na(v6Peer)), "drop_spoofed", fuzzActShot},
		{"router advertisement", endpoint, v6Frame(t, ll, v6AllNodes, icmp6(layers.ICMPv6TypeRouterAdvertisement, &layers.ICMPv6RouterAdvertisement{HopLimit: 64, RouterLifetime: 1800})), "drop_spoofed", fuzzActShot},
		{"router advertisement behind a hop-by-hop header", endpoint, withHopByHop(t, v6Frame(t, ll, v6AllNodes, icmp6(layers.ICMPv6TypeRouterAdvertisement, &layers.ICMPv6RouterAdvertisement{HopLimit: 64, RouterLifetime: 1800}))), "drop_spoofed", fuzzActShot},
		{"redirect", endpoint, v6Frame(t, ll, v6LLPeer, icmp6(layers.ICMPv6TypeRedirect, &layers.ICMPv6Redirect{TargetAddress: v6GW1.AsSlice(), DestinationAddress: v6Out.AsSlice()})), "drop_spoofed", fuzzActShot},
		{"MLD report behind a hop-by-hop header", endpoint, withHopByHop(t, v6Frame(t, ll, netip.MustParseAddr("ff02::16"), icmp6(143, gopacket.Payload(make([]byte, 4))))), "pass_no_match", actUnspec},
		{"a header chain too long to follow", endpoint, v6Frame(t, v6Me, v6GW1, nil, func(_ *layers.Ethernet, ip *layers.IPv6) { ip.NextHeader = 0 }), "drop_protocol", fuzzActShot},
		// within the network: straight to the peer's veth, unless icc=false
		{"to a peer", endpoint, v6Frame(t, v6Me, v6Peer, udp6(5000, 5000)), "endpoint_redirect", fuzzActRedirect},
		{"to a peer's link-local address", endpoint, v6Frame(t, ll, v6LLPeer, echo6()), "endpoint_redirect", fuzzActRedirect},
		{"to a peer without icc", endpoint, v6Frame(t, v6Me2, v6Peer2, udp6(5000, 5000), fromMAC(macOther)), "drop_icc", fuzzActShot},
		{"to another network's endpoint", endpoint, v6Frame(t, v6Me, v6Peer2, udp6(5000, 5000)), "pass_no_match", actUnspec},
		{"to the gateway", endpoint, v6Frame(t, v6Me, v6GW1, udp6(5000, 53)), "pass_no_match", actUnspec},
		// the bridge: networks stay apart
		{"across networks", bridge, v6Frame(t, v6Me, v6Peer2, udp6(5000, 5000)), "drop_isolation", fuzzActShot},
		{"to another network's gateway", bridge, v6Frame(t, v6Me, v6GW2, udp6(5000, 53)), "pass_no_match", actUnspec},
		{"to its own gateway", bridge, v6Frame(t, v6Me, v6GW1, echo6()), "pass_no_match", actUnspec},
		{"to the outside", bridge, v6Frame(t, v6Me, v6Out, echo6()), "pass_no_match", actUnspec},
		// the uplink: no way in but routed networks; no private source out
		{"outside to a container", uplinkIn, v6Frame(t, v6Out, v6Me, udp6(1234, 22)), "drop_not_published", fuzzActShot},
		{"outside to a routed container", uplinkIn, v6Frame(t, v6Out, v6Routed, udp6(1234, 22)), "pass_no_match", actUnspec},
		{"outside to a gateway", uplinkIn, v6Frame(t, v6Out, v6GW1, udp6(1234, 22)), "pass_no_match", actUnspec},
		{"outside to elsewhere", uplinkIn, v6Frame(t, v6Out, netip.MustParseAddr("2001:db8::1"), udp6(1234, 22)), "pass_no_match", actUnspec},
		{"a masquerading network's source leaving", uplinkOut, v6Frame(t, v6Me, v6Out, udp6(1234, 53)), "drop_unmasqueraded", fuzzActShot},
		{"a routed network's source leaving", uplinkOut, v6Frame(t, v6Routed, v6Out, udp6(1234, 53)), "pass_no_match", actUnspec},
		{"the host's own source leaving", uplinkOut, v6Frame(t, v6GW1, v6Out, udp6(1234, 53)), "pass_no_match", actUnspec},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, err := w.counters()
			if err != nil {
				t.Fatal(err)
			}
			ro := ebpf.RunOptions{Data: c.frame, DataOut: make([]byte, len(c.frame)+256)}
			ret, err := progs[c.prog].Run(&ro)
			if err != nil {
				t.Fatal(err)
			}
			after, err := w.counters()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := range after {
				if after[i] != before[i] && !w.aux[i] {
					got = append(got, maps.StatNames[i])
				}
			}
			if len(got) != 1 || got[0] != c.want || ret != c.ret {
				t.Fatalf("verdict %v returning %#x, want %s returning %#x", got, ret, c.want, c.ret)
			}
			if ret != fuzzActShot && !bytes.Equal(ro.DataOut, c.frame) {
				t.Errorf("the packet changed:\n%x\nwant\n%x", ro.DataOut, c.frame)
			}
		})
	}
}

// fuzzSeedsIPv6 take the fuzzer down the IPv6 paths of the endpoint,
// bridge and uplink programs.
func fuzzSeedsIPv6(tb testing.TB) []fuzzSeed {
	one := func(name string, frames ...[]byte) fuzzSeed { return fuzzSeed{name: name, frames: frames} }
	return []fuzzSeed{
		one("ipv6 endpoint to its peer", v6Frame(tb, v6Me, v6Peer, udp6(5000, 5000))),
		one("ipv6 endpoint without icc", v6Frame(tb, v6Me2, v6Peer2, udp6(5000, 5000), fromMAC(macOther))),
		one("ipv6 across networks", v6Frame(tb, v6Me, v6Peer2, udp6(5000, 5000))),
		one("ipv6 neighbour advertisement", v6Frame(tb, v6Me, v6GW1, na(v6Me))),
		one("ipv6 duplicate address detection", v6Frame(tb, netip.IPv6Unspecified(), netip.MustParseAddr("ff02::1:ff00:2"), ns(v6Me))),
		one("ipv6 router advertisement behind hop-by-hop", withHopByHop(tb, v6Frame(tb, v6LLMe, v6AllNodes, icmp6(layers.ICMPv6TypeRouterAdvertisement, &layers.ICMPv6RouterAdvertisement{HopLimit: 64})))),
		one("ipv6 outside to a container", v6Frame(tb, v6Out, v6Me, udp6(1234, 22))),
		one("ipv6 private source leaving", v6Frame(tb, v6Me, v6Out, udp6(1234, 53))),
		one("ipv6 nat66 udp and its reply", udp6Frame(tb, ap(v6Me2, 40000), ap(v6Server, 53), []byte("q")),
			udp6Frame(tb, ap(v6Server, 53), ap(v6Host, 40000), []byte("a"))),
		one("ipv6 nat66 echo and its reply", echo6Frame(tb, v6Me2, v6Server, layers.ICMPv6TypeEchoRequest, 9, []byte("p")),
			echo6Frame(tb, v6Server, v6Host, layers.ICMPv6TypeEchoReply, 9, []byte("p"))),
		one("ipv6 nat66 tcp syn and packet too big", tcp6Frame(tb, ap(v6Me2, 40001), ap(v6Server, 443), syn),
			icmp6ErrorFrame(tb, v6Router, v6Host, 2, 0, 1280, v6Datagram(tcp6Frame(tb, ap(v6Host, 40001), ap(v6Server, 443), syn)))),
	}
}
