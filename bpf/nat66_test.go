package bpf_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/maps"
)

// NAT66: network 1's IPv6 subnet (ipv6_test.go) masquerades behind the
// uplink's IPv6 address, v6Host.
var (
	v6Server  = netip.MustParseAddr("2001:db8:100::80")
	v6Spoofer = netip.MustParseAddr("2001:db8:dead::1")
	nat66Net  = maps.Network{Subnet: netip.MustParsePrefix("fd00:18::/64"), Gateway: v6GW1, ID: 1, Masquerade: true, NAT66: true}
	// nat66 is that network leaving through v6Host, with the SNAT port
	// range masquerading's is: the containers' ports 40000 and up stay.
	nat66 = flowSeed{
		seed:     seed{hostAddrs: []netip.Addr{v6Host, v6GW1}},
		networks: []maps.Network{nat66Net},
		uplinks6: map[uint32]netip.Addr{testIfindex: v6Host},
		config:   masquerading.config,
	}
)

const protoICMPv6 = maps.Proto(nextHeaderICMPv6)

func seg6Frame(t testing.TB, src, dst netip.AddrPort, s tcpSeg) []byte {
	t.Helper()
	return v6Frame(t, src.Addr(), dst.Addr(), []gopacket.SerializableLayer{segTCP(src, dst, s), gopacket.Payload(s.payload)})
}

// echo6Frame is an ICMPv6 echo request or reply with identifier id.
func echo6Frame(t testing.TB, src, dst netip.Addr, typ uint8, id uint16, payload []byte) []byte {
	return v6Frame(t, src, dst, icmp6(typ, &layers.ICMPv6Echo{Identifier: id, SeqNumber: 3}, gopacket.Payload(payload)))
}

func withSeed(s flowSeed, mod func(*flowSeed)) flowSeed {
	s.networks = append([]maps.Network(nil), s.networks...)
	mod(&s)
	return s
}

