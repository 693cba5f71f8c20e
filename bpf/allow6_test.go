package bpf_test

import (
	"net/netip"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// TestAllowFromIPv6: --allow-from on a dual-stack binding (one id, an IPv4
// and an IPv6 key) with a list mixing both families. Each family's
// clients are held to their own family's prefixes: an IPv4 prefix never
// admits an IPv6 client whose first bits it matches. tc decides for
// IPv6; XDP leaves IPv6 to tc untouched and still decides IPv4.
func TestAllowFromIPv6(t *testing.T) {
	o := loadObjects(t)
	web4, web6 := tcpWeb, tcpWeb6
	web6.ID = web4.ID
	web4.Allowlist, web6.Allowlist = true, true
	hosts := append([]netip.Addr{hostIP}, v6Hosts...)
	bindings := []maps.Binding{web4, web6}
	mixed := map[uint32][]netip.Prefix{web4.ID: {
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("2001:db8:100::/48"),
		netip.MustParsePrefix("2001:db8:300::5/128"),
	}}
	listed := v6ClientPort // 2001:db8:100::7
	listedHost := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:300::5"), 40001)
	unlisted := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:200::7"), 40000)
	unlisted4 := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.50"), 40000)
	synCT := func(client netip.AddrPort, b maps.Binding) []maps.CTEntry {
		return []maps.CTEntry{{Proto: maps.TCP, Backend: b.Backend, Client: client, Dialled: b.Host, BindingID: b.ID, TCPFlags: maps.CTTCPSyn}}
	}
	established := maps.CTEntry{Proto: maps.TCP, Backend: web6.Backend, Client: unlisted, Dialled: web6.Host, BindingID: web6.ID,
		TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished}

	runTable(t, o, []datapathCase{
		{name: "an IPv6 source in a listed prefix gets in", seed: seed{bindings: bindings, hostAddrs: hosts, allow: mixed},
			in: tcp6Frame(t, listed, web6.Host, syn), ret: actUnspec, out: tcp6Frame(t, listed, web6.Backend, syn), stat: "dnat", ct: synCT(listed, web6)},
		{name: "an IPv6 source listed as an address gets in", seed: seed{bindings: bindings, hostAddrs: hosts, allow: mixed},
			in: tcp6Frame(t, listedHost, web6.Host, syn), ret: actUnspec, out: tcp6Frame(t, listedHost, web6.Backend, syn), stat: "dnat", ct: synCT(listedHost, web6)},
		{name: "an IPv6 source outside the list is dropped", seed: seed{bindings: bindings, hostAddrs: hosts, allow: mixed},
			in: tcp6Frame(t, unlisted, web6.Host, syn), ret: tcActShot, stat: "drop_not_allowed"},
		{name: "an IPv6 source outside the list is dropped on an established flow too",
			seed: seed{bindings: bindings, hostAddrs: hosts, allow: mixed, ct: []maps.CTEntry{established}},
			in:   tcp6Frame(t, unlisted, web6.Host, ack), ret: tcActShot, stat: "drop_not_allowed"},
		{name: "an IPv4 source in the mixed list gets in", seed: seed{bindings: bindings, hostAddrs: hosts, allow: mixed},
			in: tcpFrame(t, clientPort, web4.Host, syn), ret: actUnspec, out: tcpFrame(t, clientPort, web4.Backend, syn), stat: "dnat", ct: synCT(clientPort, web4)},
		{name: "an IPv4 source outside the mixed list is dropped", seed: seed{bindings: bindings, hostAddrs: hosts, allow: mixed},
			in: tcpFrame(t, unlisted4, web4.Host, syn), ret: tcActShot, stat: "drop_not_allowed"},
		{name: "an IPv4 prefix holding an IPv6 source's first bits does not let it in",
			seed: seed{bindings: bindings, hostAddrs: hosts, allow: map[uint32][]netip.Prefix{web4.ID: {netip.MustParsePrefix("32.1.13.184/29")}}}, // 2001:db8::/29
			in:   tcp6Frame(t, listed, web6.Host, syn), ret: tcActShot, stat: "drop_not_allowed"},
		{name: "an IPv6 prefix holding an IPv4 source's bits does not let it in",
			seed: seed{bindings: bindings, hostAddrs: hosts, allow: map[uint32][]netip.Prefix{web4.ID: {netip.MustParsePrefix("c633:6400::/24")}}}, // 198.51.100.0/24
			in:   tcpFrame(t, clientPort, web4.Host, syn), ret: tcActShot, stat: "drop_not_allowed"},
		{name: "::/0 lets any IPv6 source in",
			seed: seed{bindings: bindings, hostAddrs: hosts, allow: map[uint32][]netip.Prefix{web4.ID: {netip.MustParsePrefix("::/0")}}},
			in:   tcp6Frame(t, unlisted, web6.Host, syn), ret: actUnspec, out: tcp6Frame(t, unlisted, web6.Backend, syn), stat: "dnat", ct: synCT(unlisted, web6)},
		{name: "::/0 lets no IPv4 source in",
			seed: seed{bindings: bindings, hostAddrs: hosts, allow: map[uint32][]netip.Prefix{web4.ID: {netip.MustParsePrefix("::/0")}}},
			in:   tcpFrame(t, clientPort, web4.Host, syn), ret: tcActShot, stat: "drop_not_allowed"},
		{name: "another binding's IPv6 list does not let a source in",
			seed: seed{bindings: bindings, hostAddrs: hosts, allow: map[uint32][]netip.Prefix{99: {netip.MustParsePrefix("::/0")}}},
			in:   tcp6Frame(t, listed, web6.Host, syn), ret: tcActShot, stat: "drop_not_allowed"},
	})
}
