package loader_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// Issue 11, a real host's safety: what Docker's iptables rules kept out,
// and what a container or a LAN machine must not be able to do to its
// neighbours or to the host. Each test sends the hostile traffic for real
// and looks for it where it must not arrive: below every socket, with a
// packet tap on the victim's interface, so that a packet the victim's
// stack would ignore still counts as having got through.

// settle is how long the checks wait for something that must not arrive:
// inside one machine's namespaces a packet takes microseconds.
const settle = 700 * time.Millisecond

// negativeDial is the timeout for connections that must not come up.
const negativeDial = time.Second

// TestSecurityOutsideReachesOnlyPublishedPorts: a LAN machine with a route
// to the containers' subnet through the host reaches published ports and
// nothing else of a container, unless its network is routed.
func TestSecurityOutsideReachesOnlyPublishedPorts(t *testing.T) {
	testenv.RequirePrivileges(t)
	n := newTwoNetworks(t, false, false)
	for _, s := range []netip.Prefix{n.Subnet1, n.Subnet2} {
		n.Outside.IP(t, "route", "add", s.String(), "via", n.HostIP.String())
	}
	n.Outside.ServeTCP(t, ":80")
	n.A.ServeTCP(t, ":80")
	inboxA := n.A.ListenInbox(t, "udp4", ":5300")
	inboxC := n.C.ListenInbox(t, "udp4", ":5300")
	atA := n.A.Sniff(t, "eth0")
	atC := n.C.Sniff(t, "eth0")
	fromOutside := testenv.FromIPv4(n.OutsideIP)
	if err := maps.NewBindings(openPinned(t, n.pins, "bindings")).Put(maps.Binding{
		Proto: maps.TCP, Host: netip.AddrPortFrom(netip.IPv4Unspecified(), 8080), Backend: netip.AddrPortFrom(n.AIP, 80), ID: 1,
	}); err != nil {
		t.Fatal(err)
	}
	udpA := netip.AddrPortFrom(n.AIP, 5300)

	t.Run("unpublished ports are closed to the outside", func(t *testing.T) {
		before := readStats(t, n.pins)
		var wg sync.WaitGroup
		var dialErr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, dialErr = dialWithin(n.Outside, netip.AddrPort{}, netip.AddrPortFrom(n.AIP, 80), negativeDial)
		}()
		if err := sendUDP(n.Outside, netip.AddrPort{}, udpA, []byte("knock"), 3); err != nil {
			t.Fatal(err)
		}
		// Fragments and other protocols are addressed to the container too.
		if err := sendUDP(n.Outside, netip.AddrPort{}, udpA, bytes.Repeat([]byte("f"), 3000), 1); err != nil {
			t.Fatal(err)
		}
		echo := serialize(t, testenv.IPv4Header(n.OutsideIP, n.AIP, layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0x1111, Seq: 1},
			gopacket.Payload("pontoon"))
		if err := n.Outside.SendIPv4(echo); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		time.Sleep(settle)

		if dialErr == nil {
			t.Error("the outside connected to the container's unpublished TCP port 80")
		}
		if got := inboxA.Received(); len(got) > 0 {
			t.Errorf("the container's UDP socket on an unpublished port received %d datagrams from outside", len(got))
		}
		if got := atA.Count(fromOutside); got > 0 {
			t.Errorf("%d packets from the outside reached the container's eth0 (SYNs, datagrams, fragments, an echo: none should)", got)
		}
		after := readStats(t, n.pins)
		// 3 datagrams, 3 fragments, an echo, at least one SYN.
		if d := moved(before, after, "drop_not_published"); d < 8 {
			t.Errorf("drop_not_published moved by %d, want at least 8 (counters: %s)", d, counters(t, n.pins))
		}
	})

	t.Run("published ports and replies still get in", func(t *testing.T) {
		hostTCP := netip.AddrPortFrom(n.HostIP, 8080).String()
		res, err := n.Outside.Dial("tcp", hostTCP)
		expect(t, res, err, n.OutsideIP, hostTCP)
		server := netip.AddrPortFrom(n.OutsideIP, 80).String()
		res, err = n.A.Dial("tcp", server)
		expect(t, res, err, n.HostIP, server)
	})

	t.Run("the host's own address in a network answers as itself", func(t *testing.T) {
		// The gateway is the host's: the outside may reach it (the
		// default deny spares it), and its answers must come from it,
		// not be masqueraded like a container's packets.
		var ln net.Listener
		if err := n.Host.Do(func() (err error) {
			ln, err = net.Listen("tcp4", netip.AddrPortFrom(n.Gateway, 2222).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		if from, err := n.Outside.Ping(n.Gateway, 0x2222); err != nil || from != n.Gateway {
			t.Errorf("ping the host's address %s in network 1 from outside: reply from %s, %v", n.Gateway, from, err)
		}
		var c net.Conn
		err := n.Outside.Do(func() (err error) {
			c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(n.Gateway, 2222).String(), negativeDial)
			return err
		})
		if err != nil {
			t.Errorf("connect from outside to a host listener on %s:2222: %v (counters: %s)", n.Gateway, err, counters(t, n.pins))
		} else {
			c.Close()
		}
	})

	t.Run("a routed network lets the outside in", func(t *testing.T) {
		// Routed as Docker's gateway mode "routed": no masquerade, the
		// containers' own addresses on the wire.
		if err := maps.NewNetworks(openPinned(t, n.pins, "networks")).Put(maps.Network{
			Subnet: n.Subnet1, Gateway: n.Gateway, ID: 1, Routed: true,
		}); err != nil {
			t.Fatal(err)
		}
		if err := sendUDP(n.Outside, netip.AddrPort{}, netip.AddrPortFrom(n.CIP, 5300), []byte("not routed"), 1); err != nil {
			t.Fatal(err)
		}
		deliver(t, "a datagram to a routed network's container", func() error {
			return sendUDP(n.Outside, netip.AddrPort{}, udpA, []byte("routed"), 1)
		}, func() bool {
			return inboxA.WaitFor(func(d testenv.Datagram) bool { return d.From == n.OutsideIP && string(d.Payload) == "routed" }, 1, 0) > 0
		})
		direct := netip.AddrPortFrom(n.AIP, 80).String()
		res, err := n.Outside.Dial("tcp", direct)
		expect(t, res, err, n.OutsideIP, direct)

		time.Sleep(settle)
		if got := inboxC.Received(); len(got) > 0 {
			t.Errorf("network 2, not routed, received %d datagrams from outside", len(got))
		}
		if got := atC.Count(fromOutside); got > 0 {
			t.Errorf("%d packets from the outside reached network 2's container, which is not routed", got)
		}
	})
}

// TestSecurityNetworksIsolatedForEveryPacket: containers of two networks
// cannot reach each other with fragments or with any IP protocol, while
// the same packets within one network arrive.
func TestSecurityNetworksIsolatedForEveryPacket(t *testing.T) {
	testenv.RequirePrivileges(t)
	n := newTwoNetworks(t, false, false)
	const (
		size   = 3000 // twice the MTU: three fragments
		udpDst = 5300
	)
	type peer struct {
		ns       *testenv.Netns
		ip       netip.Addr
		udp, gre *testenv.Inbox
		tap      *testenv.Sniffer
	}
	listen := func(ns *testenv.Netns, ip netip.Addr) *peer {
		return &peer{ns: ns, ip: ip,
			udp: ns.ListenInbox(t, "udp4", fmt.Sprintf(":%d", udpDst)),
			gre: ns.ListenInbox(t, "ip4:47", "0.0.0.0"),
			tap: ns.Sniff(t, "eth0"),
		}
	}
	a, b, c := listen(n.A, n.AIP), listen(n.B, n.BIP), listen(n.C, n.CIP)
	// The probes: a datagram and an echo request of twice the MTU, which
	// leave as three fragments each, and a GRE packet.
	sendBig := func(from, to *peer) error {
		return sendUDP(from.ns, netip.AddrPort{}, netip.AddrPortFrom(to.ip, udpDst), bytes.Repeat([]byte{'u'}, size), 1)
	}
	sendIPv4 := func(from *peer, ls ...gopacket.SerializableLayer) error {
		p, err := testenv.Serialize(ls...)
		if err != nil {
			return err
		}
		return from.ns.SendIPv4(p)
	}
	sendGRE := func(from, to *peer) error {
		return sendIPv4(from, testenv.IPv4Header(from.ip, to.ip, layers.IPProtocolGRE),
			&layers.GRE{Protocol: layers.EthernetTypeIPv4}, gopacket.Payload("pontoon gre"))
	}
	// A later fragment whose first never comes: nothing on the way has
	// seen its ports.
	sendLoneFragment := func(from, to *peer) error {
		ip := testenv.IPv4Header(from.ip, to.ip, layers.IPProtocolUDP)
		ip.FragOffset = 1480 / 8
		return sendIPv4(from, ip, gopacket.Payload(bytes.Repeat([]byte{'l'}, 100)))
	}
	fragmentsFrom := func(src netip.Addr) func([]byte) bool {
		return func(f []byte) bool {
			ip, ok := testenv.ParseIPv4(f)
			return ok && ip.Src == src && ip.Fragment
		}
	}

	t.Run("the probes arrive within a network", func(t *testing.T) {
		deliver(t, "a fragmented datagram from A to B", func() error { return sendBig(a, b) }, func() bool {
			return b.udp.WaitFor(func(d testenv.Datagram) bool { return d.From == n.AIP && len(d.Payload) == size }, 1, 0) > 0
		})
		deliver(t, "GRE from A to B", func() error { return sendGRE(a, b) }, func() bool {
			return b.gre.WaitFor(func(d testenv.Datagram) bool { return d.From == n.AIP }, 1, 0) > 0
		})
		deliver(t, "a lone later fragment from A to B", func() error { return sendLoneFragment(a, b) }, func() bool {
			return b.tap.Count(func(f []byte) bool {
				ip, ok := testenv.ParseIPv4(f)
				return ok && ip.Src == n.AIP && ip.Fragment && bytes.HasPrefix(ip.Payload, []byte("llll"))
			}) > 0
		})
		var (
			from netip.Addr
			err  error
		)
		for i := range 3 {
			if from, err = n.A.PingSize(n.BIP, uint16(0x3000+i), size, time.Second); err == nil {
				break
			}
		}
		if err != nil || from != n.BIP {
			t.Fatalf("a fragmented ping from A to B: reply from %s, %v", from, err)
		}
		// The tap's reader may lag behind the replies.
		if got := b.tap.WaitFor(fragmentsFrom(n.AIP), 6, 2*time.Second); got < 6 {
			t.Errorf("B saw %d fragments from A, want the datagram's and the ping's (at least 6)", got)
		}
	})

	t.Run("nothing crosses networks", func(t *testing.T) {
		before := readStats(t, n.pins)
		var wg sync.WaitGroup
		pingErrs := make([]error, 2)
		for i, dir := range [][2]*peer{{a, c}, {c, a}} {
			from, to := dir[0], dir[1]
			if err := sendBig(from, to); err != nil {
				t.Fatal(err)
			}
			if err := sendGRE(from, to); err != nil {
				t.Fatal(err)
			}
			if err := sendLoneFragment(from, to); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, pingErrs[i] = from.ns.PingSize(to.ip, uint16(0x3100+i), size, settle)
			}()
		}
		wg.Wait()
		time.Sleep(settle)
		for i, dir := range [][2]*peer{{a, c}, {c, a}} {
			from, to := dir[0], dir[1]
			what := fmt.Sprintf("%s to %s", from.ip, to.ip)
			if pingErrs[i] == nil {
				t.Errorf("%s: a fragmented ping across networks was answered", what)
			}
			if got := to.udp.Received(); len(got) > 0 {
				t.Errorf("%s: %d UDP datagrams arrived", what, len(got))
			}
			if got := to.gre.Received(); len(got) > 0 {
				t.Errorf("%s: %d GRE packets arrived", what, len(got))
			}
			if got := to.tap.Count(testenv.FromIPv4(from.ip)); got > 0 {
				t.Errorf("%s: %d packets reached eth0 (%d of them fragments)", what, got, to.tap.Count(fragmentsFrom(from.ip)))
			}
		}
		// Both ways: three fragments each of the datagram and the ping,
		// the GRE packet and the lone fragment.
		if d := moved(before, readStats(t, n.pins), "drop_isolation"); d < 16 {
			t.Errorf("drop_isolation moved by %d, want at least 16 (counters: %s)", d, counters(t, n.pins))
		}
	})

	t.Run("an ICMP error quoting a mangled header crosses no network either", func(t *testing.T) {
		// A port unreachable about a UDP flow of the victim's, quoting a
		// header whose version nibble is not 4. The datapath's parser
		// calls the packet malformed; the victim's kernel does not check
		// the quoted version and hands the error to the socket.
		server := netip.AddrPortFrom(n.OutsideIP, 53)
		unreachable := func(from, to *peer) error {
			quoted := make([]byte, 28)
			quoted[0] = 0x65 // version 6, IHL 5
			binary.BigEndian.PutUint16(quoted[2:], 28)
			quoted[8], quoted[9] = 64, byte(layers.IPProtocolUDP)
			copy(quoted[12:16], to.ip.AsSlice())
			copy(quoted[16:20], server.Addr().AsSlice())
			binary.BigEndian.PutUint16(quoted[20:], 5555)
			binary.BigEndian.PutUint16(quoted[22:], server.Port())
			binary.BigEndian.PutUint16(quoted[24:], 8)
			return sendIPv4(from, testenv.IPv4Header(from.ip, to.ip, layers.IPProtocolICMPv4),
				&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)},
				gopacket.Payload(quoted))
		}
		refused := func(conn *net.UDPConn) bool {
			conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := conn.Read(make([]byte, 64))
			return errors.Is(err, unix.ECONNREFUSED)
		}
		atB := udpConn(t, n.B, netip.AddrPortFrom(n.BIP, 5555), server)
		atC := udpConn(t, n.C, netip.AddrPortFrom(n.CIP, 5555), server)
		// Within a network it arrives, and the victim's socket takes it.
		deliver(t, "the mangled port unreachable from A to B", func() error { return unreachable(a, b) },
			func() bool { return refused(atB) })
		before := readStats(t, n.pins)
		if err := unreachable(a, c); err != nil {
			t.Fatal(err)
		}
		time.Sleep(settle)
		if got := c.tap.Count(testenv.FromIPv4(n.AIP)); got > 0 {
			t.Errorf("%d ICMP errors from network 1 reached C's eth0", got)
		}
		if refused(atC) {
			t.Errorf("C's UDP socket took ECONNREFUSED from a container of another network")
		}
		if d := moved(before, readStats(t, n.pins), "drop_isolation"); d < 1 {
			t.Errorf("drop_isolation did not move (counters: %s)", counters(t, n.pins))
		}
	})
}

