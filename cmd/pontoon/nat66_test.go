package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestNAT66: a --masquerade6 network's IPv6 flows reach a LAN host that
// has no route to the network's subnet, as the uplink's IPv6 address:
// TCP, UDP and echo, 64 MiB each way and datagrams over the MTU, over a
// 1400-byte uplink under a 1500-byte bridge. The LAN reaches no container
// by its unique local address, nor by spoofed replies. Status and inspect
// show the address; the agent follows it as it is replaced and taken
// away (no flow leaves with the unique local source meanwhile), and keeps
// it, and live flows with it, when it is deprecated and across a kill -9
// and restart. Both with the bridge program forwarding translated packets
// and with the kernel's forward path, where the uplink translates.
func TestNAT66(t *testing.T) {
	for _, c := range []struct {
		name  string
		agent []string
	}{{"bpf forwarding", nil}, {"stack forwarding", []string{"--stack-forwarding"}}} {
		t.Run(c.name, func(t *testing.T) { testNAT66(t, c.agent...) })
	}
}

func testNAT66(t *testing.T, agentArgs ...string) {
	w := newWorld(t, 1)
	link := netip.MustParseAddr("2001:db8:66::1")
	outsideV6 := netip.MustParseAddr("2001:db8:66::2")
	subnet := netip.MustParsePrefix("fd00:8c::/64")
	w.host.IP(t, "link", "set", w.uplink, "mtu", "1400")
	w.outside.IP(t, "link", "set", "eth0", "mtu", "1400")
	// A deprecated address is never picked afresh, and it keeps the link's
	// prefix route when the usable ones go: what then leaves is up to
	// the datapath, not to a missing route.
	w.host.IP(t, "-6", "addr", "add", "2001:db8:66::d/64", "dev", w.uplink, "nodad", "preferred_lft", "0")
	w.host.IP(t, "-6", "addr", "add", link.String()+"/64", "dev", w.uplink, "nodad")
	// The kernel lists the newest address first: the unique local one
	// comes before the global one, which must still win.
	ula := netip.MustParseAddr("fd00:fd::1")
	w.host.IP(t, "-6", "addr", "add", ula.String()+"/64", "dev", w.uplink, "nodad")
	w.outside.IP(t, "-6", "addr", "add", outsideV6.String()+"/64", "dev", "eth0", "nodad")
	w.startAgent(agentArgs...)
	var n control.NetworkInfo
	w.okJSON(&n, "network", "create", "n66", "--subnet", "10.140.0.0/24", "--subnet6", subnet.String(), "--masquerade6")
	if !n.Masquerade6 {
		t.Fatalf("network create --masquerade6: %+v", n.Network)
	}
	var ep control.Endpoint
	w.okJSON(&ep, "endpoint", "attach", "n66", "e0", "--netns", w.containers[0].Path())
	if !subnet.Contains(ep.IPv6) {
		t.Fatalf("e0's IPv6 address %s is not in %s", ep.IPv6, subnet)
	}
	c := w.containers[0]
	outside := func(port uint16) string { return netip.AddrPortFrom(outsideV6, port).String() }
	w.outside.ServeTCP(t, outside(80))
	w.outside.ServeUDP(t, outside(53))
	w.outside.ServeBulk(t, outside(5001))
	w.outside.ServeDatagramEcho(t, outside(54))
	c.ServeTCP(t, netip.AddrPortFrom(ep.IPv6, 80).String())

	// fromSubnet matches what must never reach the LAN: the network's
	// own addresses as a source.
	fromSubnet := func(f []byte) bool {
		ip, ok := parseIPv6(f)
		return ok && subnet.Contains(ip.src)
	}
	// leavesAs checks new TCP and UDP flows reach the outside as addr.
	leavesAs := func(t *testing.T, addr netip.Addr) {
		t.Helper()
		res, err := c.Dial("tcp", outside(80))
		expectEcho(t, res, err, addr, outside(80))
		res, err = c.Dial("udp", outside(53))
		expectEcho(t, res, err, addr, outside(53))
	}
	uplinkAddr6 := func() netip.Addr {
		u, ok := w.uplinkByName(w.uplink)
		if !ok {
			t.Fatalf("status lists no uplink %s", w.uplink)
		}
		return u.Addr6
	}
	waitAddr6 := func(t *testing.T, want netip.Addr) {
		t.Helper()
		eventually(t, fmt.Sprintf("status shows %s's NAT66 address as %v", w.uplink, want), func() bool { return uplinkAddr6() == want })
	}

	echoFromLink := func(f []byte) bool {
		ip, ok := parseIPv6(f)
		return ok && ip.src == link && ip.next == byte(layers.IPProtocolICMPv6) && len(ip.l4) > 0 && ip.l4[0] == layers.ICMPv6TypeEchoRequest
	}

	t.Run("TCP, UDP and echo leave as the uplink's address", func(t *testing.T) {
		atOutside := w.outside.Sniff(t, "eth0")
		leavesAs(t, link)
		if err := ping6(t, c, netip.Addr{}, outsideV6); err != nil {
			t.Errorf("e0 pings the outside %s: %v", outsideV6, err)
		}
		// The sniffer reads on its own: wait for the frame (the limit
		// only stops a hang).
		if atOutside.WaitFor(echoFromLink, 1, 10*time.Second) == 0 {
			t.Errorf("the outside saw no echo request from %s", link)
		}
		if got := atOutside.Count(fromSubnet); got > 0 {
			t.Errorf("the outside saw %d frames from %s", got, subnet)
		}
	})

	t.Run("64 MiB each way, datagrams over the MTU", func(t *testing.T) {
		// The outside has no route to the subnet: only translated
		// replies come back.
		for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
			tr := testenv.Transfer{Dir: dir, Addr: outside(5001), Seed: uint64(66 + i), Size: testenv.BulkSize, Deadline: 3 * time.Minute}
			res, err := c.Transfer(tr)
			if err != nil {
				t.Fatalf("%s to %s: %v", dir, tr.Addr, err)
			}
			t.Logf("%s: %d bytes in %s", dir, res.Bytes, res.Elapsed)
		}
		// Fragmented by the container at the bridge's 1500, then again
		// at 1400 once the host's Packet Too Big reaches it. No fragment
		// of the first tries slips out untranslated.
		atOutside := w.outside.Sniff(t, "eth0")
		before := w.counter("drop_unmasqueraded")
		for _, size := range []int{3000, 9000} {
			if err := c.EchoDatagrams(outside(54), size, 3); err != nil {
				t.Errorf("from the container: %v", err)
			}
		}
		// An echo sent after them, on the same way out: once the sniffer
		// has it, it has read whatever of the datagrams leaked before.
		if err := ping6(t, c, netip.Addr{}, outsideV6); err != nil {
			t.Errorf("e0 pings the outside %s: %v", outsideV6, err)
		}
		if atOutside.WaitFor(echoFromLink, 1, 10*time.Second) == 0 {
			t.Errorf("the outside saw no echo request from %s", link)
		}
		if got := atOutside.Count(fromSubnet); got > 0 {
			t.Errorf("the outside saw %d frames from %s", got, subnet)
		}
		t.Logf("drop_unmasqueraded moved by %d", w.counter("drop_unmasqueraded")-before)
	})

	t.Run("the LAN reaches no container", func(t *testing.T) {
		inside := netip.AddrPortFrom(ep.IPv6, 80).String()
		if res, err := w.outside.Dial("tcp", inside); err == nil {
			t.Errorf("the outside, with no route to %s, reached %s: %+v", subnet, inside, res)
		}
		// A LAN host that routes the subnet via this host: nothing
		// translates it in.
		w.outside.IP(t, "-6", "route", "add", subnet.String(), "via", link.String())
		defer w.outside.IP(t, "-6", "route", "del", subnet.String(), "via", link.String())
		before := w.counter("drop_not_published")
		if res, err := w.outside.Dial("tcp", inside); err == nil {
			t.Errorf("the outside reached %s by routing to it: %+v", inside, res)
		}
		if w.counter("drop_not_published") == before {
			t.Error("drop_not_published did not count the attempt")
		}
	})

	t.Run("spoofed replies reach no container socket", func(t *testing.T) {
		// A live UDP flow, whose reply names the port it holds on the
		// uplink's address, and a socket no flow leads to.
		var flow, idle *net.UDPConn
		const idlePort = 4242
		if err := c.Do(func() (err error) {
			if flow, err = net.ListenUDP("udp", nil); err != nil {
				return err
			}
			idle, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified, Port: idlePort})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer flow.Close()
		defer idle.Close()
		server := netip.AddrPortFrom(outsideV6, 53)
		if _, err := flow.WriteToUDPAddrPort([]byte("ping"), server); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		flow.SetReadDeadline(time.Now().Add(5 * time.Second))
		nr, _, err := flow.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("the flow's first reply: %v", err)
		}
		peer, _, err := testenv.ParseEcho(string(buf[:nr]))
		if err != nil {
			t.Fatal(err)
		}
		held, err := netip.ParseAddrPort(peer)
		if err != nil || held.Addr() != link {
			t.Fatalf("the server saw the flow as %q, want %s:PORT (%v)", peer, link, err)
		}

		spoofer := netip.MustParseAddrPort("[2001:db8:dead::1]:53")
		hostMAC, outsideMAC := w.host.HardwareAddr(t, w.uplink), w.outside.HardwareAddr(t, "eth0")
		frame := func(src, dst netip.AddrPort, payload string) []byte {
			t.Helper()
			ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
			udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
			udp.SetNetworkLayerForChecksum(ip)
			f, err := testenv.Serialize(&layers.Ethernet{SrcMAC: outsideMAC, DstMAC: hostMAC, EthernetType: layers.EthernetTypeIPv6},
				ip, udp, gopacket.Payload(payload))
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
		// The genuine reply last: once it is in, the spoofed ones sent
		// before it on the same link have had their chance.
		if err := w.outside.SendFrames("eth0",
			frame(spoofer, held, "spoofed"),
			frame(spoofer, netip.AddrPortFrom(link, idlePort), "spoofed"),
			frame(server, held, "genuine")); err != nil {
			t.Fatal(err)
		}
		for {
			flow.SetReadDeadline(time.Now().Add(5 * time.Second))
			nr, from, err := flow.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("the genuine reply to %s never reached the flow's socket: %v", held, err)
			}
			if string(buf[:nr]) == "genuine" && from.Addr().Unmap() == outsideV6 {
				break
			}
			t.Errorf("the flow's socket got %q from %s", buf[:nr], from)
		}
		idle.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if nr, from, err := idle.ReadFromUDPAddrPort(buf); err == nil {
			t.Errorf("a socket no flow leads to got %q from %s", buf[:nr], from)
		}
	})

	t.Run("status and inspect show the address", func(t *testing.T) {
		if got := uplinkAddr6(); got != link {
			t.Errorf("status: %s's NAT66 address %v, want %s (global before unique local %s)", w.uplink, got, link, ula)
		}
		if out := w.ok("status"); !strings.Contains(out, "IPv6 as "+link.String()+")") {
			t.Errorf("status does not show %s:\n%s", link, out)
		}
		out := w.ok("network", "inspect", "n66")
		if !regexpLine(out, `^masquerade6:\s+true$`) || !strings.Contains(out, link.String()+" on "+w.uplink) {
			t.Errorf("network inspect lacks masquerade6 or the address:\n%s", out)
		}
	})

	t.Run("the address deprecated: kept for live and new flows", func(t *testing.T) {
		live := connect6(t, c, outside(80))
		live.roundTrip(t, link)
		// As SLAAC does when the prefix's preferred lifetime runs out: the
		// address stays valid for existing traffic (RFC 4862).
		w.host.IP(t, "-6", "addr", "change", link.String()+"/64", "dev", w.uplink, "nodad", "preferred_lft", "0")
		defer w.host.IP(t, "-6", "addr", "change", link.String()+"/64", "dev", w.uplink, "nodad", "preferred_lft", "forever")
		// The agent reads both families' addresses at once: once status
		// shows the IPv4 address gone, the agent has read link deprecated.
		w.host.IP(t, "addr", "del", w.hostIP.String()+"/24", "dev", w.uplink)
		eventually(t, "status shows "+w.uplink+" without an IPv4 address", func() bool {
			u, _ := w.uplinkByName(w.uplink)
			return !u.Addr.IsValid()
		})
		w.host.IP(t, "addr", "add", w.hostIP.String()+"/24", "dev", w.uplink)
		eventually(t, "status shows "+w.uplink+"'s IPv4 address back", func() bool {
			u, _ := w.uplinkByName(w.uplink)
			return u.Addr == w.hostIP
		})
		if got := uplinkAddr6(); got != link {
			t.Errorf("status: %s's NAT66 address %v after it was deprecated, want %s kept", w.uplink, got, link)
		}
		live.roundTrip(t, link)
		leavesAs(t, link)
	})

	t.Run("the address replaced, taken away, given back", func(t *testing.T) {
		replaced := netip.MustParseAddr("2001:db8:66::b")
		w.host.IP(t, "-6", "addr", "add", replaced.String()+"/64", "dev", w.uplink, "nodad")
		w.host.IP(t, "-6", "addr", "del", link.String()+"/64", "dev", w.uplink)
		waitAddr6(t, replaced)
		leavesAs(t, replaced)

		// The unique local address is the last resort; the deprecated
		// one is none.
		w.host.IP(t, "-6", "addr", "del", replaced.String()+"/64", "dev", w.uplink)
		waitAddr6(t, ula)
		w.host.IP(t, "-6", "addr", "del", ula.String()+"/64", "dev", w.uplink)
		waitAddr6(t, netip.Addr{})
		if out := w.ok("status"); strings.Contains(out, "IPv6 as") {
			t.Errorf("status shows a NAT66 address on an uplink with none usable:\n%s", out)
		}

		atOutside := w.outside.Sniff(t, "eth0")
		before := w.counter("drop_unmasqueraded")
		for _, d := range []struct{ network, addr string }{{"tcp", outside(80)}, {"udp", outside(53)}} {
			if res, err := c.Dial(d.network, d.addr); err == nil {
				t.Errorf("%s from e0 reached the outside with no address to leave as: %+v", d.network, res)
			}
		}
		if err := c.Ping6(netip.Addr{}, outsideV6, 600); err == nil {
			t.Error("e0 pinged the outside with no address to leave as")
		}
		if w.counter("drop_unmasqueraded") == before {
			t.Error("drop_unmasqueraded did not count the flows")
		}
		// Nothing of them at all: neighbour discovery aside, the outside
		// hears from no one.
		toOutside := func(f []byte) bool {
			ip, ok := parseIPv6(f)
			return ok && ip.dst == outsideV6 && (ip.next != byte(layers.IPProtocolICMPv6) ||
				len(ip.l4) > 0 && ip.l4[0] < layers.ICMPv6TypeRouterSolicitation)
		}
		// The container has no way out now, so the host sends the frame
		// that comes after any leak on the uplink: a datagram for
		// another LAN address (not toOutside's), from a host address.
		marker := netip.MustParseAddr("2001:db8:66::99")
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
			SrcIP: netip.MustParseAddr("2001:db8:66::d").AsSlice(), DstIP: marker.AsSlice()}
		udp := &layers.UDP{SrcPort: 9, DstPort: 9}
		udp.SetNetworkLayerForChecksum(ip)
		f, err := testenv.Serialize(&layers.Ethernet{SrcMAC: w.host.HardwareAddr(t, w.uplink), DstMAC: w.outside.HardwareAddr(t, "eth0"),
			EthernetType: layers.EthernetTypeIPv6}, ip, udp, gopacket.Payload("marker"))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.host.SendFrames(w.uplink, f); err != nil {
			t.Fatal(err)
		}
		toMarker := func(f []byte) bool {
			ip, ok := parseIPv6(f)
			return ok && ip.dst == marker
		}
		if atOutside.WaitFor(toMarker, 1, 10*time.Second) == 0 {
			t.Errorf("the outside saw no frame for %s from the host", marker)
		}
		if got := atOutside.Count(fromSubnet); got > 0 {
			t.Errorf("the outside saw %d frames from %s", got, subnet)
		}
		if got := atOutside.Count(toOutside); got > 0 {
			t.Errorf("the outside saw %d frames for it besides neighbour discovery", got)
		}

		back := netip.MustParseAddr("2001:db8:66::a")
		w.host.IP(t, "-6", "addr", "add", back.String()+"/64", "dev", w.uplink, "nodad")
		waitAddr6(t, back)
		leavesAs(t, back)
		// The sniffer that heard nothing before hears these.
		fromBack := func(f []byte) bool {
			ip, ok := parseIPv6(f)
			return ok && ip.src == back && ip.dst == outsideV6
		}
		if atOutside.WaitFor(fromBack, 1, 10*time.Second) == 0 {
			t.Errorf("the outside's sniffer saw nothing from %s", back)
		}
		if err := ping6(t, c, netip.Addr{}, outsideV6); err != nil {
			t.Errorf("e0 pings the outside again: %v", err)
		}
	})

	t.Run("kill -9 and restart", func(t *testing.T) {
		addr := uplinkAddr6()
		if !addr.IsValid() {
			t.Fatal("no NAT66 address to start from")
		}
		live := connect6(t, c, outside(80))
		live.roundTrip(t, addr)
		// Newer, so listed first: only the map's record of the address
		// in use keeps the restarted agent from moving to it.
		w.host.IP(t, "-6", "addr", "add", "2001:db8:66::5/64", "dev", w.uplink, "nodad")
		w.agent.stop(syscall.SIGKILL)
		w.startAgent(agentArgs...)
		live.roundTrip(t, addr)
		leavesAs(t, addr)
		if got := uplinkAddr6(); got != addr {
			t.Errorf("after a restart %s's NAT66 address is %v, want %s still", w.uplink, got, addr)
		}
	})
}

