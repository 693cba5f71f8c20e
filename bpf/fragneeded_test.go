package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// TestHairpinFragNeeded: a DF datagram a container hairpins to a published
// port of a network whose route has a smaller MTU (1400 here) is dropped
// and counted drop_frag_needed, and bridge_ingress sends the container an
// ICMP "fragmentation needed" naming 1400, back out of the bridge: from
// the address it dialled, quoting the datagram as it was sent (addresses
// and ports before translation), checksums right, MACs swapped. Under
// CHECKSUM_COMPLETE (never so from a bridge port), and below Linux 5.12,
// whose FIB lookup reports no MTU, it is only dropped.
func TestHairpinFragNeeded(t *testing.T) {
	w := newFuzzWorld(t)
	answers := kernelAtLeast(t, [2]int{5, 12})
	sender := ap(backend2, 42001)
	in := fzBigUDP(t, sender, udpApp.Host, 1400)
	runs, err := w.run(0, [][]byte{in})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, r := range runs {
		if r.prog.name != "bridge_ingress" {
			continue
		}
		if r.err != nil {
			t.Fatalf("%s: %v", r.mode.name, r.err)
		}
		if r.delta[slices.Index(maps.StatNames, "drop_frag_needed")] != 1 {
			t.Errorf("%s: counters moved by %s, want drop_frag_needed", r.mode.name, fuzzDeltas(r.delta))
		}
		checked++
		if r.mode.flags != 0 || !answers { // CHECKSUM_COMPLETE, or no MTU to name
			if r.ret != fuzzActShot {
				t.Errorf("%s: returned %d, want the drop", r.mode.name, r.ret)
			}
			continue
		}
		if r.ret != fuzzActRedirect {
			t.Fatalf("%s: returned %d, want the ICMP error redirected", r.mode.name, r.ret)
		}
		out := r.out
		if msg := fuzzCheckFragNeeded(out); msg != "" {
			t.Fatalf("%s: %s\n%s", r.mode.name, msg, fuzzHex(out))
		}
		ip, icmp := out[fuzzEthLen:], out[fuzzEthLen+20:]
		quoted := icmp[8:]
		addr := func(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b)) }
		port := func(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
		if !bytes.Equal(out[:6], in[6:12]) || !bytes.Equal(out[6:12], in[:6]) {
			t.Errorf("MACs %x -> %x, want the datagram's swapped", out[6:12], out[:6])
		}
		if got := addr(ip[12:16]); got != udpApp.Host.Addr() {
			t.Errorf("ICMP from %s, want the address dialled, %s", got, udpApp.Host.Addr())
		}
		if got := addr(ip[16:20]); got != sender.Addr() {
			t.Errorf("ICMP to %s, want the sender %s", got, sender.Addr())
		}
		if mtu := port(icmp[6:8]); mtu != 1400 {
			t.Errorf("next-hop MTU %d, want 1400", mtu)
		}
		if !bytes.Equal(quoted[:12], in[fuzzEthLen:fuzzEthLen+12]) {
			t.Errorf("quoted header starts %x, want the datagram's %x", quoted[:12], in[fuzzEthLen:fuzzEthLen+12])
		}
		if fuzzOnesSum(quoted[:20]) != 0xffff {
			t.Error("quoted header's checksum is wrong")
		}
		qs, qd := netip.AddrPortFrom(addr(quoted[12:16]), port(quoted[20:22])), netip.AddrPortFrom(addr(quoted[16:20]), port(quoted[22:24]))
		if qs != sender || qd != udpApp.Host {
			t.Errorf("quotes %s -> %s, want the datagram as sent, %s -> %s", qs, qd, sender, udpApp.Host)
		}
	}
	if checked == 0 {
		t.Fatal("no bridge_ingress run")
	}
}

