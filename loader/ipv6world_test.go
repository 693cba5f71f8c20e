package loader_test

import (
	"net/netip"
	"testing"

	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// ipv6World is a World's IPv6 layer: the uplink's link, with the host and
// the outside on it, and the bridge's network, with its gateway on the
// bridge and container A on it (its default route via the gateway).
type ipv6World struct {
	HostIP, OutsideIP netip.Addr
	Subnet            netip.Prefix
	Gateway, AIP      netip.Addr
}

// addIPv6 numbers the link's hosts ::1 (host) and ::2 (outside), the
// network's ::1 (gateway) and ::2 (A), without duplicate address
// detection, and turns IPv6 forwarding on in the host.
func addIPv6(t *testing.T, w *testenv.World, link, network string) ipv6World {
	t.Helper()
	l, n := netip.MustParsePrefix(link), netip.MustParsePrefix(network)
	v := ipv6World{
		HostIP: l.Addr().Next(), OutsideIP: l.Addr().Next().Next(),
		Subnet: n, Gateway: n.Addr().Next(), AIP: n.Addr().Next().Next(),
	}
	w.Host.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	w.Host.IP(t, "addr", "add", netip.PrefixFrom(v.HostIP, l.Bits()).String(), "dev", w.Uplink, "nodad")
	w.Outside.IP(t, "addr", "add", netip.PrefixFrom(v.OutsideIP, l.Bits()).String(), "dev", "eth0", "nodad")
	w.Host.IP(t, "addr", "add", netip.PrefixFrom(v.Gateway, n.Bits()).String(), "dev", w.Bridge, "nodad")
	w.A.IP(t, "addr", "add", netip.PrefixFrom(v.AIP, n.Bits()).String(), "dev", "eth0", "nodad")
	w.A.IP(t, "-6", "route", "add", "default", "via", v.Gateway.String())
	return v
}

// narrowLink gives the uplink's link an MTU of 1400, below the bridge's,
// and the outside a route back to the network, so that only the datapath
// keeps the containers unreachable by their own addresses.
func (v ipv6World) narrowLink(t *testing.T, w *testenv.World) {
	t.Helper()
	w.Host.IP(t, "link", "set", w.Uplink, "mtu", "1400")
	w.Outside.IP(t, "link", "set", "eth0", "mtu", "1400")
	w.Outside.IP(t, "-6", "route", "add", v.Subnet.String(), "via", v.HostIP.String())
}

// networks are the bridge's network in both families, as the agent
// writes a dual-stack network: one id.
func (v ipv6World) networks(w *testenv.World) []maps.Network {
	return []maps.Network{
		{Subnet: netip.PrefixFrom(w.Gateway, w.ContainerPrefixLen).Masked(), Gateway: w.Gateway, ID: 1},
		{Subnet: v.Subnet, Gateway: v.Gateway, ID: 1},
	}
}

// putHostAddrs writes the host's IPv6 addresses, which the load helper
// (it syncs IPv4's) leaves out, so wildcard bindings match them.
func (v ipv6World) putHostAddrs(t *testing.T, w *testenv.World, pins string) {
	t.Helper()
	hostAddrs := maps.NewHostAddrs(openPinned(t, pins, "hostaddrs"))
	for _, a := range []struct {
		addr netip.Addr
		dev  string
	}{{v.HostIP, w.Uplink}, {v.Gateway, w.Bridge}} {
		if err := hostAddrs.Put(a.addr, uint32(ifindexIn(t, w.Host, a.dev))); err != nil {
			t.Fatal(err)
		}
	}
}
