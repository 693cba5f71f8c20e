package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pontoon-net/pontoon/maps"
)

// IPv6 published ports: the outside client, the host's addresses, and the
// backends of ipv6_test.go's network 1.
var (
	v6Client     = netip.MustParseAddr("2001:db8:100::7")
	v6ClientPort = netip.AddrPortFrom(v6Client, 40000)
	v6Router     = netip.MustParseAddr("2001:db8:100::fe")
	v6Host       = netip.MustParseAddr("2001:db8::1")
	v6Host2      = netip.MustParseAddr("2001:db8::2")
	v6NotHost    = netip.MustParseAddr("2001:db8:ffff::9")
	v6Backend    = v6Me
	v6Backend2   = v6Peer
	v6Hosts      = []netip.Addr{v6Host, v6Host2}

	tcpWeb6 = maps.Binding{Proto: maps.TCP, Host: ap(v6Host, 80), Backend: ap(v6Backend, 8080), ID: 11}
	udpApp6 = maps.Binding{Proto: maps.UDP, Host: ap(v6Host, 5300), Backend: ap(v6Backend, 6300), ID: 12}
	tcpAny6 = maps.Binding{Proto: maps.TCP, Host: ap(netip.IPv6Unspecified(), 80), Backend: ap(v6Backend2, 9090), ID: 13}
	tcpLo6  = maps.Binding{Proto: maps.TCP, Host: ap(netip.IPv6Loopback(), 80), Backend: ap(v6Backend, 8080), ID: 14}
)

const nextHeaderICMPv6 = 58

func tcp6Layers(src, dst netip.AddrPort, f tcpFlags) []gopacket.SerializableLayer {
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()),
		DstPort: layers.TCPPort(dst.Port()),
		Seq:     1000,
		Window:  64240,
		FIN:     f&fin != 0,
		SYN:     f&syn != 0,
		RST:     f&rst != 0,
		ACK:     f&ack != 0,
	}
	if tcp.ACK {
		tcp.Ack = 5000
	}
	return []gopacket.SerializableLayer{tcp, gopacket.Payload("pontoon tcp payload")}
}

func tcp6Frame(t testing.TB, src, dst netip.AddrPort, f tcpFlags) []byte {
	return v6Frame(t, src.Addr(), dst.Addr(), tcp6Layers(src, dst, f))
}

func udp6Frame(t testing.TB, src, dst netip.AddrPort, payload []byte) []byte {
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	return v6Frame(t, src.Addr(), dst.Addr(), []gopacket.SerializableLayer{udp, gopacket.Payload(payload)})
}

// v6Datagram is a frame's IPv6 datagram, as an ICMPv6 error quotes it.
func v6Datagram(f []byte) []byte { return bytes.Clone(f[fuzzEthLen:]) }

// ext is an IPv6 extension header: its type and its bytes, the first of
// which (next header) withExt fills in.
type ext struct {
	typ  byte
	body []byte
}

var (
	hopByHop     = ext{0, []byte{0, 0, 5, 2, 0, 0, 1, 0}} // router alert, PadN
	destOpts     = ext{60, []byte{0, 0, 1, 4, 0, 0, 0, 0}}
	routingDone  = ext{43, []byte{0, 0, 4, 0, 0, 0, 0, 0}} // no segments left
	routingAhead = ext{43, []byte{0, 0, 4, 1, 0, 0, 0, 0}} // one segment left
)

// withExt puts extension headers between the IPv6 header of frame f and
// what followed it. The L4 checksum stays right: the pseudo header holds
// the addresses, not the chain.
func withExt(f []byte, exts ...ext) []byte {
	const l3 = fuzzEthLen
	out := bytes.Clone(f[:l3+40])
	var chain []byte
	for i, e := range exts {
		h := bytes.Clone(e.body)
		h[0] = f[l3+6]
		if i+1 < len(exts) {
			h[0] = exts[i+1].typ
		}
		chain = append(chain, h...)
	}
	out[l3+6] = exts[0].typ
	out = append(out, chain...)
	out = append(out, f[l3+40:]...)
	binary.BigEndian.PutUint16(out[l3+4:], binary.BigEndian.Uint16(out[l3+4:])+uint16(len(chain)))
	return out
}

