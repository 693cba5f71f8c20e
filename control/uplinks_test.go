package control

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestWantUplinks: by default every way out of the host is an uplink;
// loopback, Pontoon's own interfaces and ports of bridges and bonds are
// not. --uplink names them exactly, still never Pontoon's own.
func TestWantUplinks(t *testing.T) {
	attrs := func(index int, name string) netlink.LinkAttrs {
		la := netlink.NewLinkAttrs()
		la.Index, la.Name, la.Flags = index, name, net.FlagUp
		return la
	}
	slave := func(la netlink.LinkAttrs, master int) netlink.LinkAttrs { la.MasterIndex = master; return la }
	lo := attrs(1, "lo")
	lo.Flags |= net.FlagLoopback
	labelled := attrs(12, "renamed-br")
	labelled.Alias = bridgeAlias + "gone"
	links := []netlink.Link{
		&netlink.Device{LinkAttrs: lo},
		&netlink.Veth{LinkAttrs: attrs(2, "eth0")},
		&netlink.Dummy{LinkAttrs: attrs(3, "dummy0")},
		&netlink.Iptun{LinkAttrs: attrs(4, "ipip0")},
		&netlink.Wireguard{LinkAttrs: attrs(5, "wg0")},
		&netlink.Tuntap{LinkAttrs: attrs(6, "tun0")},
		&netlink.Bridge{LinkAttrs: attrs(7, "docker0")},
		&netlink.Veth{LinkAttrs: slave(attrs(8, "vethd0"), 7)},
		&netlink.Bond{LinkAttrs: attrs(9, "bond0")},
		&netlink.Device{LinkAttrs: slave(attrs(10, "eth1"), 9)},
		&netlink.Bridge{LinkAttrs: attrs(11, "pt-net")},
		&netlink.Bridge{LinkAttrs: labelled},
		&netlink.Veth{LinkAttrs: slave(attrs(13, "ptv0123456789"), 11)},
		&netlink.Vrf{LinkAttrs: attrs(14, "vrf-blue")},
		&netlink.Veth{LinkAttrs: slave(attrs(15, "eth2"), 14)},
		&netlink.Bridge{LinkAttrs: attrs(16, "adopted")},
	}
	a := &Agent{st: &state{
		networks: map[string]*Network{
			"net":   {Name: "net", Bridge: "pt-net"},
			"other": {Name: "other", Bridge: "adopted", Adopted: true},
		},
		endpoints: map[string]*Endpoint{"c1": {Name: "c1", HostIf: "ptv0123456789"}},
	}}
	names := func(m map[int]string) []string {
		var out []string
		for idx, name := range m {
			if links[idx-1].Attrs().Name != name {
				t.Errorf("index %d named %s, want %s", idx, name, links[idx-1].Attrs().Name)
			}
			out = append(out, name)
		}
		slices.Sort(out)
		return out
	}

	got := names(a.wantUplinks(links))
	want := []string{"bond0", "docker0", "dummy0", "eth0", "eth2", "ipip0", "tun0", "vrf-blue", "wg0"}
	if !slices.Equal(got, want) {
		t.Errorf("default uplinks %v, want %v", got, want)
	}

	a.cfg.Uplinks = []string{"eth1", "wg0", "pt-net", "missing"}
	got = names(a.wantUplinks(links))
	if want := []string{"eth1", "wg0"}; !slices.Equal(got, want) {
		t.Errorf("configured uplinks %v, want %v", got, want)
	}
}

// ifAddr is an interface address as a dump lists it, scope universe.
func ifAddr(s string, flags int) netlink.Addr {
	p := netip.MustParsePrefix(s)
	return netlink.Addr{IPNet: ipNet(p.Addr(), p.Bits()), Flags: flags, Scope: unix.RT_SCOPE_UNIVERSE}
}

func TestMasqueradeAddr(t *testing.T) {
	addr := ifAddr
	for _, c := range []struct {
		name  string
		addrs []netlink.Addr
		want  string
	}{
		{"none", nil, ""},
		{"first primary", []netlink.Addr{addr("192.0.2.1/24", 0), addr("198.51.100.1/24", 0)}, "192.0.2.1"},
		{"primary over secondary", []netlink.Addr{addr("192.0.2.9/24", unix.IFA_F_SECONDARY), addr("198.51.100.1/24", 0)}, "198.51.100.1"},
		{"secondary when alone", []netlink.Addr{addr("192.0.2.9/24", unix.IFA_F_SECONDARY)}, "192.0.2.9"},
		{"link-local and loopback never", []netlink.Addr{addr("169.254.1.1/16", 0), addr("127.0.0.2/8", 0)}, ""},
		{"private is fine", []netlink.Addr{addr("10.0.0.5/8", 0)}, "10.0.0.5"},
	} {
		got := masqueradeAddr(c.addrs)
		if (c.want == "" && got.IsValid()) || (c.want != "" && got != netip.MustParseAddr(c.want)) {
			t.Errorf("%s: got %v, want %q", c.name, got, c.want)
		}
	}
}

