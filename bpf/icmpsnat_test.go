package bpf_test

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/pontoon-net/pontoon/maps"
)

// TestICMPErrorsAboutMasqueradedReplies: an ICMP error about a reply of a
// masqueraded flow (quoting server -> container:port) leaves an uplink
// quoting the address and port the server knows. The container's own
// error leaves as the uplink address; the host's, sent when it cannot
// forward the reply (a bridge with a smaller MTU), keeps the host's
// source. A stranger's error is not ours to change.
func TestICMPErrorsAboutMasqueradedReplies(t *testing.T) {
	o := loadObjects(t)
	container, srv, nat := ap(backend, 40000), ap(server, 53), ap(hostIP, 40000)
	seed := masquerading.with(seed{hostAddrs: []netip.Addr{hostIP}}).withSNAT([]snatEntry{
		{Proto: maps.UDP, Src: container, Dst: srv, Nat: nat, Flags: maps.SNATForward},
		{Proto: maps.UDP, Src: srv, Dst: nat, Nat: container, Flags: maps.SNATReverse},
	})
	asSent, asTranslated := udpDatagram(t, srv, container), udpDatagram(t, srv, nat)
	stranger := netip.MustParseAddr("198.51.100.9")

	runFlows(t, o, []flowCase{
		{
			name: "the container's port unreachable",
			seed: seed,
			steps: []step{{egress: true, ret: actUnspec, stat: "icmp_snat",
				in:  icmpErrorFrame(t, backend, server, portUnreachable, 0, asSent, 0),
				out: icmpErrorFrame(t, hostIP, server, portUnreachable, 0, asTranslated, 0)}},
		},
		{
			name: "the host's frag needed while forwarding the reply",
			seed: seed,
			steps: []step{{egress: true, ret: actUnspec, stat: "icmp_snat",
				in:  icmpErrorFrame(t, hostIP, server, fragNeeded, 1400, asSent, 0),
				out: icmpErrorFrame(t, hostIP, server, fragNeeded, 1400, asTranslated, 0)}},
		},
		{
			name: "another container's error about the flow",
			seed: seed,
			steps: []step{{egress: true, ret: actShot, stat: "drop_unmasqueraded",
				in: icmpErrorFrame(t, backend.Next(), server, portUnreachable, 0, asSent, 0)}},
		},
		{
			name: "a stranger's error",
			seed: seed,
			steps: []step{{egress: true, ret: actUnspec, stat: "pass_no_match",
				in: icmpErrorFrame(t, stranger, server, fragNeeded, 1400, asSent, 0)}},
		},
	})
}

// TestMasqueradeEchoIDZero: a container's echo with identifier 0 leaves
// with another, so that the reply's key cannot match the server's own
// echo requests (their identifier sits where a reply's port 0 does).
func TestMasqueradeEchoIDZero(t *testing.T) {
	o := loadObjects(t)
	ping := fzEcho
	req, rep := uint8(layers.ICMPv4TypeEchoRequest), uint8(layers.ICMPv4TypeEchoReply)
	onePort := masquerading
	onePort.config = oneSNATPort
	runFlows(t, o, []flowCase{{
		name: "identifier 0",
		seed: onePort,
		steps: []step{
			snatStep(ping(t, backend, server, req, 0), ping(t, hostIP, server, req, 50000)),
			snatReverseStep(ping(t, server, hostIP, rep, 50000), ping(t, server, backend, rep, 0)),
			{in: ping(t, server, hostIP, req, 0), ret: actUnspec, stat: "pass_no_match"},
		},
		snat: snatFlow(maps.Proto(1), ap(backend, 0), ap(server, 0), ap(hostIP, 50000)),
	}})
}