// TestHairpinTooBig6: IPv6's TestHairpinFragNeeded. An IPv6 datagram a
// container hairpins to a published port of a network whose route has a
// smaller MTU (bridge0's 1400) is dropped, counted drop_frag_needed, and
// answered with an ICMPv6 Packet Too Big naming 1400 (every such datagram:
// IPv6 has no DF bit, routers never fragment), from the address dialled,
// to the sender, quoting the datagram as it was sent, its checksum right
// over the pseudo-header, back out of the bridge with the MACs swapped.
// A datagram that fits is forwarded, translated, as before; one behind
// extension headers, or a fragment, is dropped unanswered.
func TestHairpinTooBig6(t *testing.T) {
	w := newFuzzWorld(t)
	routeIPv6World(t, w)
	answers := kernelAtLeast(t, [2]int{5, 12})
	m := &w.uplink.TcUplinkMaps
	if err := maps.NewHostAddrs(m.Hostaddrs).Put(v6Host, 2); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewBindings(m.Bindings).PutBatch([]maps.Binding{udpApp6}); err != nil {
		t.Fatal(err)
	}
	var resetErr error
	w.ns.do(func() { resetErr = w.reset(0) })
	if resetErr != nil {
		t.Fatal(resetErr)
	}
	sender := ap(v6Me2, 40500)
	// The flow's first datagram fits and opens it; the next is too big.
	if ret, _, moved := runBridgeIngress(t, w, udp6Frame(t, sender, udpApp6.Host, []byte("fits"))); ret != fuzzActRedirect || moved["hairpin"] != 1 {
		t.Fatalf("a datagram that fits: returned %d, counters moved %v; want it hairpinned", ret, moved)
	}
	big := bytes.Repeat([]byte("too big!"), 190) // 1568 bytes of IPv6
	// What the writer does not quote whole (a header chain, a fragment)
	// is only dropped: nothing is answered for it.
	for name, in := range map[string][]byte{
		"behind a hop-by-hop header": withExt(udp6Frame(t, sender, udpApp6.Host, big), hopByHop),
		"a first fragment too big":   fragments6(udp6Frame(t, sender, udpApp6.Host, append(big, big...)), 0x7007, 1480)[0],
	} {
		if ret, _, moved := runBridgeIngress(t, w, in); ret != fuzzActShot || moved["drop_frag_needed"] != 1 {
			t.Errorf("%s: returned %d, counters moved %v; want it dropped as drop_frag_needed, unanswered", name, ret, moved)
		}
	}
	in := udp6Frame(t, sender, udpApp6.Host, big)
	ret, out, moved := runBridgeIngress(t, w, in)
	if moved["drop_frag_needed"] != 1 {
		t.Errorf("counters moved %v, want drop_frag_needed", moved)
	}
	if !answers {
		if ret != fuzzActShot {
			t.Errorf("returned %d, want the drop (below Linux 5.12 the FIB lookup names no MTU)", ret)
		}
		return
	}
	if ret != fuzzActRedirect {
		t.Fatalf("returned %d, want the Packet Too Big redirected", ret)
	}
	if msg := fuzzCheckFragNeeded(out); msg != "" {
		t.Fatalf("%s\n%s", msg, fuzzHex(out))
	}
	verifyChecksums6(t, out[fuzzEthLen:])
	ip, icmp := out[fuzzEthLen:], out[fuzzEthLen+40:]
	quoted := icmp[8:]
	addr := func(b []byte) netip.Addr { return netip.AddrFrom16([16]byte(b)) }
	if !bytes.Equal(out[:6], in[6:12]) || !bytes.Equal(out[6:12], in[:6]) {
		t.Errorf("MACs %x -> %x, want the datagram's swapped", out[6:12], out[:6])
	}
	if got := addr(ip[8:24]); got != udpApp6.Host.Addr() {
		t.Errorf("Packet Too Big from %s, want the address dialled, %s", got, udpApp6.Host.Addr())
	}
	if got := addr(ip[24:40]); got != sender.Addr() {
		t.Errorf("Packet Too Big to %s, want the sender %s", got, sender.Addr())
	}
	if mtu := binary.BigEndian.Uint32(icmp[4:8]); mtu != 1400 {
		t.Errorf("MTU %d, want 1400", mtu)
	}
	// As sent: header and ports; the UDP checksum is the translated one.
	if want := in[fuzzEthLen : fuzzEthLen+40+6]; !bytes.Equal(quoted, append(bytes.Clone(want), quoted[46:]...)) {
		t.Errorf("quotes %s", describeDiff(want, quoted[:46]))
	}
}