// TestSecurityEndpointsSendOnlyAsThemselves: with icc=false, a container
// can reach its neighbour neither by sending from an address that is not
// its own, nor by claiming the neighbour's address in ARP, nor over IPv6
// from an address not its own;
// and once its MAC is recorded it cannot send from another.
func TestSecurityEndpointsSendOnlyAsThemselves(t *testing.T) {
	testenv.RequirePrivileges(t)
	n := newTwoNetworks(t, false, true)
	macA, macB := n.A.HardwareAddr(t, "eth0"), n.B.HardwareAddr(t, "eth0")
	n.B.ServeTCP(t, ":80")
	inboxB := n.B.ListenInbox(t, "udp4", ":5300")
	atB := n.B.Sniff(t, "eth0")
	sentByA := n.Host.Sniff(t, n.AVeth) // before tc: what A put on the wire

	t.Run("from an address that is not its own", func(t *testing.T) {
		// An unused address of the neighbour's subnet, and one of no
		// Pontoon network at all. A knows B's MAC already, so its IP
		// packets leave without asking ARP (whose check comes first).
		unused, foreign := netip.MustParseAddr("10.89.0.77"), netip.MustParseAddr("192.0.2.77")
		n.A.IP(t, "addr", "add", unused.String()+"/24", "dev", "eth0")
		n.A.IP(t, "addr", "add", foreign.String()+"/32", "dev", "eth0")
		n.A.IP(t, "neigh", "replace", n.BIP.String(), "lladdr", macB.String(), "dev", "eth0", "nud", "permanent")
		before := readStats(t, n.pins)
		var wg sync.WaitGroup
		dialErrs := make([]error, 2)
		for i, src := range []netip.Addr{unused, foreign} {
			if err := sendUDP(n.A, netip.AddrPortFrom(src, 0), netip.AddrPortFrom(n.BIP, 5300), []byte("spoofed"), 2); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, dialErrs[i] = dialWithin(n.A, netip.AddrPortFrom(src, 0), netip.AddrPortFrom(n.BIP, 80), negativeDial)
			}()
		}
		wg.Wait()
		time.Sleep(settle)
		for i, src := range []netip.Addr{unused, foreign} {
			if sent := sentByA.WaitFor(testenv.FromIPv4(src), 3, 2*time.Second); sent < 3 {
				t.Errorf("the tap on A's veth saw %d packets from %s, want the datagrams and a SYN: the probe did not leave A", sent, src)
			}
			if got := atB.Count(testenv.FromIPv4(src)); got > 0 {
				t.Errorf("%d packets from A's extra address %s reached B", got, src)
			}
			if dialErrs[i] == nil {
				t.Errorf("A connected to B from %s despite icc=false", src)
			}
		}
		if got := inboxB.Received(); len(got) > 0 {
			t.Errorf("B received %d datagrams sent from addresses A does not own", len(got))
		}
		if d := moved(before, readStats(t, n.pins), "drop_spoofed"); d < 6 {
			t.Errorf("drop_spoofed moved by %d, want at least 6 (counters: %s)", d, counters(t, n.pins))
		}
	})

	t.Run("ARP claiming the neighbour's address", func(t *testing.T) {
		atHost := n.Host.Sniff(t, n.Bridge)
		garp := func(claim netip.Addr) []byte {
			return serialize(t,
				&layers.Ethernet{SrcMAC: macA, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
				&layers.ARP{
					AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
					HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPReply,
					SourceHwAddress: macA, SourceProtAddress: claim.AsSlice(),
					DstHwAddress: layers.EthernetBroadcast, DstProtAddress: claim.AsSlice(),
				})
		}
		claims := func(claim netip.Addr) func([]byte) bool {
			return func(f []byte) bool {
				p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.NoCopy)
				arp, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
				return ok && bytes.Equal(arp.SourceHwAddress, macA) && bytes.Equal(arp.SourceProtAddress, claim.AsSlice())
			}
		}
		before := readStats(t, n.pins)
		// A's own gratuitous ARP, sent right after, is the control: it
		// must get through.
		deliver(t, "A's gratuitous ARP for its own address", func() error {
			return n.A.SendFrames("eth0", garp(n.BIP), garp(n.AIP))
		}, func() bool { return atB.Count(claims(n.AIP)) > 0 })
		time.Sleep(settle)
		if got := atB.Count(claims(n.BIP)); got > 0 {
			t.Errorf("A's ARP claiming B's address %s reached B", n.BIP)
		}
		if got := atHost.Count(claims(n.BIP)); got > 0 {
			t.Errorf("A's ARP claiming B's address %s reached the host's bridge", n.BIP)
		}
		if d := moved(before, readStats(t, n.pins), "drop_spoofed"); d < 1 {
			t.Errorf("drop_spoofed did not move (counters: %s)", counters(t, n.pins))
		}
	})

	t.Run("IPv6", func(t *testing.T) {
		marker := []byte("pontoon ipv6 probe")
		v6 := func(dstMAC net.HardwareAddr, dst netip.Addr) []byte {
			ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
				SrcIP: net.ParseIP("fe80::a"), DstIP: dst.AsSlice()}
			udp := &layers.UDP{SrcPort: 5300, DstPort: 5300}
			udp.SetNetworkLayerForChecksum(ip)
			return serialize(t, &layers.Ethernet{SrcMAC: macA, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6},
				ip, udp, gopacket.Payload(marker))
		}
		carries := func(f []byte) bool { return bytes.Contains(f, marker) }
		before := readStats(t, n.pins)
		deliver(t, "IPv6 from A to its veth", func() error {
			return n.A.SendFrames("eth0",
				v6(macB, netip.MustParseAddr("fe80::b")),
				v6(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, netip.MustParseAddr("ff02::1")))
		}, func() bool { return sentByA.Count(carries) >= 2 })
		time.Sleep(settle)
		if got := atB.Count(carries); got > 0 {
			t.Errorf("%d IPv6 packets from A reached B", got)
		}
		// fe80::a is no address of A's (A, on an IPv4 network, has no
		// IPv6 one at all).
		if d := moved(before, readStats(t, n.pins), "drop_spoofed"); d < 2 {
			t.Errorf("drop_spoofed moved by %d, want at least 2 (counters: %s)", d, counters(t, n.pins))
		}
	})

	t.Run("from another MAC, once the endpoint's is recorded", func(t *testing.T) {
		endpoints := maps.NewEndpoints(openPinned(t, n.pins, "endpoints"))
		want := map[netip.Addr]maps.EndpointValue{}
		for _, e := range []struct {
			ns   *testenv.Netns
			ip   netip.Addr
			veth string
			id   uint32
		}{{n.A, n.AIP, n.AVeth, 1}, {n.B, n.BIP, n.BVeth, 1}, {n.C, n.CIP, "pvc" + n.ID, 2}} {
			want[e.ip] = maps.EndpointValue{Ifindex: uint32(ifindexIn(t, n.Host, e.veth)), NetworkID: e.id,
				MAC: [6]byte(e.ns.HardwareAddr(t, "eth0"))}
		}
		if err := endpoints.Sync(want); err != nil {
			t.Fatal(err)
		}
		inboxHost := n.Host.ListenInbox(t, "udp4", netip.AddrPortFrom(n.Gateway, 5999).String())
		gatewayMAC := n.Host.HardwareAddr(t, n.Bridge)
		forged := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
		frame := func(src net.HardwareAddr, msg string) []byte {
			ip := testenv.IPv4Header(n.AIP, n.Gateway, layers.IPProtocolUDP)
			udp := &layers.UDP{SrcPort: 40000, DstPort: 5999}
			udp.SetNetworkLayerForChecksum(ip)
			return serialize(t, &layers.Ethernet{SrcMAC: src, DstMAC: gatewayMAC, EthernetType: layers.EthernetTypeIPv4},
				ip, udp, gopacket.Payload(msg))
		}
		before := readStats(t, n.pins)
		says := func(msg string) func(testenv.Datagram) bool {
			return func(d testenv.Datagram) bool { return string(d.Payload) == msg }
		}
		deliver(t, "A's datagram from its own address and MAC to the host", func() error {
			return n.A.SendFrames("eth0", frame(forged, "forged mac"), frame(macA, "own mac"))
		}, func() bool { return inboxHost.WaitFor(says("own mac"), 1, 0) > 0 })
		time.Sleep(settle)
		if inboxHost.WaitFor(says("forged mac"), 1, 0) > 0 {
			t.Error("A's datagram from its own address but another MAC reached the host")
		}
		if d := moved(before, readStats(t, n.pins), "drop_spoofed"); d < 1 {
			t.Errorf("drop_spoofed did not move (counters: %s)", counters(t, n.pins))
		}
	})
}

