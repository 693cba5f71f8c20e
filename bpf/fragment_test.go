package bpf_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pontoon-net/pontoon/maps"
)

// icmpProto is IPPROTO_ICMP as a map key's proto: echo flows are tracked
// with the identifier as their port.
const icmpProto = maps.Proto(1)

// webEstablished is an established flow of tcpWeb, answered long ago.
var webEstablished = maps.CTEntry{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: tcpWeb.ID,
	TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished}

// fragID is the IP identification of the fragmented datagrams.
const fragID = 0x2b1c

// fragCuts are where the test datagrams are cut: three fragments, of 480,
// 480 and the remaining 248 (UDP, ICMP) or 252 (TCP) bytes.
var fragCuts = []int{480, 960}

var echoReply = layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoReply, 0)

// l4Of is the transport header and data of an IPv4 datagram.
func l4Of(d []byte) []byte { return d[int(d[0]&0x0f)*4:] }

// udpL4 is a UDP header and 1200 bytes of data from src to dst, its
// checksum covering them all.
func udpL4(t testing.TB, src, dst netip.AddrPort) []byte {
	ip := ipv4(src.Addr(), dst.Addr(), layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return l4Of(serialize(t, ip, udp, gopacket.Payload(pattern(1200))))
}

// echoL4 is an ICMP echo (request or reply) with identifier id and 1200
// bytes of data.
func echoL4(t testing.TB, tc layers.ICMPv4TypeCode, id uint16) []byte {
	ip := ipv4(client, server, layers.IPProtocolICMPv4)
	return l4Of(serialize(t, ip, &layers.ICMPv4{TypeCode: tc, Id: id, Seq: 7}, gopacket.Payload(pattern(1200))))
}

// dataSeg is an established flow's segment with 1192 bytes of data (a
// 1212-byte transport datagram).
func dataSeg(seq, ackNum uint32) tcpSeg {
	return tcpSeg{flags: ack, seq: seq, ack: ackNum, win: 501, psh: true, payload: pattern(1192)}
}

func tcpL4(t testing.TB, s tcpSeg) func(src, dst netip.AddrPort) []byte {
	return func(src, dst netip.AddrPort) []byte { return l4Of(segDatagram(t, src, dst, s)) }
}

// fragmentFrames cuts one datagram's transport bytes into IPv4 fragments
// at the byte offsets cuts (multiples of 8), each behind an Ethernet
// header, in datagram order.
func fragmentFrames(t testing.TB, src, dst netip.Addr, proto layers.IPProtocol, id uint16, l4 []byte, cuts ...int) [][]byte {
	t.Helper()
	bounds := slices.Concat([]int{0}, cuts, []int{len(l4)})
	var out [][]byte
	for i := range len(bounds) - 1 {
		off := bounds[i]
		if off%8 != 0 {
			t.Fatalf("fragment offset %d is not a multiple of 8", off)
		}
		ip := &layers.IPv4{
			Version:    4,
			TTL:        64,
			Id:         id,
			FragOffset: uint16(off / 8),
			Protocol:   proto,
			SrcIP:      src.AsSlice(),
			DstIP:      dst.AsSlice(),
		}
		if i < len(bounds)-2 {
			ip.Flags = layers.IPv4MoreFragments
		}
		eth := &layers.Ethernet{SrcMAC: macPeer, DstMAC: macUplink, EthernetType: layers.EthernetTypeIPv4}
		out = append(out, serialize(t, eth, ip, gopacket.Payload(l4[off:bounds[i+1]])))
	}
	return out
}

// reassemble checks the IP header checksum of every fragment and puts the
// datagram they carry back together.
func reassemble(t testing.TB, frames [][]byte) (src, dst netip.Addr, proto layers.IPProtocol, l4 []byte) {
	t.Helper()
	type piece struct {
		off  int
		more bool
		data []byte
	}
	var pieces []piece
	for i, f := range frames {
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		if onesSum(0, ip[:ihl]) != 0xffff {
			t.Errorf("fragment %d: IPv4 header checksum %#04x is wrong", i, binary.BigEndian.Uint16(ip[10:]))
		}
		s, d := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		if i == 0 {
			src, dst, proto = s, d, layers.IPProtocol(ip[9])
		} else if s != src || d != dst || layers.IPProtocol(ip[9]) != proto {
			t.Fatalf("fragment %d is %s -> %s %v, fragment 0 %s -> %s %v", i, s, d, layers.IPProtocol(ip[9]), src, dst, proto)
		}
		ff := binary.BigEndian.Uint16(ip[6:])
		pieces = append(pieces, piece{off: int(ff&0x1fff) * 8, more: ff&0x2000 != 0, data: ip[ihl:binary.BigEndian.Uint16(ip[2:])]})
	}
	slices.SortFunc(pieces, func(a, b piece) int { return a.off - b.off })
	for i, p := range pieces {
		if p.off != len(l4) {
			t.Fatalf("fragments leave a gap or overlap at byte %d (next starts at %d)", len(l4), p.off)
		}
		if p.more != (i < len(pieces)-1) {
			t.Fatalf("fragment at %d has MF %v", p.off, p.more)
		}
		l4 = append(l4, p.data...)
	}
	return src, dst, proto, l4
}

// reassembled checks that the output frames of steps idx reassemble into a
// datagram from src to dst whose transport checksum, which the first
// fragment alone carries for the whole datagram, is right after the
// translation.
func reassembled(src, dst netip.Addr, idx ...int) func(t *testing.T, outs [][]byte) {
	return func(t *testing.T, outs [][]byte) {
		t.Helper()
		var frames [][]byte
		for _, i := range idx {
			frames = append(frames, outs[i])
		}
		s, d, proto, l4 := reassemble(t, frames)
		if s != src || d != dst {
			t.Errorf("reassembled datagram is %s -> %s, want %s -> %s", s, d, src, dst)
		}
		l4ChecksumOK(t, s, d, proto, l4)
	}
}

// fragPath is a translation that fragmented datagrams go through.
type fragPath struct {
	name   string
	seed   flowSeed
	egress bool
	stat   string // each translated fragment's counter
	proto  layers.IPProtocol
	// l4 builds the datagram's transport bytes for src -> dst.
	l4 func(src, dst netip.AddrPort) []byte
	// from is the datagram's (source, destination) as sent, to as it
	// must leave.
	from, to [2]netip.AddrPort
	// early is the verdict and counter of a later fragment that comes
	// before its first.
	early     uint32
	earlyStat string
	ct        []ctRow
	snat      []snatEntry
}

// fragCases sends the three fragments of one datagram along p in order,
// with the last before the middle one, and with the last before the first.
func fragCases(t testing.TB, p fragPath) []flowCase {
	in := fragmentFrames(t, p.from[0].Addr(), p.from[1].Addr(), p.proto, fragID, p.l4(p.from[0], p.from[1]), fragCuts...)
	out := fragmentFrames(t, p.to[0].Addr(), p.to[1].Addr(), p.proto, fragID, p.l4(p.to[0], p.to[1]), fragCuts...)
	tr := func(i int) step {
		return step{name: fmt.Sprintf("fragment %d", i), egress: p.egress, in: in[i], ret: actUnspec, out: out[i], stat: p.stat}
	}
	early := func(i int) step {
		return step{name: fmt.Sprintf("fragment %d before its first", i), egress: p.egress, in: in[i], ret: p.early, stat: p.earlyStat}
	}
	whole := reassembled(p.to[0].Addr(), p.to[1].Addr(), 0, 1, 2)
	return []flowCase{
		{name: p.name + " in order", seed: p.seed, steps: []step{tr(0), tr(1), tr(2)}, ct: p.ct, snat: p.snat, check: whole},
		{name: p.name + " last before middle", seed: p.seed, steps: []step{tr(0), tr(2), tr(1)}, ct: p.ct, snat: p.snat, check: whole},
		{name: p.name + " last before first", seed: p.seed, steps: []step{early(2), tr(0), tr(1)}, ct: p.ct, snat: p.snat},
	}
}

// snatFlow is the pair of entries of a masqueraded flow: container to srv,
// leaving as nat.
func snatFlow(proto maps.Proto, container, srv, nat netip.AddrPort) []snatEntry {
	return []snatEntry{
		{Proto: proto, Src: container, Dst: srv, Nat: nat, Flags: maps.SNATForward},
		{Proto: proto, Src: srv, Dst: nat, Nat: container, Flags: maps.SNATReverse},
	}
}

func TestFragments(t *testing.T) {
	o := loadObjects(t)
	host := []netip.Addr{hostIP, hostIP2}
	published := seed{bindings: []maps.Binding{udpApp, tcpWeb}, hostAddrs: host}

	appCT := maps.CTEntry{Proto: maps.UDP, Backend: udpApp.Backend, Client: clientPort, Dialled: udpApp.Host, BindingID: udpApp.ID}

	container := ap(backend, 40000)
	dns := ap(server, 53)
	web := ap(server, 443)
	// The container's port is outside the SNAT range: the flow moves
	// into it, to 50000.
	moved := masquerading
	moved.config = oneSNATPort

	// An echo identifier needs no range, but this one is another
	// container's flow already: the echo moves to 50000.
	const echoID = 0x4d2
	echoTaken := snatFlow(icmpProto, ap(backend2, echoID), ap(server, 0), ap(hostIP, echoID))
	echoCrowded := masquerading.withSNAT(echoTaken)
	echoCrowded.config = oneSNATPort

	udp := func(src, dst netip.AddrPort) []byte { return udpL4(t, src, dst) }
	echoRequestL4 := func(src, _ netip.AddrPort) []byte { return echoL4(t, echoRequest, src.Port()) }
	echoReplyL4 := func(_, dst netip.AddrPort) []byte { return echoL4(t, echoReply, dst.Port()) }

	masqTCP := masquerading
	masqTCP.snat = snatFlow(maps.TCP, container, web, ap(hostIP, 40000))
	masqTCP.snat[0].TCPFlags = maps.CTTCPSyn | maps.CTTCPEstablished
	masqTCP.snat[1].TCPFlags = maps.CTTCPSynAck

	paths := []fragPath{
		{
			name: "udp dnat", seed: flowSeed{seed: published}, stat: "dnat",
			proto: layers.IPProtocolUDP, l4: udp,
			from: [2]netip.AddrPort{clientPort, udpApp.Host}, to: [2]netip.AddrPort{clientPort, udpApp.Backend},
			early: actUnspec, earlyStat: "pass_fragment",
			ct: []ctRow{{CTEntry: appCT, New: true}},
		},
		{
			name: "udp reverse nat", seed: flowSeed{seed: seed{ct: []maps.CTEntry{appCT}}}, egress: true, stat: "rnat",
			proto: layers.IPProtocolUDP, l4: udp,
			from: [2]netip.AddrPort{udpApp.Backend, clientPort}, to: [2]netip.AddrPort{udpApp.Host, clientPort},
			early: actUnspec, earlyStat: "pass_fragment",
			ct: []ctRow{{CTEntry: appCT, Replied: true}},
		},
		{
			name: "udp reverse nat from a masquerading network", seed: masquerading.with(seed{ct: []maps.CTEntry{appCT}}), egress: true, stat: "rnat",
			proto: layers.IPProtocolUDP, l4: udp,
			from: [2]netip.AddrPort{udpApp.Backend, clientPort}, to: [2]netip.AddrPort{udpApp.Host, clientPort},
			early: actShot, earlyStat: "drop_unmasqueraded",
			ct: []ctRow{{CTEntry: appCT, Replied: true}},
		},
		{
			name: "udp masquerade", seed: masquerading, egress: true, stat: "snat",
			proto: layers.IPProtocolUDP, l4: udp,
			from: [2]netip.AddrPort{container, dns}, to: [2]netip.AddrPort{ap(hostIP, 40000), dns},
			early: actShot, earlyStat: "drop_unmasqueraded",
			snat: snatFlow(maps.UDP, container, dns, ap(hostIP, 40000)),
		},
		{
			name: "udp masquerade to another port", seed: moved, egress: true, stat: "snat",
			proto: layers.IPProtocolUDP, l4: udp,
			from: [2]netip.AddrPort{container, dns}, to: [2]netip.AddrPort{ap(hostIP, 50000), dns},
			early: actShot, earlyStat: "drop_unmasqueraded",
			snat: snatFlow(maps.UDP, container, dns, ap(hostIP, 50000)),
		},
		{
			name: "udp masquerade reply", seed: masquerading.withSNAT(snatFlow(maps.UDP, container, dns, ap(hostIP, 40000))), stat: "snat_reverse",
			proto: layers.IPProtocolUDP, l4: udp,
			from: [2]netip.AddrPort{dns, ap(hostIP, 40000)}, to: [2]netip.AddrPort{dns, container},
			early: actUnspec, earlyStat: "pass_fragment",
		},
		{
			name: "udp masquerade reply to another port", seed: masquerading.withSNAT(snatFlow(maps.UDP, container, dns, ap(hostIP, 50000))), stat: "snat_reverse",
			proto: layers.IPProtocolUDP, l4: udp,
			from: [2]netip.AddrPort{dns, ap(hostIP, 50000)}, to: [2]netip.AddrPort{dns, container},
			early: actUnspec, earlyStat: "pass_fragment",
		},
		{
			name: "icmp echo masquerade", seed: masquerading, egress: true, stat: "snat",
			proto: layers.IPProtocolICMPv4, l4: echoRequestL4,
			from: [2]netip.AddrPort{ap(backend, echoID), ap(server, 0)}, to: [2]netip.AddrPort{ap(hostIP, echoID), ap(server, 0)},
			early: actShot, earlyStat: "drop_unmasqueraded",
			snat: snatFlow(icmpProto, ap(backend, echoID), ap(server, 0), ap(hostIP, echoID)),
		},
		{
			name: "icmp echo masquerade to another identifier", seed: echoCrowded, egress: true, stat: "snat",
			proto: layers.IPProtocolICMPv4, l4: echoRequestL4,
			from: [2]netip.AddrPort{ap(backend, echoID), ap(server, 0)}, to: [2]netip.AddrPort{ap(hostIP, 50000), ap(server, 0)},
			early: actShot, earlyStat: "drop_unmasqueraded",
			snat: slices.Concat(echoTaken, snatFlow(icmpProto, ap(backend, echoID), ap(server, 0), ap(hostIP, 50000))),
		},
		{
			name: "icmp echo reply", seed: masquerading.withSNAT(snatFlow(icmpProto, ap(backend, echoID), ap(server, 0), ap(hostIP, 50000))), stat: "snat_reverse",
			proto: layers.IPProtocolICMPv4, l4: echoReplyL4,
			from: [2]netip.AddrPort{ap(server, 0), ap(hostIP, 50000)}, to: [2]netip.AddrPort{ap(server, 0), ap(backend, echoID)},
			early: actUnspec, earlyStat: "pass_fragment",
		},
		{
			name: "tcp dnat", seed: flowSeed{seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host, ct: []maps.CTEntry{webEstablished}}}, stat: "dnat",
			proto: layers.IPProtocolTCP, l4: tcpL4(t, dataSeg(1001, 9001)),
			from: [2]netip.AddrPort{clientPort, tcpWeb.Host}, to: [2]netip.AddrPort{clientPort, tcpWeb.Backend},
			early: actUnspec, earlyStat: "pass_fragment",
			ct: []ctRow{{CTEntry: webEstablished, TCP: [2]maps.TCPSide{side(9001, 501, 0)}}},
		},
		{
			name: "tcp reverse nat", seed: masquerading.with(seed{ct: []maps.CTEntry{webEstablished}}), egress: true, stat: "rnat",
			proto: layers.IPProtocolTCP, l4: tcpL4(t, dataSeg(9001, 1001)),
			from: [2]netip.AddrPort{tcpWeb.Backend, clientPort}, to: [2]netip.AddrPort{tcpWeb.Host, clientPort},
			early: actShot, earlyStat: "drop_unmasqueraded",
			ct: []ctRow{{CTEntry: webEstablished, Replied: true, TCP: [2]maps.TCPSide{{}, side(1001, 501, 0)}}},
		},
		{
			name: "tcp masquerade", seed: masqTCP, egress: true, stat: "snat",
			proto: layers.IPProtocolTCP, l4: tcpL4(t, dataSeg(1001, 9001)),
			from: [2]netip.AddrPort{container, web}, to: [2]netip.AddrPort{ap(hostIP, 40000), web},
			early: actShot, earlyStat: "drop_unmasqueraded",
			snat: withSide(masqTCP.snat, 0, side(9001, 501, 0)),
		},
		{
			name: "tcp masquerade reply", seed: masqTCP, stat: "snat_reverse",
			proto: layers.IPProtocolTCP, l4: tcpL4(t, dataSeg(9001, 1001)),
			from: [2]netip.AddrPort{web, ap(hostIP, 40000)}, to: [2]netip.AddrPort{web, container},
			early: actUnspec, earlyStat: "pass_fragment",
			snat: withSide(masqTCP.snat, 1, side(1001, 501, 0)),
		},
	}
	var cases []flowCase
	for _, p := range paths {
		cases = append(cases, fragCases(t, p)...)
	}
	cases = append(cases, fragmentOddCases(t, published)...)
	runFlows(t, o, cases)
	t.Run("helper rewrites", func(t *testing.T) { runFlows(t, loadObjects(t, helperRewrites(t)), cases) })
}

