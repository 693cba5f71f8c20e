package bpf_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// seedIPv6Ports adds IPv6 published ports to the fuzz world: the host's
// IPv6 addresses and bindings to network 1's endpoints, so that mutated
// IPv6 packets reach the DNAT and reverse NAT paths.
func seedIPv6Ports(tb testing.TB, w *fuzzWorld) {
	tb.Helper()
	m := &w.uplink.TcUplinkMaps
	for _, a := range v6Hosts {
		if err := maps.NewHostAddrs(m.Hostaddrs).Put(a, 2); err != nil {
			tb.Fatal(err)
		}
	}
	if err := maps.NewBindings(m.Bindings).PutBatch([]maps.Binding{tcpWeb6, udpApp6, tcpAny6}); err != nil {
		tb.Fatal(err)
	}
}

// fuzzSeedsIPv6Ports take the fuzzer down IPv6 published ports: TCP and
// UDP, behind extension headers, in fragments, and a flow's reply.
func fuzzSeedsIPv6Ports(tb testing.TB) []fuzzSeed {
	one := func(name string, frames ...[]byte) fuzzSeed { return fuzzSeed{name: name, frames: frames} }
	c6 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(v6Client, port) }
	big := make([]byte, 1600)
	for i := range big {
		big[i] = byte(i)
	}
	return []fuzzSeed{
		one("ipv6 dnat tcp syn", tcp6Frame(tb, c6(41000), tcpWeb6.Host, syn)),
		one("ipv6 dnat udp", udp6Frame(tb, c6(41001), udpApp6.Host, []byte("v6"))),
		one("ipv6 dnat wildcard", tcp6Frame(tb, c6(41002), ap(v6Host2, 80), syn)),
		one("ipv6 dnat tcp behind hop-by-hop and destination options",
			withExt(tcp6Frame(tb, c6(41003), tcpWeb6.Host, syn), hopByHop, destOpts)),
		one("ipv6 dnat udp behind a finished routing header", withExt(udp6Frame(tb, c6(41004), udpApp6.Host, []byte("v6")), routingDone)),
		one("ipv6 dnat udp in fragments", fragments6(udp6Frame(tb, c6(41005), udpApp6.Host, big), 0x6006, 1232)...),
		one("ipv6 dnat tcp then its syn-ack",
			tcp6Frame(tb, c6(41006), tcpWeb6.Host, syn), tcp6Frame(tb, tcpWeb6.Backend, c6(41006), syn|ack)),
	}
}

// TestFuzzSeedsIPv6PortsTranslate: each IPv6 published-port seed is
// translated by the uplink, so mutating it explores around IPv6 DNAT
// (and reverse NAT for the seed with a reply).
func TestFuzzSeedsIPv6PortsTranslate(t *testing.T) {
	w := newFuzzWorld(t)
	dnat, rnat := slices.Index(maps.StatNames, "dnat"), slices.Index(maps.StatNames, "rnat")
	for _, s := range fuzzSeedsIPv6Ports(t) {
		t.Run(s.name, func(t *testing.T) {
			var translated, replied bool
			for _, r := range w.exercise(t, s.opts, fuzzFrames(fuzzEncode(s.frames...))) {
				translated = translated || r.prog.name == "uplink_ingress" && r.delta[dnat] > 0
				replied = replied || r.prog.name == "uplink_egress" && r.delta[rnat] > 0
			}
			if !translated {
				t.Error("no run of uplink_ingress counted dnat")
			}
			if strings.HasSuffix(s.name, "then its syn-ack") && !replied {
				t.Error("no run of uplink_egress counted rnat for the reply")
			}
		})
	}
}

// TestFuzzSeedsNAT66Translate: each NAT66 seed is masqueraded on the
// uplink's egress and its answer (a reply, or an error about it) handed
// back on ingress, so mutating them explores around NAT66 both ways.
func TestFuzzSeedsNAT66Translate(t *testing.T) {
	w := newFuzzWorld(t)
	snat := slices.Index(maps.StatNames, "snat")
	back := []int{slices.Index(maps.StatNames, "snat_reverse"), slices.Index(maps.StatNames, "icmp_snat_reverse")}
	var n int
	for _, s := range fuzzSeedsIPv6(t) {
		if !strings.Contains(s.name, "nat66") {
			continue
		}
		n++
		t.Run(s.name, func(t *testing.T) {
			var out, in bool
			for _, r := range w.exercise(t, s.opts, fuzzFrames(fuzzEncode(s.frames...))) {
				out = out || r.prog.name == "uplink_egress" && r.delta[snat] > 0
				in = in || r.prog.name == "uplink_ingress" && (r.delta[back[0]] > 0 || r.delta[back[1]] > 0)
			}
			if !out || !in {
				t.Errorf("masqueraded on egress: %v, handed back on ingress: %v; want both", out, in)
			}
		})
	}
	if n == 0 {
		t.Fatal("no NAT66 seeds")
	}
}
