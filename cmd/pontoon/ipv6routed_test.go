package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestIPv6RoutedNetwork: IPv6 egress of a routed dual-stack network, the
// IPv6 counterpart of IPv4 masquerade that needs no translation. A LAN
// host with a route to the subnet via this host and the container reach
// each other by their own addresses, any port: echo both ways, 64 MiB
// each way in both roles over a 1400-byte uplink under a 1500-byte
// bridge, and datagrams larger than either MTU. A masquerading
// dual-stack network next to it stays unreachable from the LAN.
func TestIPv6RoutedNetwork(t *testing.T) {
	w := newWorld(t, 2)
	hostV6, outsideV6 := netip.MustParseAddr("fd00:fd::1"), netip.MustParseAddr("fd00:fd::2")
	w.host.IP(t, "link", "set", w.uplink, "mtu", "1400")
	w.outside.IP(t, "link", "set", "eth0", "mtu", "1400")
	w.host.IP(t, "-6", "addr", "add", hostV6.String()+"/64", "dev", w.uplink, "nodad")
	w.outside.IP(t, "-6", "addr", "add", outsideV6.String()+"/64", "dev", "eth0", "nodad")
	for _, subnet := range []string{"fd00:8a::/64", "fd00:8b::/64"} {
		w.outside.IP(t, "-6", "route", "add", subnet, "via", hostV6.String())
	}
	w.startAgent()
	w.ok("network", "create", "routed", "--routed", "--subnet", "10.138.0.0/24", "--subnet6", "fd00:8a::/64")
	w.ok("network", "create", "masq", "--subnet", "10.139.0.0/24", "--subnet6", "fd00:8b::/64")
	var ep, masq control.Endpoint
	w.okJSON(&ep, "endpoint", "attach", "routed", "e0", "--netns", w.containers[0].Path())
	w.okJSON(&masq, "endpoint", "attach", "masq", "e1", "--netns", w.containers[1].Path())
	c := w.containers[0]
	inside := func(port uint16) string { return netip.AddrPortFrom(ep.IPv6, port).String() }
	outside := func(port uint16) string { return netip.AddrPortFrom(outsideV6, port).String() }
	c.ServeTCP(t, inside(80))
	c.ServeBulk(t, inside(5001))
	c.ServeDatagramEcho(t, inside(53))
	w.outside.ServeTCP(t, outside(80))
	w.outside.ServeBulk(t, outside(5001))
	w.outside.ServeDatagramEcho(t, outside(53))
	w.containers[1].ServeTCP(t, netip.AddrPortFrom(masq.IPv6, 80).String())

	t.Run("both ends see each other's own address", func(t *testing.T) {
		res, err := w.outside.Dial("tcp", inside(80))
		expectEcho(t, res, err, outsideV6, inside(80))
		res, err = c.Dial("tcp", outside(80))
		expectEcho(t, res, err, ep.IPv6, outside(80))
	})

	t.Run("64 MiB each way, each end the client", func(t *testing.T) {
		for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
			for _, client := range []struct {
				from *testenv.Netns
				addr string
			}{{w.outside, inside(5001)}, {c, outside(5001)}} {
				tr := testenv.Transfer{Dir: dir, Addr: client.addr, Seed: uint64(80 + i), Size: testenv.BulkSize, Deadline: 3 * time.Minute}
				res, err := client.from.Transfer(tr)
				if err != nil {
					t.Fatalf("%s from %s to %s: %v", dir, client.from.Name, client.addr, err)
				}
				t.Logf("%s from %s: %d bytes in %s", dir, client.from.Name, res.Bytes, res.Elapsed)
			}
		}
	})

	t.Run("datagrams over the MTU", func(t *testing.T) {
		for _, size := range []int{3000, 9000} {
			if err := w.outside.EchoDatagrams(inside(53), size, 3); err != nil {
				t.Errorf("from outside: %v", err)
			}
			if err := c.EchoDatagrams(outside(53), size, 3); err != nil {
				t.Errorf("from the container: %v", err)
			}
		}
	})

	t.Run("the masquerading network stays closed to the LAN", func(t *testing.T) {
		addr := netip.AddrPortFrom(masq.IPv6, 80).String()
		if res, err := w.outside.Dial("tcp", addr); err == nil {
			t.Errorf("the outside reached %s on a network that is not routed: %+v", addr, res)
		}
	})
}
