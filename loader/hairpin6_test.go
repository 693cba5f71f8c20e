package loader_test

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestIPv6Hairpin: containers without the socket hooks reach a published
// port through the host's IPv6 addresses (the uplink's, and the bridge
// gateway's), from the backend's own network and from another; the
// backend sees its network's gateway, as with IPv4's hairpin. A bulk
// transfer each way comes through byte for byte (8 MiB under -short, 64
// MiB otherwise), and UDP datagrams bigger than the MTU, fragmented by
// the sender, are echoed whole. BPF forwards both ways, so a FORWARD
// policy of DROP changes nothing.
func TestIPv6Hairpin(t *testing.T) {
	testenv.RequirePrivileges(t)
	t.Run("stack policy ACCEPT", func(t *testing.T) { testIPv6Hairpin(t, false) })
	t.Run("ip6tables FORWARD DROP", func(t *testing.T) {
		if _, err := exec.LookPath("ip6tables"); err != nil {
			t.Skip("needs ip6tables to set the FORWARD policy: run 'make deps'")
		}
		testIPv6Hairpin(t, true)
	})
}

// ipv6Hairpin is TestIPv6Hairpin's world: network 1 (fd00:91::/64, on
// the world's bridge) holds containers A and B, network 2 (fd00:92::/64,
// on a bridge of its own) container C; A serves TCP on 80 (published as
// [::]:8080), bulk on 9000 ([::]:9000) and a datagram echo on 7000
// ([hostIP]:7000). No socket hooks: the cgroup holds no client.
type ipv6Hairpin struct {
	*testenv.World
	pins            string
	C               *testenv.Netns
	bridge2, cVeth  string
	hostIP, gateway netip.Addr
	gateway2        netip.Addr
	aIP             netip.Addr
}

func newIPv6Hairpin(t *testing.T, forwardDrop bool) *ipv6Hairpin {
	w := testenv.NewWorld(t)
	if forwardDrop {
		w.Host.Exec(t, "ip6tables", "-P", "FORWARD", "DROP")
	}
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)
	var (
		hostIP   = netip.MustParseAddr("2001:db8:19::1")
		gateway  = netip.MustParseAddr("fd00:91::1")
		aIP      = netip.MustParseAddr("fd00:91::2")
		bIP      = netip.MustParseAddr("fd00:91::3")
		gateway2 = netip.MustParseAddr("fd00:92::1")
		cIP      = netip.MustParseAddr("fd00:92::2")
	)
	bridge2, cVeth := "ptn"+w.ID, "pvc"+w.ID
	c := testenv.NewNetns(t, "ptd"+w.ID)
	w.Host.IP(t, "link", "add", bridge2, "type", "bridge")
	w.Host.IP(t, "link", "set", bridge2, "up")
	testenv.Veth(t, w.Host, cVeth, c, "eth0")
	w.Host.IP(t, "link", "set", cVeth, "master", bridge2)

	w.Host.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	w.Host.IP(t, "addr", "add", hostIP.String()+"/64", "dev", w.Uplink, "nodad")
	w.Host.IP(t, "addr", "add", gateway.String()+"/64", "dev", w.Bridge, "nodad")
	w.Host.IP(t, "addr", "add", gateway2.String()+"/64", "dev", bridge2, "nodad")
	for _, ct := range []struct {
		ns *testenv.Netns
		ip netip.Addr
		gw netip.Addr
	}{{w.A, aIP, gateway}, {w.B, bIP, gateway}, {c, cIP, gateway2}} {
		ct.ns.IP(t, "addr", "add", ct.ip.String()+"/64", "dev", "eth0", "nodad")
		ct.ns.IP(t, "-6", "route", "add", "default", "via", ct.gw.String())
	}
	w.A.ServeTCP(t, "[::]:80")
	w.A.ServeBulk(t, "[::]:9000")
	w.A.ServeDatagramEcho(t, "[::]:7000")

	if err := w.Host.Helper(t, "", new(string), "load", pins, w.Uplink, cgroup, string(loader.TCX),
		"bridge="+w.Bridge, "bridge="+bridge2); err != nil {
		t.Fatal(err)
	}
	configure(t, w, pins, false, []maps.Network{
		{Subnet: netip.PrefixFrom(w.Gateway, w.ContainerPrefixLen).Masked(), Gateway: w.Gateway, ID: 1},
		{Subnet: netip.MustParsePrefix("fd00:91::/64"), Gateway: gateway, ID: 1},
		{Subnet: netip.MustParsePrefix("fd00:92::/64"), Gateway: gateway2, ID: 2},
	})
	hostAddrs := maps.NewHostAddrs(openPinned(t, pins, "hostaddrs"))
	for _, a := range []struct {
		addr netip.Addr
		dev  string
	}{{hostIP, w.Uplink}, {gateway, w.Bridge}, {gateway2, bridge2}} {
		if err := hostAddrs.Put(a.addr, uint32(ifindexIn(t, w.Host, a.dev))); err != nil {
			t.Fatal(err)
		}
	}
	any6 := netip.IPv6Unspecified()
	if err := maps.NewBindings(openPinned(t, pins, "bindings")).PutBatch([]maps.Binding{
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any6, 8080), Backend: netip.AddrPortFrom(aIP, 80), ID: 1},
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any6, 9000), Backend: netip.AddrPortFrom(aIP, 9000), ID: 2},
		{Proto: maps.UDP, Host: netip.AddrPortFrom(hostIP, 7000), Backend: netip.AddrPortFrom(aIP, 7000), ID: 3},
	}); err != nil {
		t.Fatal(err)
	}
	return &ipv6Hairpin{World: w, pins: pins, C: c, bridge2: bridge2, cVeth: cVeth,
		hostIP: hostIP, gateway: gateway, gateway2: gateway2, aIP: aIP}
}