// TestSecurityPublishedPortsReservedOnHost: a published port belongs to
// its container, as docker-proxy's socket made it: a host process binding
// it fails with EADDRINUSE, until it is unpublished; other ports,
// protocols and addresses stay free, and containers bind what they like
// in their own namespaces.
func TestSecurityPublishedPortsReservedOnHost(t *testing.T) {
	testenv.RequirePrivileges(t)
	if !testenv.KernelAtLeast(t, 5, 18) {
		t.Skip("published-port reservation needs Linux 5.18 (bpf_set_retval); below it the bind hooks are not loaded (TestKernelFeatures)")
	}
	n := newTwoNetworks(t, false, false)
	bindings := maps.NewBindings(openPinned(t, n.pins, "bindings"))
	any4, loopback := netip.IPv4Unspecified(), netip.MustParseAddr("127.0.0.1")
	published := []maps.Binding{
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any4, 8080), Backend: netip.AddrPortFrom(n.AIP, 80), ID: 1},
		{Proto: maps.UDP, Host: netip.AddrPortFrom(n.HostIP, 9090), Backend: netip.AddrPortFrom(n.AIP, 53), ID: 2},
		{Proto: maps.TCP, Host: netip.AddrPortFrom(loopback, 7070), Backend: netip.AddrPortFrom(n.AIP, 80), ID: 3},
	}
	if err := bindings.PutBatch(published); err != nil {
		t.Fatal(err)
	}
	at := func(network string, a netip.Addr, port uint16) testenv.Bind {
		return testenv.Bind{Network: network, Addr: netip.AddrPortFrom(a, port)}
	}
	taken := []testenv.Bind{
		at("tcp4", any4, 8080), at("tcp4", n.HostIP, 8080), at("tcp4", loopback, 8080), at("tcp4", n.Gateway, 8080),
		at("udp4", any4, 9090), at("udp4", n.HostIP, 9090),
		at("tcp4", loopback, 7070), at("tcp4", any4, 7070),
	}
	free := []testenv.Bind{
		at("tcp4", any4, 8081),
		at("udp4", any4, 8080),                                  // the other protocol
		at("tcp4", n.HostIP, 9090),                              // the other protocol
		at("udp4", loopback, 9090), at("udp4", n.Gateway, 9090), // published on HostIP only
		at("tcp4", n.HostIP, 7070), // published on loopback only
	}

	t.Run("host processes cannot take published ports", func(t *testing.T) {
		before := readStats(t, n.pins)
		errs := n.Host.BindFrom(t, n.cgroup, append(append([]testenv.Bind(nil), taken...), free...)...)
		for i, b := range taken {
			if !errors.Is(errs[i], unix.EADDRINUSE) {
				t.Errorf("host bind %s: %v, want EADDRINUSE", b, errs[i])
			}
		}
		for i, b := range free {
			if err := errs[len(taken)+i]; err != nil {
				t.Errorf("host bind %s, which no binding covers: %v", b, err)
			}
		}
		if d := moved(before, readStats(t, n.pins), "sock_bind_refused"); d != uint64(len(taken)) {
			t.Errorf("sock_bind_refused moved by %d, want %d", d, len(taken))
		}
	})

	t.Run("containers bind published ports in their own namespaces", func(t *testing.T) {
		own := []testenv.Bind{
			at("tcp4", any4, 8080), at("tcp4", n.AIP, 8080), at("tcp4", loopback, 8080),
			at("udp4", any4, 9090), at("tcp4", loopback, 7070),
		}
		for i, err := range n.A.BindFrom(t, n.cgroup, own...) {
			if err != nil {
				t.Errorf("container bind %s: %v", own[i], err)
			}
		}
	})

	t.Run("dual-stack IPv6 sockets cannot take them either", func(t *testing.T) {
		// An IPv6 socket without IPV6_V6ONLY takes the IPv4 port too: it
		// is what most servers open ("[::]:8080", Go's ":8080").
		mapped := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
		taken6 := []testenv.Bind{
			at("tcp6", netip.IPv6Unspecified(), 8080), at("udp6", netip.IPv6Unspecified(), 9090),
			at("tcp6", mapped(n.HostIP), 8080), at("tcp6", mapped(loopback), 7070),
		}
		errs := n.Host.BindFrom(t, n.cgroup, append(taken6, at("tcp6", netip.IPv6Unspecified(), 8081))...)
		for i, b := range taken6 {
			if !errors.Is(errs[i], unix.EADDRINUSE) {
				t.Errorf("host bind %s: %v, want EADDRINUSE", b, errs[i])
			}
		}
		if err := errs[len(taken6)]; err != nil {
			t.Errorf("host bind tcp6 [::]:8081, which no binding covers: %v", err)
		}
	})

	t.Run("unpublished ports are free again", func(t *testing.T) {
		var keys []maps.BindingKey
		for _, b := range published {
			keys = append(keys, b.Key())
		}
		if err := bindings.DeleteBatch(keys); err != nil {
			t.Fatal(err)
		}
		for i, err := range n.Host.BindFrom(t, n.cgroup, taken...) {
			if err != nil {
				t.Errorf("host bind %s after unpublishing: %v", taken[i], err)
			}
		}
	})
}