// withSide returns a copy of es whose entry i has the TCP side sd.
func withSide(es []snatEntry, i int, sd maps.TCPSide) []snatEntry {
	es = slices.Clone(es)
	es[i].TCP = sd
	return es
}

// fragmentOddCases are the fragment cases that do not fit one path:
// datagrams interleaved, an IP identification reused, a UDP datagram
// without checksum, and echoes to the host itself.
func fragmentOddCases(t testing.TB, published seed) []flowCase {
	frags := func(src, dst netip.AddrPort, id uint16) [][]byte {
		return fragmentFrames(t, src.Addr(), dst.Addr(), layers.IPProtocolUDP, id, udpL4(t, src, dst), fragCuts...)
	}
	frag := func(name string, egress bool, in, out []byte, stat string) step {
		return step{name: name, egress: egress, in: in, ret: actUnspec, out: out, stat: stat}
	}

	// Two containers send to the same server with the same IP id.
	dns := ap(server, 53)
	a, b := ap(backend, 40000), ap(backend2, 40001)
	aIn, aOut := frags(a, dns, fragID), frags(ap(hostIP, 40000), dns, fragID)
	bIn, bOut := frags(b, dns, fragID), frags(ap(hostIP, 40001), dns, fragID)

	// The client's IP id wraps around: a datagram to another published
	// port reuses the id of one already delivered.
	udpOther := maps.Binding{Proto: maps.UDP, Host: ap(hostIP, 5301), Backend: ap(backend2, 6301), ID: 9}
	oldIn, oldOut := frags(clientPort, udpApp.Host, fragID), frags(clientPort, udpApp.Backend, fragID)
	newIn, newOut := frags(clientPort, udpOther.Host, fragID), frags(clientPort, udpOther.Backend, fragID)

	// UDP without a checksum: the first fragment's must stay 0.
	noSum := func(src, dst netip.AddrPort) [][]byte {
		l4 := udpL4(t, src, dst)
		l4[6], l4[7] = 0, 0
		return fragmentFrames(t, src.Addr(), dst.Addr(), layers.IPProtocolUDP, fragID, l4, fragCuts...)
	}
	nsIn, nsOut := noSum(clientPort, udpApp.Host), noSum(clientPort, udpApp.Backend)

	echo := fragmentFrames(t, client, hostIP, layers.IPProtocolICMPv4, fragID, echoL4(t, echoRequest, 77), fragCuts...)

	// A tiny first fragment (RFC 1858): eight bytes of TCP header, the
	// ports and no more. Nothing can translate it; it must not leave
	// with the container's address either.
	tiny := fragmentFrames(t, backend, server, layers.IPProtocolTCP, fragID, l4Of(segDatagram(t, ap(backend, 40000), ap(server, 443), dataSeg(1001, 9001))), 8)

	// A first fragment of 16 bytes of TCP header: its checksum is in the
	// second fragment, so nothing in the first can absorb a port change.
	// Padded to Ethernet's minimum, the frame still has bytes where the
	// checksum would be: they are padding, not the segment's.
	short := fragmentFrames(t, client, hostIP, layers.IPProtocolTCP, fragID, l4Of(segDatagram(t, clientPort, tcpWeb.Host, dataSeg(1001, 9001))), 16)

	appCT := maps.CTEntry{Proto: maps.UDP, Backend: udpApp.Backend, Client: clientPort, Dialled: udpApp.Host, BindingID: udpApp.ID}
	otherCT := maps.CTEntry{Proto: maps.UDP, Backend: udpOther.Backend, Client: clientPort, Dialled: udpOther.Host, BindingID: udpOther.ID}
	withOther := published
	withOther.bindings = slices.Concat(published.bindings, []maps.Binding{udpOther})

	return []flowCase{
		{
			name: "two containers' datagrams with one ip id interleaved",
			seed: masquerading,
			steps: []step{
				frag("a0", true, aIn[0], aOut[0], "snat"), frag("b0", true, bIn[0], bOut[0], "snat"),
				frag("b2", true, bIn[2], bOut[2], "snat"), frag("a1", true, aIn[1], aOut[1], "snat"),
				frag("a2", true, aIn[2], aOut[2], "snat"), frag("b1", true, bIn[1], bOut[1], "snat"),
			},
			snat: slices.Concat(snatFlow(maps.UDP, a, dns, ap(hostIP, 40000)), snatFlow(maps.UDP, b, dns, ap(hostIP, 40001))),
			check: func(t *testing.T, outs [][]byte) {
				reassembled(hostIP, server, 0, 3, 4)(t, outs)
				reassembled(hostIP, server, 1, 2, 5)(t, outs)
			},
		},
		{
			name: "ip id reused by a datagram to another published port",
			seed: flowSeed{seed: withOther},
			steps: []step{
				frag("old 0", false, oldIn[0], oldOut[0], "dnat"), frag("old 1", false, oldIn[1], oldOut[1], "dnat"),
				frag("old 2", false, oldIn[2], oldOut[2], "dnat"),
				frag("new 0", false, newIn[0], newOut[0], "dnat"), frag("new 2", false, newIn[2], newOut[2], "dnat"),
				frag("new 1", false, newIn[1], newOut[1], "dnat"),
			},
			ct: []ctRow{{CTEntry: appCT, New: true}, {CTEntry: otherCT, New: true}},
			check: func(t *testing.T, outs [][]byte) {
				reassembled(client, backend, 0, 1, 2)(t, outs)
				reassembled(client, backend2, 3, 4, 5)(t, outs)
			},
		},
		{
			name: "udp dnat without checksum",
			seed: flowSeed{seed: published},
			steps: []step{
				frag("fragment 0", false, nsIn[0], nsOut[0], "dnat"), frag("fragment 1", false, nsIn[1], nsOut[1], "dnat"),
				frag("fragment 2", false, nsIn[2], nsOut[2], "dnat"),
			},
			ct:    []ctRow{{CTEntry: appCT, New: true}},
			check: reassembled(client, backend, 0, 1, 2),
		},
		{
			name: "icmp echo to the host is the host's",
			seed: flowSeed{seed: published},
			steps: []step{
				frag("fragment 2 before its first", false, echo[2], nil, "pass_fragment"),
				frag("fragment 0", false, echo[0], nil, "pass_no_match"),
				frag("fragment 1", false, echo[1], nil, "pass_no_match"),
			},
		},
		{
			name: "a tiny first fragment from a masquerading network",
			seed: masquerading,
			steps: []step{
				{name: "fragment 0", egress: true, in: tiny[0], ret: actShot, stat: "drop_unmasqueraded"},
				{name: "fragment 1", egress: true, in: tiny[1], ret: actShot, stat: "drop_unmasqueraded"},
			},
		},
		{
			name: "a first fragment that ends before the tcp checksum",
			seed: flowSeed{seed: seed{bindings: published.bindings, hostAddrs: published.hostAddrs, ct: []maps.CTEntry{webEstablished}}},
			steps: []step{
				frag("fragment 0", false, short[0], nil, "pass_malformed"),
				frag("fragment 1", false, short[1], nil, "pass_fragment"),
			},
		},
	}
}