// TestNAT66: a masquerading network's IPv6 flows leave as the uplink's
// IPv6 address and their replies find the container: TCP with its state,
// UDP, echo by identifier, fragments, and ICMPv6 errors both ways, each
// output compared byte for byte (every checksum right), under every skb
// checksum state. What NAT66 does not cover still never leaves.
func TestNAT66(t *testing.T) {
	o := loadObjects(t)
	container, web, nat := ap(v6Me, 40000), ap(v6Server, 443), ap(v6Host, 40000)
	dns := ap(v6Server, 53)
	const echoReq, echoReply = layers.ICMPv6TypeEchoRequest, layers.ICMPv6TypeEchoReply
	const ptb, destUnreach = 2, 1
	const pingID = 0x5151

	cOut := func(s tcpSeg) step { return snatStep(seg6Frame(t, container, web, s), seg6Frame(t, nat, web, s)) }
	sIn := func(s tcpSeg) step {
		return snatReverseStep(seg6Frame(t, web, nat, s), seg6Frame(t, web, container, s))
	}
	tcpFlow := func(fwdFlags uint8, fwdSide maps.TCPSide, revFlags uint8, revSide maps.TCPSide) []snatEntry {
		es := snatFlow(maps.TCP, container, web, nat)
		es[0].TCPFlags, es[0].TCP = fwdFlags, fwdSide
		es[1].TCPFlags, es[1].TCP = revFlags, revSide
		return es
	}
	udpFlow := snatFlow(maps.UDP, container, dns, ap(v6Host, 40000))
	echoFlow := snatFlow(protoICMPv6, ap(v6Me, pingID), ap(v6Server, 0), ap(v6Host, pingID))
	hostPing := snatEntry{Proto: protoICMPv6, Src: ap(v6Server, 0), Dst: ap(v6Host, pingID), Nat: ap(v6Host, pingID), Flags: maps.SNATReverse | maps.SNATHost}

	query, answer := []byte("nat66 query"), []byte("nat66 answer")
	big := pattern(3000) // above any MTU here
	bigOut := fragments6(udp6Frame(t, container, dns, big), 0xc0de, 1232)
	bigOutNat := fragments6(udp6Frame(t, ap(v6Host, 40000), dns, big), 0xc0de, 1232)
	bigIn := fragments6(udp6Frame(t, dns, ap(v6Host, 40000), big), 0xbeef, 1232)
	bigInNat := fragments6(udp6Frame(t, dns, container, big), 0xbeef, 1232)

	// The datagram as the container sent it and as the server saw it;
	// the server's reply as sent and as the container got it.
	sent, seen := udp6Frame(t, container, dns, query), udp6Frame(t, ap(v6Host, 40000), dns, query)
	replySent, replyGot := udp6Frame(t, dns, ap(v6Host, 40000), answer), udp6Frame(t, dns, container, answer)

	noNAT66 := withSeed(nat66, func(s *flowSeed) { s.networks[0].NAT66 = false })
	noAddress := withSeed(nat66, func(s *flowSeed) { s.uplinks6 = nil })
	onePort := withSeed(nat66, func(s *flowSeed) { s.config = oneSNATPort })
	unmasqueraded := step{egress: true, in: udp6Frame(t, container, dns, query), ret: actShot, stat: "drop_unmasqueraded"}

	runFlows(t, o, []flowCase{
		{
			name:  "tcp handshake",
			seed:  nat66,
			steps: []step{named("syn", cOut(openSyn)), named("syn-ack", sIn(answerSyn))},
			snat:  tcpFlow(maps.CTTCPSyn, synSide, maps.CTTCPSynAck, synAckSide(1001, 65160, 7)),
		},
		{
			name: "tcp established, then the server's data",
			seed: nat66,
			steps: []step{named("syn", cOut(openSyn)), named("syn-ack", sIn(answerSyn)), named("ack", cOut(openAck)),
				named("server ack", sIn(answerAck))},
			snat: tcpFlow(maps.CTTCPSyn|maps.CTTCPEstablished, openerSide, maps.CTTCPSynAck, answererSide),
		},
		{
			name:  "udp both ways",
			seed:  nat66,
			steps: []step{snatStep(sent, seen), snatReverseStep(replySent, replyGot)},
			snat:  udpFlow,
		},
		{
			name: "a source port outside the range moves into it",
			seed: onePort,
			steps: []step{snatStep(sent, udp6Frame(t, ap(v6Host, 50000), dns, query)),
				snatReverseStep(udp6Frame(t, dns, ap(v6Host, 50000), answer), replyGot)},
			snat: snatFlow(maps.UDP, container, dns, ap(v6Host, 50000)),
		},
		{
			name: "a second container finds the one port taken",
			seed: onePort,
			steps: []step{snatStep(sent, udp6Frame(t, ap(v6Host, 50000), dns, query)),
				{egress: true, in: udp6Frame(t, ap(v6Peer, 40000), dns, query), ret: actShot, stat: "drop_snat_exhausted"}},
			snat: snatFlow(maps.UDP, container, dns, ap(v6Host, 50000)),
		},
		{
			name: "echo by identifier, outside the port range",
			seed: nat66,
			steps: []step{
				snatStep(echo6Frame(t, v6Me, v6Server, echoReq, pingID, query), echo6Frame(t, v6Host, v6Server, echoReq, pingID, query)),
				snatReverseStep(echo6Frame(t, v6Server, v6Host, echoReply, pingID, query), echo6Frame(t, v6Server, v6Me, echoReply, pingID, query)),
			},
			snat: echoFlow,
		},
		{
			name: "an echo with identifier 0 takes another",
			seed: onePort,
			steps: []step{
				snatStep(echo6Frame(t, v6Me, v6Server, echoReq, 0, query), echo6Frame(t, v6Host, v6Server, echoReq, 50000, query)),
				snatReverseStep(echo6Frame(t, v6Server, v6Host, echoReply, 50000, query), echo6Frame(t, v6Server, v6Me, echoReply, 0, query)),
				{in: echo6Frame(t, v6Server, v6Host, echoReq, 0, query), ret: actUnspec, stat: "pass_no_match"},
			},
			snat: snatFlow(protoICMPv6, ap(v6Me, 0), ap(v6Server, 0), ap(v6Host, 50000)),
		},
		{
			name:  "the host's own ping holds its identifier",
			seed:  nat66,
			steps: []step{{egress: true, in: echo6Frame(t, v6Host, v6Server, echoReq, pingID, query), ret: actUnspec, stat: "pass_no_match"}},
			snat:  []snatEntry{hostPing},
		},
		{
			name:  "a reply to the host's ping stays the host's",
			seed:  nat66.withSNAT([]snatEntry{hostPing}),
			steps: []step{{in: echo6Frame(t, v6Server, v6Host, echoReply, pingID, query), ret: actUnspec, stat: "pass_no_match"}},
		},
		{
			name: "a datagram bigger than the MTU, fragmented both ways",
			seed: nat66,
			steps: []step{
				named("first out", snatStep(bigOut[0], bigOutNat[0])), named("later out", snatStep(bigOut[1], bigOutNat[1])),
				named("first in", snatReverseStep(bigIn[0], bigInNat[0])), named("later in", snatReverseStep(bigIn[1], bigInNat[1])),
			},
			snat: udpFlow,
		},
		{
			name:  "a later fragment without its first does not leave",
			seed:  nat66,
			steps: []step{{egress: true, in: bigOut[1], ret: actShot, stat: "drop_unmasqueraded"}},
		},
		// The hostile and the unconfigured.
		{
			name:  "a reply from another server finds no flow",
			seed:  nat66.withSNAT(udpFlow),
			steps: []step{{in: udp6Frame(t, ap(v6Spoofer, 53), ap(v6Host, 40000), answer), ret: actUnspec, stat: "pass_no_match"}},
		},
		{
			name:  "a spoofed reply to a container's own address does not get in",
			seed:  nat66.withSNAT(udpFlow),
			steps: []step{{in: udp6Frame(t, dns, container, answer), ret: actShot, stat: "drop_not_published"}},
		},
		{
			name:  "an orphaned reverse half is never trusted",
			seed:  nat66.withSNAT(udpFlow[1:]),
			steps: []step{{in: replySent, ret: actShot, stat: "drop_snat_orphan"}},
		},
		{
			name:  "without nat66 on the network nothing leaves",
			seed:  noNAT66,
			steps: []step{unmasqueraded},
		},
		{
			name:  "without an IPv6 address on the uplink nothing leaves",
			seed:  noAddress,
			steps: []step{unmasqueraded},
		},
		// ICMPv6 errors.
		{
			name: "packet too big from the path reaches the container",
			seed: nat66.withSNAT(udpFlow),
			steps: []step{{ret: actUnspec, stat: "icmp_snat_reverse",
				in:  icmp6ErrorFrame(t, v6Router, v6Host, ptb, 0, 1280, v6Datagram(seen)),
				out: icmp6ErrorFrame(t, v6Router, v6Me, ptb, 0, 1280, v6Datagram(sent))}},
		},
		{
			name: "packet too big quoting 8 bytes of udp",
			seed: nat66.withSNAT(udpFlow),
			steps: []step{{ret: actUnspec, stat: "icmp_snat_reverse",
				in:  icmp6ErrorFrame(t, v6Router, v6Host, ptb, 0, 1280, v6Datagram(seen)[:48]),
				out: icmp6ErrorFrame(t, v6Router, v6Me, ptb, 0, 1280, v6Datagram(sent)[:48])}},
		},
		{
			name: "the container's port unreachable leaves as the uplink",
			seed: nat66.withSNAT(udpFlow),
			steps: []step{{egress: true, ret: actUnspec, stat: "icmp_snat",
				in:  icmp6ErrorFrame(t, v6Me, v6Server, destUnreach, 4, 0, v6Datagram(replyGot)),
				out: icmp6ErrorFrame(t, v6Host, v6Server, destUnreach, 4, 0, v6Datagram(replySent))}},
		},
		{
			name: "the host's packet too big about a reply keeps its source",
			seed: nat66.withSNAT(udpFlow),
			steps: []step{{egress: true, ret: actUnspec, stat: "icmp_snat",
				in:  icmp6ErrorFrame(t, v6Host, v6Server, ptb, 0, 1280, v6Datagram(replyGot)),
				out: icmp6ErrorFrame(t, v6Host, v6Server, ptb, 0, 1280, v6Datagram(replySent))}},
		},
		{
			name: "packet too big aimed at the container's own address",
			seed: nat66.withSNAT(udpFlow),
			steps: []step{{ret: actShot, stat: "drop_not_published",
				in: icmp6ErrorFrame(t, v6Router, v6Me, ptb, 0, 1280, v6Datagram(seen))}},
		},
		{
			name: "packet too big about a flow with only its reverse half",
			seed: nat66.withSNAT(udpFlow[1:]),
			steps: []step{{ret: actUnspec, stat: "pass_no_match",
				in: icmp6ErrorFrame(t, v6Router, v6Host, ptb, 0, 1280, v6Datagram(seen))}},
		},
		{
			name: "another container's error about the flow stays in",
			seed: nat66.withSNAT(udpFlow),
			steps: []step{{egress: true, ret: actShot, stat: "drop_unmasqueraded",
				in: icmp6ErrorFrame(t, v6Peer, v6Server, destUnreach, 4, 0, v6Datagram(replyGot))}},
		},
		{
			name: "packet too big quoting no flow of ours",
			seed: nat66,
			steps: []step{{ret: actUnspec, stat: "pass_no_match",
				in: icmp6ErrorFrame(t, v6Spoofer, v6Host, ptb, 0, 1280, v6Datagram(seen))}},
		},
	})
}

