package bpf_test

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// echoDatagram is an IPv4 ICMP echo (request or reply) with identifier id.
func echoDatagram(t testing.TB, src, dst netip.Addr, tc layers.ICMPv4TypeCode, id uint16) []byte {
	return serialize(t, ipv4(src, dst, layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: tc, Id: id, Seq: 7}, gopacket.Payload("ping"))
}

// TestICMPErrorsQuotingEchoes: an error about a masqueraded ping (a host
// or net unreachable, traceroute -I's time exceeded, quoting 8 bytes or
// the whole echo) reaches the container quoting the echo as it sent it,
// identifier and address restored, every checksum right. The host's error
// about an echo reply it cannot forward leaves quoting what the server
// sent. An error about a ping of no flow, an error about an error, and one
// aimed at the container's own address are not translated.
func TestICMPErrorsQuotingEchoes(t *testing.T) {
	o := loadObjects(t)
	const containerID, natID = 0x4d2, 50000
	router := netip.MustParseAddr("198.51.100.1")
	hostUnreachable := layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost)
	pinging := masquerading.with(seed{hostAddrs: []netip.Addr{hostIP}}).
		withSNAT(snatFlow(icmpProto, ap(backend, containerID), ap(server, 0), ap(hostIP, natID)))

	pingSent := echoDatagram(t, backend, server, echoRequest, containerID)
	pingSeen := echoDatagram(t, hostIP, server, echoRequest, natID)
	replySent := echoDatagram(t, server, hostIP, echoReply, natID)
	replyGot := echoDatagram(t, server, backend, echoReply, containerID)

	runFlows(t, o, []flowCase{
		{
			name: "host unreachable about the container's ping",
			seed: pinging,
			steps: []step{{ret: actUnspec, stat: "icmp_snat_reverse",
				in:  icmpErrorFrame(t, router, hostIP, hostUnreachable, 0, pingSeen, 0),
				out: icmpErrorFrame(t, router, backend, hostUnreachable, 0, pingSent, 0)}},
		},
		{
			name: "time exceeded quoting 8 bytes of the ping",
			seed: pinging,
			steps: []step{{ret: actUnspec, stat: "icmp_snat_reverse",
				in:  icmpErrorFrame(t, router, hostIP, ttlExceeded, 0, pingSeen, 28),
				out: icmpErrorFrame(t, router, backend, ttlExceeded, 0, pingSent, 28)}},
		},
		{
			name: "the host's frag needed about an echo reply keeps its source",
			seed: pinging,
			steps: []step{{egress: true, ret: actUnspec, stat: "icmp_snat",
				in:  icmpErrorFrame(t, hostIP, server, fragNeeded, 1400, replyGot, 0),
				out: icmpErrorFrame(t, hostIP, server, fragNeeded, 1400, replySent, 0)}},
		},
		{
			name: "an error about a ping of no flow",
			seed: pinging,
			steps: []step{{ret: actUnspec, stat: "pass_no_match",
				in: icmpErrorFrame(t, router, hostIP, hostUnreachable, 0, echoDatagram(t, hostIP, server, echoRequest, natID+1), 0)}},
		},
		{
			name: "an error quoting 6 bytes of the ping",
			seed: pinging,
			steps: []step{{ret: actUnspec, stat: "pass_malformed",
				in: icmpErrorFrame(t, router, hostIP, hostUnreachable, 0, pingSeen, 26)}},
		},
		{
			name: "an error about an error",
			seed: pinging,
			steps: []step{{ret: actUnspec, stat: "pass_no_match",
				in: icmpErrorFrame(t, router, hostIP, hostUnreachable, 0,
					icmpErrorFrame(t, hostIP, server, portUnreachable, 0, pingSeen, 28)[14:], 0)}},
		},
		{
			name: "an error about the ping aimed at the container's own address",
			seed: pinging,
			steps: []step{{ret: actShot, stat: "drop_not_published",
				in: icmpErrorFrame(t, router, backend, hostUnreachable, 0, pingSeen, 0)}},
		},
	})
}

// TestICMPv6ErrorsQuotingEchoes is TestICMPErrorsQuotingEchoes for NAT66,
// whose quoted echo's checksum covers the pseudo header: it follows the
// address as well as the identifier.
func TestICMPv6ErrorsQuotingEchoes(t *testing.T) {
	o := loadObjects(t)
	const containerID, natID = 0x5151, 50000
	const echoReq, echoRep = layers.ICMPv6TypeEchoRequest, layers.ICMPv6TypeEchoReply
	const destUnreach, ptb, timeExceeded = 1, 2, 3
	pinging := nat66.withSNAT(snatFlow(protoICMPv6, ap(v6Me, containerID), ap(v6Server, 0), ap(v6Host, natID)))

	payload := []byte("ping6")
	pingSent := v6Datagram(echo6Frame(t, v6Me, v6Server, echoReq, containerID, payload))
	pingSeen := v6Datagram(echo6Frame(t, v6Host, v6Server, echoReq, natID, payload))
	replySent := v6Datagram(echo6Frame(t, v6Server, v6Host, echoRep, natID, payload))
	replyGot := v6Datagram(echo6Frame(t, v6Server, v6Me, echoRep, containerID, payload))

	runFlows(t, o, []flowCase{
		{
			name: "address unreachable about the container's ping",
			seed: pinging,
			steps: []step{{ret: actUnspec, stat: "icmp_snat_reverse",
				in:  icmp6ErrorFrame(t, v6Router, v6Host, destUnreach, 3, 0, pingSeen),
				out: icmp6ErrorFrame(t, v6Router, v6Me, destUnreach, 3, 0, pingSent)}},
		},
		{
			name: "time exceeded quoting 8 bytes of the ping",
			seed: pinging,
			steps: []step{{ret: actUnspec, stat: "icmp_snat_reverse",
				in:  icmp6ErrorFrame(t, v6Router, v6Host, timeExceeded, 0, 0, pingSeen[:48]),
				out: icmp6ErrorFrame(t, v6Router, v6Me, timeExceeded, 0, 0, pingSent[:48])}},
		},
		{
			name: "the host's packet too big about an echo reply keeps its source",
			seed: pinging,
			steps: []step{{egress: true, ret: actUnspec, stat: "icmp_snat",
				in:  icmp6ErrorFrame(t, v6Host, v6Server, ptb, 0, 1280, replyGot),
				out: icmp6ErrorFrame(t, v6Host, v6Server, ptb, 0, 1280, replySent)}},
		},
		{
			name: "an error about a ping of no flow",
			seed: pinging,
			steps: []step{{ret: actUnspec, stat: "pass_no_match",
				in: icmp6ErrorFrame(t, v6Router, v6Host, destUnreach, 3, 0,
					v6Datagram(echo6Frame(t, v6Host, v6Server, echoReq, natID+1, payload)))}},
		},
		{
			name: "an error about the ping aimed at the container's own address",
			seed: pinging,
			steps: []step{{ret: actShot, stat: "drop_not_published",
				in: icmp6ErrorFrame(t, v6Router, v6Me, destUnreach, 3, 0, pingSeen)}},
		},
	})
}