// TestSecurityMasqueradeAvoidsHostSockets: a container's flow is never
// given a source port whose replies a socket of the host would take, even
// when the container asks for exactly that port and it lies inside the
// SNAT range.
func TestSecurityMasqueradeAvoidsHostSockets(t *testing.T) {
	testenv.RequirePrivileges(t)
	n := newTwoNetworks(t, false, false)
	const snatMin, snatMax = 20000, 20100
	cfg := maps.NewConfig(openPinned(t, n.pins, "config"))
	v, err := cfg.Get()
	if err != nil {
		t.Fatal(err)
	}
	v.SnatPortMin, v.SnatPortMax = snatMin, snatMax
	if err := cfg.Set(v); err != nil {
		t.Fatal(err)
	}
	// A server port for each case: a flow the container opened in one
	// case may hold, by chance, the port the host binds in the next, and
	// the check is made when a flow claims its port, not when the host
	// binds one later.
	server := func(t *testing.T, proto string, port uint16) netip.AddrPort {
		if proto == "udp" {
			n.Outside.ServeUDP(t, fmt.Sprintf(":%d", port))
		} else {
			n.Outside.ServeTCP(t, fmt.Sprintf(":%d", port))
		}
		return netip.AddrPortFrom(n.OutsideIP, port)
	}

	// translatedPort checks the server saw the container at the uplink
	// address, from a port of the SNAT range other than the host's.
	translatedPort := func(t *testing.T, reply string, hostPort uint16) {
		t.Helper()
		peer, _, err := testenv.ParseEcho(reply)
		if err != nil {
			t.Fatal(err)
		}
		seen, err := netip.ParseAddrPort(peer)
		if err != nil {
			t.Fatal(err)
		}
		if seen.Addr() != n.HostIP || seen.Port() == hostPort || seen.Port() < snatMin || seen.Port() > snatMax {
			t.Errorf("the server saw the container as %s, want %s with a port of %d-%d other than the host socket's %d",
				seen, n.HostIP, snatMin, snatMax, hostPort)
		}
	}

	t.Run("a host's UDP flow", func(t *testing.T) {
		const port = 20050
		udpServer := server(t, "udp", 53)
		host := udpConn(t, n.Host, netip.AddrPortFrom(n.HostIP, port), udpServer)
		udpExchange(t, host, "host before", netip.AddrPortFrom(n.HostIP, port))
		container := udpConn(t, n.A, netip.AddrPortFrom(netip.IPv4Unspecified(), port), udpServer)
		translatedPort(t, udpExchange(t, container, "container", netip.AddrPort{}), port)
		// The server's answers to the host's port still reach the host,
		// and none of them the container.
		udpExchange(t, host, "host after", netip.AddrPortFrom(n.HostIP, port))
		container.SetReadDeadline(time.Now().Add(settle))
		buf := make([]byte, 512)
		for {
			nr, err := container.Read(buf)
			if err != nil {
				break
			}
			if strings.Contains(string(buf[:nr]), "msg=host") {
				t.Errorf("the container's socket received the server's answer to the host: %q", buf[:nr])
			}
		}
	})

	t.Run("a host's UDP socket bound to every address", func(t *testing.T) {
		const port = 20060
		udpServer := server(t, "udp", 54)
		var host *net.UDPConn
		if err := n.Host.Do(func() (err error) {
			host, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { host.Close() })
		container := udpConn(t, n.A, netip.AddrPortFrom(netip.IPv4Unspecified(), port), udpServer)
		translatedPort(t, udpExchange(t, container, "container", netip.AddrPort{}), port)
		buf := make([]byte, 512)
		answered := false
		for range 3 {
			if _, err := host.WriteToUDPAddrPort([]byte("host"), udpServer); err != nil {
				t.Fatal(err)
			}
			host.SetReadDeadline(time.Now().Add(time.Second))
			if nr, err := host.Read(buf); err == nil && strings.Contains(string(buf[:nr]), "msg=host") {
				answered = true
				break
			}
		}
		if !answered {
			t.Errorf("the host's socket on port %d got no answer from the server in three tries (counters: %s)", port, counters(t, n.pins))
		}
	})

	t.Run("a host's TCP connection", func(t *testing.T) {
		const port = 20070
		tcpServer := server(t, "tcp", 80)
		host := connectIdle(t, n.Host, netip.AddrPortFrom(n.HostIP, port), tcpServer)
		host.roundTrip(t, "host before", n.HostIP)
		reply, err := dialWithin(n.A, netip.AddrPortFrom(netip.IPv4Unspecified(), port), tcpServer, 3*time.Second)
		if err != nil {
			t.Fatalf("the container's connection from port %d: %v (counters: %s)", port, err, counters(t, n.pins))
		}
		translatedPort(t, reply, port)
		host.roundTrip(t, "host after", n.HostIP)
	})

	t.Run("a host's TCP listener", func(t *testing.T) {
		const port = 20080
		tcpServer := server(t, "tcp", 81)
		var ln net.Listener
		if err := n.Host.Do(func() (err error) {
			ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		reply, err := dialWithin(n.A, netip.AddrPortFrom(netip.IPv4Unspecified(), port), tcpServer, 3*time.Second)
		if err != nil {
			t.Fatalf("the container's connection from port %d: %v", port, err)
		}
		translatedPort(t, reply, port)
	})

	t.Run("a host's ping identifier", func(t *testing.T) {
		// An echo's identifier is an ICMP flow's port: the kernel's ping
		// sockets bind one as they bind ports, and the server's replies
		// find the socket by it.
		const ident = 20090
		n.Host.Sysctl(t, "net.ipv4.ping_group_range", "0 0")
		ping := pingSocket(t, n.Host, ident)
		if err := ping.echo(n.OutsideIP, 1); err != nil {
			t.Fatalf("the host's ping before: %v", err)
		}
		if from, err := n.A.Ping(n.OutsideIP, ident); err != nil || from != n.OutsideIP {
			t.Fatalf("the container's ping with identifier %d: reply from %s, %v", ident, from, err)
		}
		if err := ping.echo(n.OutsideIP, 2); err != nil {
			t.Errorf("the host's ping with identifier %d after a container's: %v (counters: %s)", ident, err, counters(t, n.pins))
		}
	})
}

// TestSecuritySYNFloodSparesEstablished: a flood of spoofed SYNs at a
// published port, many times the size of the table unanswered flows live
// in, leaves an idle established connection through that port working.
func TestSecuritySYNFloodSparesEstablished(t *testing.T) {
	testenv.RequirePrivileges(t)
	n := newTwoNetworks(t, false, false)
	// The container's SYN-ACKs to the spoofed sources leave through the
	// uplink, as they would on a real host: on their way they are
	// translated, which an LRU table counts as a use of the flood's
	// entries. They die in the outside namespace, which does not forward
	// and has a blackhole for them besides.
	for _, p := range testenv.DocumentationRanges {
		n.Host.IP(t, "route", "add", p.String(), "via", n.OutsideIP.String())
		n.Outside.IP(t, "route", "add", "blackhole", p.String())
	}
	n.A.ServeTCP(t, ":80")
	if err := maps.NewBindings(openPinned(t, n.pins, "bindings")).Put(maps.Binding{
		Proto: maps.TCP, Host: netip.AddrPortFrom(netip.IPv4Unspecified(), 8080), Backend: netip.AddrPortFrom(n.AIP, 80), ID: 1,
	}); err != nil {
		t.Fatal(err)
	}
	ct, ctNew := openPinned(t, n.pins, "ct"), openPinned(t, n.pins, "ct_new")
	published := netip.AddrPortFrom(n.HostIP, 8080)

	// Idle for real: no keepalive probes refresh its entry during the flood.
	conn := connectIdle(t, n.Outside, netip.AddrPort{}, published)
	conn.roundTrip(t, "before the flood", n.OutsideIP)
	client := conn.LocalAddr().String()
	if got := ctEntriesFor(t, ct, client); got != 1 {
		t.Fatalf("ct holds %d entries for the established connection from %s, want 1", got, client)
	}

	// The flood goes on until the datapath has translated four times
	// ct_new's worth of SYNs, each a flow of its own: ct_new has turned
	// over four times, and every SYN had its chance to evict the idle
	// connection. A goal counted by the datapath, not SYNs sent in a
	// time, holds at any speed (TCG on 5.10 sends ~1,700 a second). The
	// limit only catches a flood that stalls.
	ctNewSize := int(ctNew.MaxEntries())
	goal := uint64(4 * ctNewSize)
	before := readStats(t, n.pins)
	stats := maps.NewStats(openPinned(t, n.pins, "stats"))
	flood := testenv.SYNFlood{
		Dst:     published,
		Sources: testenv.DocumentationRanges,
		Count:   400000,
		Limit:   5 * time.Minute,
		// Runs on the flood's goroutine: no t.Fatal there.
		Enough: func() bool {
			now, err := stats.Read()
			return err == nil && moved(before, now, "dnat") >= goal
		},
	}
	sent, err := n.Outside.FloodSYN(flood)
	if err != nil {
		t.Fatal(err)
	}
	after := readStats(t, n.pins)
	dnat := moved(before, after, "dnat")
	entries, err := maps.NewCT(ctNew).All()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood: %d SYNs in %s; dnat moved by %d; ct_new holds %d of %d", sent.Sent, sent.Elapsed.Round(time.Millisecond), dnat, len(entries), ctNewSize)
	if dnat < goal {
		t.Fatalf("only %d SYNs were translated, want at least %d (four times ct_new) for the flood to mean anything (counters: %s)",
			dnat, goal, counters(t, n.pins))
	}
	if len(entries) < ctNewSize*9/10 {
		t.Errorf("ct_new holds %d entries after the flood, want it (nearly) full: %d", len(entries), ctNewSize)
	}

	// Nothing unanswered made it into ct.
	if answered, err := maps.NewCT(ct).All(); err != nil || len(answered) != 1 || answered[0].Client.String() != client {
		t.Errorf("ct holds %v after the flood (%v), want the established connection from %s alone", answered, err, client)
	}
	conn.roundTrip(t, "after the flood", n.OutsideIP)
	// New clients get in too: their SYN evicts a spoofed one.
	res, err := n.Outside.Dial("tcp", published.String())
	expect(t, res, err, n.OutsideIP, published.String())
}

// deliver sends a probe that must arrive until arrived says it did, up to
// three times: a loaded machine may drop a packet now and then, which is
// not what these tests are about. A probe that never arrives fails the
// test, since the checks that nothing else arrived would mean nothing.
func deliver(t *testing.T, what string, send func() error, arrived func() bool) {
	t.Helper()
	for range 3 {
		if err := send(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if arrived() {
				return
			}
		}
	}
	t.Fatalf("%s: nothing arrived in three tries: the probe does not work", what)
}

// readStats sums the datapath counters.
func readStats(t *testing.T, pins string) map[string]maps.Counter {
	t.Helper()
	s, err := maps.NewStats(openPinned(t, pins, "stats")).Read()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// moved is how many packets a counter gained.
func moved(before, after map[string]maps.Counter, name string) uint64 {
	return after[name].Packets - before[name].Packets
}

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	b, err := testenv.Serialize(ls...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sendUDP sends count copies of payload from inside ns; a zero from
// lets the kernel choose the source.
func sendUDP(ns *testenv.Netns, from, to netip.AddrPort, payload []byte, count int) error {
	err := ns.Do(func() error {
		var laddr *net.UDPAddr
		if from.IsValid() {
			laddr = net.UDPAddrFromAddrPort(from)
		}
		c, err := net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(to))
		if err != nil {
			return err
		}
		defer c.Close()
		for range count {
			if _, err := c.Write(payload); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("send UDP to %s from %s: %w", to, ns.Name, err)
	}
	return nil
}

// dialWithin connects from inside ns, from local when it is valid (a
// port of 0 lets the kernel choose), sends one line to an echo server and
// returns its answer.
func dialWithin(ns *testenv.Netns, local, to netip.AddrPort, timeout time.Duration) (string, error) {
	var reply string
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		if local.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(local)
		}
		c, err := d.Dial("tcp4", to.String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("hello\n")); err != nil {
			return err
		}
		reply, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return reply, err
}

// lineConn is a TCP connection to a line echo server.
type lineConn struct {
	net.Conn
	lines *bufio.Reader
}

// connectIdle opens a TCP connection from inside ns (from local when it is
// valid) without keepalive probes, closed at cleanup.
func connectIdle(t *testing.T, ns *testenv.Netns, local, to netip.AddrPort) *lineConn {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second, KeepAlive: -1}
		if local.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(local)
		}
		c, err = d.Dial("tcp", to.String())
		return err
	}); err != nil {
		t.Fatalf("connect to %s from %s: %v", to, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineConn{Conn: c, lines: bufio.NewReader(c)}
}

// roundTrip sends msg and checks the echo, and that the server saw the
// client at wantSource.
func (c *lineConn) roundTrip(t *testing.T, msg string, wantSource netip.Addr) {
	t.Helper()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		t.Fatalf("connection %s: send %q: %v", c.LocalAddr(), msg, err)
	}
	reply, err := c.lines.ReadString('\n')
	if err != nil {
		t.Fatalf("connection %s: wait for the echo of %q: %v", c.LocalAddr(), msg, err)
	}
	peer, got, err := testenv.ParseEcho(reply)
	seen, perr := netip.ParseAddrPort(peer)
	if err != nil || perr != nil || got != msg || seen.Addr() != wantSource {
		t.Fatalf("connection %s: sent %q, got %q; want its echo, seen from %s", c.LocalAddr(), msg, reply, wantSource)
	}
}

// hostPinger is a kernel ping socket (SOCK_DGRAM, IPPROTO_ICMP) bound to
// an echo identifier.
type hostPinger struct{ fd int }

func pingSocket(t *testing.T, ns *testenv.Netns, ident uint16) *hostPinger {
	t.Helper()
	p := &hostPinger{fd: -1}
	if err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("open ping socket: %w", err)
		}
		p.fd = fd
		tv := unix.NsecToTimeval((3 * time.Second).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Port: int(ident)})
	}); err != nil {
		if p.fd >= 0 {
			unix.Close(p.fd)
		}
		t.Fatalf("ping socket with identifier %d in %s: %v", ident, ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(p.fd) })
	return p
}