// TestNAT66ReassemblesAtTheServer: a datagram bigger than the MTU, masqueraded
// fragment by fragment, reassembles into one whose UDP checksum is right
// for the uplink's address.
func TestNAT66ReassemblesAtTheServer(t *testing.T) {
	o := loadObjects(t)
	seedFlow(t, o, nat66)
	big := bytes.Repeat([]byte("nat66"), 700)
	src, _, l4 := reassembled6(t, o.UplinkEgress, fragments6(udp6Frame(t, ap(v6Me, 40000), ap(v6Server, 53), big), 9, 1232))
	if src != v6Host {
		t.Errorf("reassembled datagram left from %v, want %v", src, v6Host)
	}
	if !bytes.Equal(l4[8:], big) {
		t.Errorf("reassembled payload differs")
	}
}

// nat66Uplink gives the fuzz world's uplink0 the host's IPv6 address and
// a route to the servers, for the bridge's route lookups.
func nat66Uplink(t *testing.T, w *fuzzWorld) {
	t.Helper()
	nextHop := netip.MustParseAddr("2001:db8::fe")
	var err error
	w.ns.do(func() {
		err = func() error {
			up, err := netlink.LinkByIndex(w.ns.uplinkIndex)
			if err != nil {
				return err
			}
			a, err := netlink.ParseAddr(v6Host.String() + "/64")
			if err != nil {
				return err
			}
			a.Flags = unix.IFA_F_NODAD
			if err := netlink.AddrAdd(up, a); err != nil {
				return fmt.Errorf("add %s to uplink0: %w", a, err)
			}
			if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: up.Attrs().Index, Family: netlink.FAMILY_V6,
				State: netlink.NUD_PERMANENT, IP: nextHop.AsSlice(), HardwareAddr: macPeer}); err != nil {
				return fmt.Errorf("add neighbour %s: %w", nextHop, err)
			}
			servers := netip.MustParsePrefix("2001:db8:100::/48")
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: prefixNet(servers), Gw: nextHop.AsSlice()}); err != nil {
				return fmt.Errorf("add route to %s: %w", servers, err)
			}
			return nil
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// TestNAT66FromTheBridge: with FIB redirect on, the bridge masquerades a
// container's IPv6 flow and sends it straight to the uplink; what the
// uplink's MTU cannot take goes to the stack untranslated (which tells
// the container), and a network without NAT66 gets nothing translated.
func TestNAT66FromTheBridge(t *testing.T) {
	w := newFuzzWorld(t)
	routeIPv6World(t, w)
	nat66Uplink(t, w)
	m := &w.uplink.TcUplinkMaps
	if err := maps.NewNetworks(m.Networks).Put(nat66Net); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewUplinks(m.Uplinks6).Put(uint32(w.ns.uplinkIndex), v6Host); err != nil {
		t.Fatal(err)
	}
	var resetErr error
	w.ns.do(func() { resetErr = w.reset(fuzzOptFIB) }) // the SNAT range: 40000-40999
	if resetErr != nil {
		t.Fatal(resetErr)
	}

	container, dns := ap(v6Me, 40000), ap(v6Server, 53)
	nat := ap(v6Host, 40000)
	replyGot := udp6Frame(t, dns, container, []byte("a"))
	replySent := udp6Frame(t, dns, nat, []byte("a"))
	steps := []struct {
		name string
		in   []byte
		ret  uint32
		out  []byte // nil: unchanged
		stat string
	}{
		{"udp", udp6Frame(t, container, dns, []byte("q")), fuzzActRedirect, udp6Frame(t, nat, dns, []byte("q")), "snat"},
		{"echo", echo6Frame(t, v6Me, v6Server, layers.ICMPv6TypeEchoRequest, 77, []byte("ping")), fuzzActRedirect,
			echo6Frame(t, v6Host, v6Server, layers.ICMPv6TypeEchoRequest, 77, []byte("ping")), "snat"},
		{"the container's port unreachable about the reply", icmp6ErrorFrame(t, v6Me, v6Server, 1, 4, 0, v6Datagram(replyGot)),
			fuzzActRedirect, icmp6ErrorFrame(t, v6Host, v6Server, 1, 4, 0, v6Datagram(replySent)), "icmp_snat"},
		{"too big for the uplink", udp6Frame(t, container, dns, pattern(1600)), fuzzActUnspec, nil, "fib_too_big"},
		{"to another container of the network", udp6Frame(t, container, ap(v6Peer, 53), []byte("q")), fuzzActUnspec, nil, "pass_no_match"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			ret, out, moved := runBridgeIngress(t, w, s.in)
			if ret != s.ret {
				t.Errorf("returned %#x, want %#x", ret, s.ret)
			}
			expectForwarded6(t, s.in, out, s.out)
			if moved[s.stat] != 1 {
				t.Errorf("counter %s moved by %d packets, want one (moved: %v)", s.stat, moved[s.stat], moved)
			}
		})
	}

	t.Run("a network without nat66", func(t *testing.T) {
		off := nat66Net
		off.NAT66 = false
		if err := maps.NewNetworks(m.Networks).Put(off); err != nil {
			t.Fatal(err)
		}
		in := udp6Frame(t, ap(v6Me, 40001), dns, []byte("q"))
		ret, out, moved := runBridgeIngress(t, w, in)
		if ret != fuzzActUnspec || !bytes.Equal(out[:len(in)], in) || moved["pass_no_match"] != 1 {
			t.Errorf("returned %#x, moved %v, output changed %v: want it left to the stack as it is", ret, moved, !bytes.Equal(out[:len(in)], in))
		}
	})
}
