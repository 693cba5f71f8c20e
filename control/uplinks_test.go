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

func TestMasqueradeAddr(t *testing.T) {
	addr := func(s string, flags int) netlink.Addr {
		p := netip.MustParsePrefix(s)
		return netlink.Addr{IPNet: ipNet(p.Addr(), p.Bits()), Flags: flags}
	}
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