// echo sends one echo request and waits for its reply.
func (p *hostPinger) echo(dst netip.Addr, seq uint16) error {
	req := []byte{8, 0, 0, 0, 0, 0, byte(seq >> 8), byte(seq), 'h', 'o', 's', 't'}
	if err := unix.Sendto(p.fd, req, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
		return fmt.Errorf("send echo: %w", err)
	}
	buf := make([]byte, 512)
	for {
		nr, _, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			return fmt.Errorf("wait for the echo reply %d: %w", seq, err)
		}
		if nr >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[6:]) == seq {
			return nil
		}
	}
}

// udpConn is a connected UDP socket made inside ns, closed at cleanup.
func udpConn(t *testing.T, ns *testenv.Netns, local, remote netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(remote))
		return err
	}); err != nil {
		t.Fatalf("UDP socket %s -> %s in %s: %v", local, remote, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpExchange sends msg to the echo server and returns its answer to
// msg, sending again (up to three times) when none comes; wantSeen, when
// set, is where the server must have seen it from.
func udpExchange(t *testing.T, c *net.UDPConn, msg string, wantSeen netip.AddrPort) string {
	t.Helper()
	buf := make([]byte, 512)
	for range 3 {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			nr, err := c.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatalf("wait for the server's answer to %q on %s: %v", msg, c.LocalAddr(), err)
			}
			reply := string(buf[:nr])
			peer, got, err := testenv.ParseEcho(reply)
			if err != nil || got != msg {
				t.Errorf("socket %s sending %q received %q instead", c.LocalAddr(), msg, reply)
				continue
			}
			if wantSeen.IsValid() && peer != wantSeen.String() {
				t.Errorf("the server saw %q from %s, want %s", msg, peer, wantSeen)
			}
			return reply
		}
	}
	t.Fatalf("no answer from the server to %q on %s in three tries", msg, c.LocalAddr())
	return ""
}