// fragments6 cuts frame f's payload (everything behind its IPv6 header)
// at cut (a multiple of 8) into two fragments of datagram id.
func fragments6(f []byte, id uint32, cut int) [][]byte {
	const l3 = fuzzEthLen
	payload := f[l3+40:]
	one := func(offset int, more bool, part []byte) []byte {
		out := bytes.Clone(f[:l3+40])
		out[l3+6] = 44
		fragOff := uint16(offset/8) << 3
		if more {
			fragOff |= 1
		}
		hdr := []byte{f[l3+6], 0, byte(fragOff >> 8), byte(fragOff)}
		hdr = binary.BigEndian.AppendUint32(hdr, id)
		out = append(out, hdr...)
		out = append(out, part...)
		binary.BigEndian.PutUint16(out[l3+4:], uint16(8+len(part)))
		return out
	}
	return [][]byte{one(0, true, payload[:cut]), one(cut, false, payload[cut:])}
}

// icmp6ErrorFrame is an ICMPv6 error (type, code, the 32-bit word after
// the checksum: Packet Too Big's MTU) from src to dst quoting quoted.
func icmp6ErrorFrame(t testing.TB, src, dst netip.Addr, typ, code uint8, word uint32, quoted []byte) []byte {
	msg := binary.BigEndian.AppendUint32([]byte{typ, code, 0, 0}, word)
	msg = append(msg, quoted...)
	sum := onesSum(onesSum(0, pseudo6(src, dst, nextHeaderICMPv6, len(msg))), msg)
	binary.BigEndian.PutUint16(msg[2:], ^uint16(sum))
	return v6Frame(t, src, dst, []gopacket.SerializableLayer{gopacket.Payload(msg)},
		func(_ *layers.Ethernet, ip *layers.IPv6) { ip.NextHeader = nextHeaderICMPv6 })
}

// pseudo6 is the IPv6 pseudo header (RFC 8200, 8.1).
func pseudo6(src, dst netip.Addr, proto byte, length int) []byte {
	s, d := src.As16(), dst.As16()
	out := append(s[:], d[:]...)
	out = binary.BigEndian.AppendUint32(out, uint32(length))
	return append(out, 0, 0, 0, proto)
}

// walk6 follows an IPv6 datagram's extension headers as RFC 8200 lays
// them out: the upper protocol, where it starts, and whether this is a
// fragment (first: its L4 checksum covers bytes not here; later: no L4).
func walk6(t testing.TB, d []byte) (proto byte, off int, fragment bool) {
	t.Helper()
	proto, off = d[6], 40
	for {
		switch proto {
		case 0, 43, 60:
			proto, off = d[off], off+(int(d[off+1])+1)*8
		case 44:
			fragment = fragment || binary.BigEndian.Uint16(d[off+2:])&0xfff9 != 0
			proto, off = d[off], off+8
		default:
			return proto, off, fragment
		}
	}
}

// verifyChecksums6 checks every checksum in an IPv6 datagram from
// scratch: TCP, UDP or ICMPv6 over their pseudo header, and the quoted
// packet's L4 checksum when an ICMPv6 error quotes it whole.
func verifyChecksums6(t testing.TB, d []byte) {
	t.Helper()
	end := 40 + int(binary.BigEndian.Uint16(d[4:]))
	if end > len(d) {
		t.Fatalf("IPv6 payload length %d runs past the %d bytes there are", end-40, len(d)-40)
	}
	d = d[:end]
	proto, off, fragment := walk6(t, d)
	if fragment {
		return // checked on the reassembled datagram
	}
	seg := d[off:]
	if proto == byte(layers.IPProtocolUDP) && binary.BigEndian.Uint16(seg[6:]) == 0 {
		t.Errorf("IPv6 UDP checksum is 0")
	}
	if !l4SumOK(d[8:24], d[24:40], layers.IPProtocol(proto), seg) {
		t.Errorf("IPv6 %v checksum %#04x is wrong", layers.IPProtocol(proto), binary.BigEndian.Uint16(seg[l4CsumOffAny(proto):]))
	}
	if proto == nextHeaderICMPv6 && seg[0] < 128 {
		q := seg[8:]
		qend := 40 + int(binary.BigEndian.Uint16(q[4:]))
		if qend > len(q) {
			return // a truncated quote: its L4 checksum cannot be checked
		}
		q = q[:qend]
		qproto, qoff, _ := walk6(t, q)
		if !l4SumOK(q[8:24], q[24:40], layers.IPProtocol(qproto), q[qoff:]) {
			t.Errorf("quoted %v checksum is wrong", layers.IPProtocol(qproto))
		}
	}
}