// TestMasqueradeAddr6: NAT66 leaves with a usable address: stable global,
// then temporary global, then stable unique local, then temporary unique
// local. The address in use stays while it is on the interface and not
// tentative or failed, even deprecated or when a better one appears.
func TestMasqueradeAddr6(t *testing.T) {
	addr := ifAddr
	scoped := func(ad netlink.Addr, scope int) netlink.Addr { ad.Scope = scope; return ad }
	global := addr("2001:db8::1/64", 0)
	global2 := addr("2001:db8:1::1/64", 0)
	ula := addr("fd00:1::1/64", 0)
	temp := addr("2001:db8::abcd/64", unix.IFA_F_TEMPORARY)
	ulaTemp := addr("fd00:1::abcd/64", unix.IFA_F_TEMPORARY)
	for _, c := range []struct {
		name  string
		addrs []netlink.Addr
		cur   string
		want  string
	}{
		{"none", nil, "", ""},
		{"IPv4 only", []netlink.Addr{addr("192.0.2.1/24", 0)}, "", ""},
		{"link-local never", []netlink.Addr{addr("fe80::1/64", 0)}, "", ""},
		{"loopback never", []netlink.Addr{scoped(addr("::1/128", 0), unix.RT_SCOPE_HOST)}, "", ""},
		{"scope other than universe never", []netlink.Addr{scoped(addr("2001:db8::1/64", 0), unix.RT_SCOPE_SITE)}, "", ""},
		{"IPv4-mapped never", []netlink.Addr{{IPNet: ipNet(netip.MustParseAddr("::ffff:192.0.2.1"), 128)}}, "", ""},
		{"global", []netlink.Addr{addr("fe80::1/64", 0), global}, "", "2001:db8::1"},
		{"first of equals", []netlink.Addr{global, global2}, "", "2001:db8::1"},
		{"tentative skipped", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_TENTATIVE), global2}, "", "2001:db8:1::1"},
		{"dad failed skipped", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_DADFAILED), global2}, "", "2001:db8:1::1"},
		{"deprecated skipped", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_DEPRECATED), global2}, "", "2001:db8:1::1"},
		{"deprecated alone: none", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_DEPRECATED)}, "", ""},
		{"stable over temporary", []netlink.Addr{temp, ula, global}, "", "2001:db8::1"},
		{"global over unique local", []netlink.Addr{ula, global}, "", "2001:db8::1"},
		{"temporary global over stable unique local", []netlink.Addr{ula, temp}, "", "2001:db8::abcd"},
		{"stable unique local over temporary unique local", []netlink.Addr{ulaTemp, ula}, "", "fd00:1::1"},
		{"full order", []netlink.Addr{ulaTemp, ula, temp, global}, "", "2001:db8::1"},
		{"temporary unique local when alone", []netlink.Addr{ulaTemp}, "", "fd00:1::abcd"},
		{"deprecated not picked fresh over a worse one", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_DEPRECATED), ulaTemp}, "", "fd00:1::abcd"},
		{"temporary when alone", []netlink.Addr{temp}, "", "2001:db8::abcd"},
		{"unique local when alone", []netlink.Addr{ula}, "", "fd00:1::1"},
		{"current kept over a better one", []netlink.Addr{global, ula}, "fd00:1::1", "fd00:1::1"},
		{"current kept over an equal earlier one", []netlink.Addr{global, global2}, "2001:db8:1::1", "2001:db8:1::1"},
		{"current temporary kept", []netlink.Addr{global, temp}, "2001:db8::abcd", "2001:db8::abcd"},
		{"current gone: best of the rest", []netlink.Addr{ula, global2}, "2001:db8::1", "2001:db8:1::1"},
		{"current deprecated kept", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_DEPRECATED)}, "2001:db8::1", "2001:db8::1"},
		{"current deprecated kept over a usable one", []netlink.Addr{global2, addr("2001:db8::1/64", unix.IFA_F_DEPRECATED)}, "2001:db8::1", "2001:db8::1"},
		{"current deprecated temporary kept", []netlink.Addr{global, addr("2001:db8::abcd/64", unix.IFA_F_TEMPORARY|unix.IFA_F_DEPRECATED)}, "2001:db8::abcd", "2001:db8::abcd"},
		{"current dad failed: moves", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_DADFAILED), ula}, "2001:db8::1", "fd00:1::1"},
		{"current deprecated and tentative: moves", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_DEPRECATED|unix.IFA_F_TENTATIVE), ula}, "2001:db8::1", "fd00:1::1"},
		{"current tentative again: moves", []netlink.Addr{addr("2001:db8::1/64", unix.IFA_F_TENTATIVE), global2}, "2001:db8::1", "2001:db8:1::1"},
	} {
		var cur netip.Addr
		if c.cur != "" {
			cur = netip.MustParseAddr(c.cur)
		}
		got := masqueradeAddr6(c.addrs, cur)
		if (c.want == "" && got.IsValid()) || (c.want != "" && got != netip.MustParseAddr(c.want)) {
			t.Errorf("%s: got %v, want %q", c.name, got, c.want)
		}
	}
	// IPv4's choice ignores IPv6 addresses: one listing serves both.
	if got := masqueradeAddr([]netlink.Addr{global, addr("192.0.2.1/24", 0)}); got != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("IPv4 choice from a mixed list: %v, want 192.0.2.1", got)
	}
}