// ipv6Frame is what a sniffed frame's IPv6 header says.
type ipv6Frame struct {
	src, dst netip.Addr
	next     byte   // the first next header
	l4       []byte // after the fixed header, as far as the frame goes
}

func parseIPv6(f []byte) (ipv6Frame, bool) {
	if len(f) < 14+40 || f[12] != 0x86 || f[13] != 0xdd {
		return ipv6Frame{}, false
	}
	ip := f[14:]
	return ipv6Frame{
		src:  netip.AddrFrom16([16]byte(ip[8:24])),
		dst:  netip.AddrFrom16([16]byte(ip[24:40])),
		next: ip[6],
		l4:   ip[40:],
	}, true
}

// conn6 is a TCP connection kept open across an agent restart
// (testenv's Connect dials IPv4).
type conn6 struct {
	net.Conn
	r *bufio.Reader
}

func connect6(t *testing.T, ns *testenv.Netns, addr string) *conn6 {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn6{Conn: c, r: bufio.NewReader(c)}
}

// roundTrip sends a line to an echo server and checks it came back, the
// server seeing wantSource.
func (c *conn6) roundTrip(t *testing.T, wantSource netip.Addr) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, "still there?"); err != nil {
		t.Fatalf("write on the live connection: %v", err)
	}
	reply, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read on the live connection: %v", err)
	}
	peer, _, err := testenv.ParseEcho(reply)
	if err != nil {
		t.Fatal(err)
	}
	if seen, err := netip.ParseAddrPort(peer); err != nil || seen.Addr() != wantSource {
		t.Errorf("the live connection's server saw %q, want %s", peer, wantSource)
	}
}

// TestNAT66NetworkMode: `network ls` calls a network that masquerades
// only IPv6 nat66, not internal: its IPv6 does leave the host.
func TestNAT66NetworkMode(t *testing.T) {
	for _, c := range []struct {
		n    control.Network
		want string
	}{
		{control.Network{Masquerade: true}, "nat"},
		{control.Network{Masquerade: true, Masquerade6: true}, "nat"},
		{control.Network{Masquerade6: true}, "nat66"},
		{control.Network{Routed: true}, "routed"},
		{control.Network{}, "internal"},
	} {
		if got := networkMode(&c.n); got != c.want {
			t.Errorf("masquerade=%v masquerade6=%v routed=%v: mode %q, want %q", c.n.Masquerade, c.n.Masquerade6, c.n.Routed, got, c.want)
		}
	}
}