func l4CsumOffAny(proto byte) int {
	if proto == nextHeaderICMPv6 {
		return 2
	}
	return l4CsumOff(layers.IPProtocol(proto))
}

// TestIPv6PublishedPorts: DNAT, reverse NAT and ICMPv6 errors over IPv6,
// through extension headers and fragments, each output compared byte for
// byte and its checksums recomputed from scratch, with the skb's checksum
// state as a NIC leaves it (none, complete) and the prefilter on and off;
// XDP must leave IPv6 to tc.
func TestIPv6PublishedPorts(t *testing.T) {
	o := loadObjects(t)

	webCT := maps.CTEntry{Proto: maps.TCP, Backend: tcpWeb6.Backend, Client: v6ClientPort, Dialled: tcpWeb6.Host, BindingID: tcpWeb6.ID, TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished}
	appCT := maps.CTEntry{Proto: maps.UDP, Backend: udpApp6.Backend, Client: v6ClientPort, Dialled: udpApp6.Host, BindingID: udpApp6.ID}
	synCT := func(b maps.Binding, dialled netip.AddrPort) []maps.CTEntry {
		return []maps.CTEntry{{Proto: maps.TCP, Backend: b.Backend, Client: v6ClientPort, Dialled: dialled, BindingID: b.ID, TCPFlags: maps.CTTCPSyn}}
	}
	published := seed{bindings: []maps.Binding{tcpWeb6, udpApp6, tcpAny6, tcpLo6}, hostAddrs: v6Hosts}
	withNets := published
	withNets.networks = []maps.Network{{Subnet: netip.MustParsePrefix("fd00:18::/64"), Gateway: v6GW1, ID: 1, Masquerade: true}}
	allowed := tcpWeb6
	allowed.Allowlist = true

	big := bytes.Repeat([]byte("0123456789abcdef"), 100) // 1600 bytes: two fragments
	bigIn := fragments6(udp6Frame(t, v6ClientPort, udpApp6.Host, big), 0xfeed, 1232)
	bigOut := fragments6(udp6Frame(t, v6ClientPort, udpApp6.Backend, big), 0xfeed, 1232)
	bigReplyIn := fragments6(udp6Frame(t, udpApp6.Backend, v6ClientPort, big), 0xbeef, 1232)
	bigReplyOut := fragments6(udp6Frame(t, udpApp6.Host, v6ClientPort, big), 0xbeef, 1232)

	reply := tcp6Frame(t, tcpWeb6.Host, v6ClientPort, ack)           // what the client got from us
	replyBackend := tcp6Frame(t, tcpWeb6.Backend, v6ClientPort, ack) // what the backend sent
	toBackend := udp6Frame(t, v6ClientPort, udpApp6.Backend, []byte("q"))
	toHost := udp6Frame(t, v6ClientPort, udpApp6.Host, []byte("q"))
	const ptb, destUnreach, timeExceeded = 2, 1, 3

	longChain := make([]ext, 7)
	for i := range longChain {
		longChain[i] = destOpts
	}

	runTable(t, o, []datapathCase{
		// DNAT
		{name: "tcp syn to an exact binding", seed: published, in: tcp6Frame(t, v6ClientPort, tcpWeb6.Host, syn), ret: actUnspec,
			out: tcp6Frame(t, v6ClientPort, tcpWeb6.Backend, syn), stat: "dnat", ct: synCT(tcpWeb6, tcpWeb6.Host)},
		{name: "udp to an exact binding", seed: published, in: udp6Frame(t, v6ClientPort, udpApp6.Host, []byte("v6")), ret: actUnspec,
			out: udp6Frame(t, v6ClientPort, udpApp6.Backend, []byte("v6")), stat: "dnat", ct: []maps.CTEntry{appCT}},
		{name: "tcp syn to the wildcard on another host address", seed: published, in: tcp6Frame(t, v6ClientPort, ap(v6Host2, 80), syn), ret: actUnspec,
			out: tcp6Frame(t, v6ClientPort, tcpAny6.Backend, syn), stat: "dnat", ct: synCT(tcpAny6, ap(v6Host2, 80))},
		{name: "the wildcard does not take an address not the host's", seed: published, in: tcp6Frame(t, v6ClientPort, ap(v6NotHost, 80), syn), ret: actUnspec, stat: "pass_no_match"},
		{name: "an IPv4 binding does not take IPv6", seed: seed{bindings: []maps.Binding{tcpAny}, hostAddrs: v6Hosts}, in: tcp6Frame(t, v6ClientPort, ap(v6Host, 80), syn), ret: actUnspec, stat: "pass_no_match"},
		{name: "loopback from outside", seed: published, in: tcp6Frame(t, v6ClientPort, ap(netip.IPv6Loopback(), 80), syn), ret: actUnspec, stat: "pass_local_only"},
		{name: "an ack opens no flow", seed: published, in: tcp6Frame(t, v6ClientPort, tcpWeb6.Host, ack), ret: actUnspec, stat: "pass_not_new"},
		{name: "data of an established flow", seed: seed{bindings: published.bindings, hostAddrs: v6Hosts, ct: []maps.CTEntry{webCT}},
			in: tcp6Frame(t, v6ClientPort, tcpWeb6.Host, ack), ret: actUnspec, out: tcp6Frame(t, v6ClientPort, tcpWeb6.Backend, ack), stat: "dnat"},
		{name: "an IPv4 allow-from prefix does not hold an IPv6 client", seed: seed{bindings: []maps.Binding{allowed}, hostAddrs: v6Hosts,
			allow: map[uint32][]netip.Prefix{allowed.ID: {netip.MustParsePrefix("32.1.13.184/29")}}}, // 2001:db8::/29's first bits
			in: tcp6Frame(t, v6ClientPort, tcpWeb6.Host, syn), ret: tcActShot, stat: "drop_not_allowed"},
		{name: "not published, to a container", seed: withNets, in: tcp6Frame(t, v6ClientPort, ap(v6Backend, 22), syn), ret: tcActShot, stat: "drop_not_published"},
		// extension headers
		{name: "behind hop-by-hop", seed: published, in: withExt(tcp6Frame(t, v6ClientPort, tcpWeb6.Host, syn), hopByHop), ret: actUnspec,
			out: withExt(tcp6Frame(t, v6ClientPort, tcpWeb6.Backend, syn), hopByHop), stat: "dnat", ct: synCT(tcpWeb6, tcpWeb6.Host)},
		{name: "behind hop-by-hop, destination options and a finished routing header", seed: published,
			in:  withExt(udp6Frame(t, v6ClientPort, udpApp6.Host, []byte("v6")), hopByHop, destOpts, routingDone),
			ret: actUnspec, out: withExt(udp6Frame(t, v6ClientPort, udpApp6.Backend, []byte("v6")), hopByHop, destOpts, routingDone),
			stat: "dnat", ct: []maps.CTEntry{appCT}},
		{name: "a routing header with segments left is not for us", seed: published, in: withExt(tcp6Frame(t, v6ClientPort, tcpWeb6.Host, syn), routingAhead), ret: actUnspec, stat: "pass_no_match"},
		{name: "a chain too long to follow", seed: published, in: withExt(tcp6Frame(t, v6ClientPort, tcpWeb6.Host, syn), longChain...), ret: actUnspec, stat: "pass_malformed"},
		// fragments
		{name: "first fragment", seed: published, in: bigIn[0], ret: actUnspec, out: bigOut[0], stat: "dnat", ct: []maps.CTEntry{appCT}},
		{name: "later fragment after its first", seed: published, before: [][]byte{bigIn[0]}, in: bigIn[1], ret: actUnspec, out: bigOut[1], stat: "dnat", ct: []maps.CTEntry{appCT}},
		{name: "later fragment before its first", seed: published, in: bigIn[1], ret: actUnspec, stat: "pass_fragment"},
		{name: "a fragment with headers behind its fragment header", seed: published,
			in: fragments6(withExt(udp6Frame(t, v6ClientPort, udpApp6.Host, big), destOpts), 7, 1232)[0], ret: actUnspec, stat: "pass_no_match"},
		// reverse NAT
		{name: "reverse nat tcp", seed: seed{ct: []maps.CTEntry{webCT}}, egress: true, in: replyBackend, ret: actUnspec, out: reply, stat: "rnat"},
		{name: "reverse nat syn-ack after dnat", seed: published, before: [][]byte{tcp6Frame(t, v6ClientPort, tcpWeb6.Host, syn)}, egress: true,
			in: tcp6Frame(t, tcpWeb6.Backend, v6ClientPort, syn|ack), ret: actUnspec, out: tcp6Frame(t, tcpWeb6.Host, v6ClientPort, syn|ack), stat: "rnat",
			ct: []maps.CTEntry{{Proto: maps.TCP, Backend: tcpWeb6.Backend, Client: v6ClientPort, Dialled: tcpWeb6.Host, BindingID: tcpWeb6.ID, TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck}}},
		{name: "reverse nat udp behind destination options", seed: seed{ct: []maps.CTEntry{appCT}}, egress: true,
			in: withExt(udp6Frame(t, udpApp6.Backend, v6ClientPort, []byte("a")), destOpts), ret: actUnspec,
			out: withExt(udp6Frame(t, udpApp6.Host, v6ClientPort, []byte("a")), destOpts), stat: "rnat"},
		{name: "reverse nat first fragment", seed: seed{ct: []maps.CTEntry{appCT}}, egress: true, in: bigReplyIn[0], ret: actUnspec, out: bigReplyOut[0], stat: "rnat"},
		{name: "reverse nat without ct", seed: withNets, egress: true, in: replyBackend, ret: tcActShot, stat: "drop_unmasqueraded"},
		// ICMPv6 errors
		{name: "packet too big about a reply", seed: seed{bindings: published.bindings, hostAddrs: v6Hosts, ct: []maps.CTEntry{webCT}},
			in:  icmp6ErrorFrame(t, v6Router, v6Host, ptb, 0, 1280, v6Datagram(reply)),
			ret: actUnspec, out: icmp6ErrorFrame(t, v6Router, v6Backend, ptb, 0, 1280, v6Datagram(replyBackend)), stat: "icmp_dnat"},
		{name: "packet too big quoting 8 bytes of tcp", seed: seed{bindings: published.bindings, hostAddrs: v6Hosts, ct: []maps.CTEntry{webCT}},
			in:  icmp6ErrorFrame(t, v6Router, v6Host, ptb, 0, 1280, v6Datagram(reply)[:48]),
			ret: actUnspec, out: icmp6ErrorFrame(t, v6Router, v6Backend, ptb, 0, 1280, v6Datagram(replyBackend)[:48]), stat: "icmp_dnat"},
		{name: "time exceeded about a reply behind hop-by-hop", seed: seed{bindings: published.bindings, hostAddrs: v6Hosts, ct: []maps.CTEntry{webCT}},
			in:  icmp6ErrorFrame(t, v6Router, v6Host, timeExceeded, 0, 0, v6Datagram(withExt(reply, hopByHop))),
			ret: actUnspec, out: icmp6ErrorFrame(t, v6Router, v6Backend, timeExceeded, 0, 0, v6Datagram(withExt(replyBackend, hopByHop))), stat: "icmp_dnat"},
		{name: "packet too big about a reply, aimed at the backend's own address", seed: seed{bindings: published.bindings, hostAddrs: v6Hosts, ct: []maps.CTEntry{webCT}, networks: withNets.networks},
			in: icmp6ErrorFrame(t, v6Router, v6Backend, ptb, 0, 1280, v6Datagram(reply)), ret: tcActShot, stat: "drop_not_published"},
		{name: "packet too big about no flow of ours", seed: published,
			in: icmp6ErrorFrame(t, v6Router, v6Host, ptb, 0, 1280, v6Datagram(reply)), ret: actUnspec, stat: "pass_no_match"},
		{name: "port unreachable from the backend", seed: seed{ct: []maps.CTEntry{appCT}}, egress: true,
			in:  icmp6ErrorFrame(t, v6Backend, v6Client, destUnreach, 4, 0, v6Datagram(toBackend)),
			ret: actUnspec, out: icmp6ErrorFrame(t, v6Host, v6Client, destUnreach, 4, 0, v6Datagram(toHost)), stat: "icmp_rnat"},
		{name: "another container's port unreachable about a client's packet", seed: seed{ct: []maps.CTEntry{appCT}, networks: withNets.networks}, egress: true,
			in: icmp6ErrorFrame(t, v6Backend2, v6Client, destUnreach, 4, 0, v6Datagram(toBackend)), ret: tcActShot, stat: "drop_unmasqueraded"},
		{name: "packet too big from the host about a client's packet", seed: seed{ct: []maps.CTEntry{appCT}}, egress: true,
			in:  icmp6ErrorFrame(t, v6Host2, v6Client, ptb, 0, 1280, v6Datagram(toBackend)),
			ret: actUnspec, out: icmp6ErrorFrame(t, v6Host2, v6Client, ptb, 0, 1280, v6Datagram(toHost)), stat: "icmp_rnat"},
	})
}