func testIPv6Hairpin(t *testing.T, forwardDrop bool) {
	h := newIPv6Hairpin(t, forwardDrop)
	w, pins, c := h.World, h.pins, h.C
	hostIP, gateway, gateway2 := h.hostIP, h.gateway, h.gateway2
	size := int64(testenv.BulkSize)
	if testing.Short() {
		size = 8 << 20
	}
	for _, client := range []struct {
		name string
		ns   *testenv.Netns
		host netip.Addr // the host address dialled
	}{
		{"same network via the uplink address", w.B, hostIP},
		{"same network via the gateway", w.B, gateway},
		{"another network via the uplink address", c, hostIP},
		{"another network via its gateway", c, gateway2},
	} {
		t.Run(client.name, func(t *testing.T) {
			addr := netip.AddrPortFrom(client.host, 8080).String()
			res, err := client.ns.Dial("tcp", addr)
			expect(t, res, err, gateway, addr)
			for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
				res, err := client.ns.Transfer(testenv.Transfer{
					Dir: dir, Addr: netip.AddrPortFrom(client.host, 9000).String(), Seed: uint64(i + 1),
					Size: size, Deadline: transferDeadline,
				})
				if err != nil {
					t.Fatalf("%s: %v\ndatapath counters: %s", dir, err, counters(t, pins))
				}
				t.Logf("%s: %d bytes in %s", dir, res.Bytes, res.Elapsed)
			}
			if client.host != hostIP {
				return // the datagram binding is the uplink address's only
			}
			for _, n := range datagramSizes {
				if err := client.ns.EchoDatagrams(netip.AddrPortFrom(hostIP, 7000).String(), n, datagramsPerSize); err != nil {
					t.Errorf("%d-byte datagrams: %v\ndatapath counters: %s", n, err, counters(t, pins))
				}
			}
		})
	}
	stats, err := maps.NewStats(openPinned(t, pins, "stats")).Read()
	if err != nil {
		t.Fatal(err)
	}
	if stats["hairpin"].Packets == 0 || stats["hairpin_reply"].Packets == 0 {
		t.Errorf("the bridge hairpinned nothing: %s", counters(t, pins))
	}
}