// TestIPv6FragmentsReassemble: a datagram bigger than the MTU, DNATed
// fragment by fragment, reassembles into one whose UDP checksum is right
// for its new addresses and ports.
func TestIPv6FragmentsReassemble(t *testing.T) {
	o := loadObjects(t)
	seedCase(t, o, datapathCase{seed: seed{bindings: []maps.Binding{udpApp6}, hostAddrs: v6Hosts}}, skbModes[0])
	big := bytes.Repeat([]byte("pontoon"), 500)
	_, dst, l4 := reassembled6(t, o.UplinkIngress, fragments6(udp6Frame(t, v6ClientPort, udpApp6.Host, big), 42, 1232))
	if dst != v6Backend {
		t.Errorf("reassembled datagram went to %v, want %v", dst, v6Backend)
	}
	if port := binary.BigEndian.Uint16(l4[2:]); port != udpApp6.Backend.Port() {
		t.Errorf("reassembled datagram to port %d, want %d", port, udpApp6.Backend.Port())
	}
	if !bytes.Equal(l4[8:], big) {
		t.Errorf("reassembled payload differs")
	}
}

// reassembled6 runs a UDP datagram's fragments through prog, one by one,
// and puts together what comes out: the addresses every fragment carries
// and the UDP datagram, whose checksum must be right for them.
func reassembled6(t *testing.T, prog *ebpf.Program, frags [][]byte) (src, dst netip.Addr, l4 []byte) {
	t.Helper()
	for i, f := range frags {
		ret, out := run(t, prog, f)
		if ret != actUnspec {
			t.Fatalf("fragment %d: returned %#x", i, ret)
		}
		s, d := netip.AddrFrom16([16]byte(out[fuzzEthLen+8:fuzzEthLen+24])), netip.AddrFrom16([16]byte(out[fuzzEthLen+24:fuzzEthLen+40]))
		if i > 0 && (s != src || d != dst) {
			t.Fatalf("fragment %d: %v -> %v, the first was %v -> %v", i, s, d, src, dst)
		}
		src, dst = s, d
		l4 = append(l4, out[fuzzEthLen+48:len(f)]...)
	}
	if !l4SumOK(src.AsSlice(), dst.AsSlice(), layers.IPProtocolUDP, l4) {
		t.Errorf("reassembled UDP checksum is wrong")
	}
	return src, dst, l4
}

// BenchmarkDNAT6: an established IPv6 TCP flow's packet through uplink
// ingress (BPF_PROG_TEST_RUN, so ns/op includes the syscall; ns/pkt is
// the program). Repeats run on the packet the last run left, so the
// bindings translate it back and forth, as BenchmarkDNAT's do.
func BenchmarkDNAT6(b *testing.B) {
	o := loadObjects(b)
	resetMaps(b, o)
	cycle := []maps.Binding{
		tcpWeb6,
		{Proto: maps.TCP, Host: tcpWeb6.Backend, Backend: tcpWeb6.Host, ID: 15},
	}
	if err := maps.NewBindings(o.Bindings).PutBatch(cycle); err != nil {
		b.Fatal(err)
	}
	for _, c := range cycle {
		putCT(b, o.Ct, maps.CTEntry{Proto: maps.TCP, Backend: c.Backend, Client: v6ClientPort, Dialled: c.Host, BindingID: c.ID})
	}
	benchRun(b, o, o.UplinkIngress, tcp6Frame(b, v6ClientPort, tcpWeb6.Host, ack), "dnat")
}
