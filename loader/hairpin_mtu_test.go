package loader_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// hairpinMTU is network 1's MTU in TestHairpinFragNeeded: smaller than
// network 2's 1500.
const hairpinMTU = 1280

// TestHairpinFragNeeded: a container of network 2 (MTU 1500) reaches a
// port published by a container of network 1 (MTU 1280) through the
// bridge's hairpin. A DF datagram too big for network 1 is answered with
// ICMP "fragmentation needed" naming 1280, from the address it dialled,
// so the sender's path MTU drops to 1280 and a datagram that fits then
// gets through; TCP bulk transfers through the same hairpin complete.
func TestHairpinFragNeeded(t *testing.T) {
	testenv.RequirePrivileges(t)
	n := newTwoNetworks(t, false, false)
	w := n.World
	for _, dev := range []string{w.Bridge, w.AVeth} {
		w.Host.IP(t, "link", "set", dev, "mtu", fmt.Sprint(hairpinMTU))
	}
	w.A.IP(t, "link", "set", "eth0", "mtu", fmt.Sprint(hairpinMTU))
	w.A.ServeDatagramEcho(t, ":53")
	w.A.ServeBulk(t, ":9000")
	any4 := netip.IPv4Unspecified()
	if err := maps.NewBindings(openPinned(t, n.pins, "bindings")).PutBatch([]maps.Binding{
		{Proto: maps.UDP, Host: netip.AddrPortFrom(any4, 5353), Backend: netip.AddrPortFrom(w.AIP, 53), ID: 1},
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any4, 9000), Backend: netip.AddrPortFrom(w.AIP, 9000), ID: 2},
	}); err != nil {
		t.Fatal(err)
	}
	dialled := netip.AddrPortFrom(w.HostIP, 5353)

	t.Run("a DF datagram over the MTU earns frag-needed with the MTU", func(t *testing.T) {
		if !testenv.KernelAtLeast(t, 5, 12) {
			t.Skip("below Linux 5.12 the FIB lookup reports no MTU to name: the datagram is only dropped")
		}
		expectPathMTU(t, n.C, n.pins, dialled)
	})

	t.Run("a datagram at the MTU gets through", func(t *testing.T) {
		if err := n.C.EchoDatagrams(dialled.String(), hairpinMTU-28, 3); err != nil {
			t.Fatalf("%v\ndatapath counters: %s", err, counters(t, n.pins))
		}
	})

	hairpinBulk(t, n.C, n.pins, netip.AddrPortFrom(w.HostIP, 9000))
}

// expectPathMTU: a 1400-byte datagram that may not be fragmented, sent
// from ns to dialled through the hairpin, teaches ns's kernel the path MTU
// hairpinMTU, and is counted drop_frag_needed.
func expectPathMTU(t *testing.T, ns *testenv.Netns, pins string, dialled netip.AddrPort) {
	t.Helper()
	mtu, err := learnPathMTU(ns, dialled, 1400)
	if err != nil {
		t.Fatalf("%v\ndatapath counters: %s", err, counters(t, pins))
	}
	if mtu != hairpinMTU {
		t.Fatalf("path MTU to %s is %d after a 1400-byte datagram, want %d\ndatapath counters: %s", dialled, mtu, hairpinMTU, counters(t, pins))
	}
	stats, err := maps.NewStats(openPinned(t, pins, "stats")).Read()
	if err != nil {
		t.Fatal(err)
	}
	if stats["drop_frag_needed"].Packets == 0 {
		t.Errorf("the datagram too big is not counted as drop_frag_needed: %s", counters(t, pins))
	}
}

// hairpinBulk moves a bulk transfer each way from ns to addr.
func hairpinBulk(t *testing.T, ns *testenv.Netns, pins string, addr netip.AddrPort) {
	for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
		t.Run("64 MiB "+dir.String()+" through the hairpin", func(t *testing.T) {
			res, err := ns.Transfer(testenv.Transfer{
				Dir: dir, Addr: addr.String(), Seed: uint64(i + 1),
				Size: testenv.BulkSize, Deadline: transferDeadline,
			})
			if err != nil {
				t.Fatalf("%v\ndatapath counters: %s", err, counters(t, pins))
			}
			t.Logf("%d bytes in %s", res.Bytes, res.Elapsed)
		})
	}
}

// TestHairpinTooBig6: TestHairpinFragNeeded for IPv6. Container C of
// network 2 (MTU 1500) reaches a port published by container A of network
// 1 (MTU 1280) through the bridge's IPv6 hairpin. A datagram too big for
// network 1 is answered with ICMPv6 Packet Too Big naming 1280, from the
// address dialled, so C's path MTU drops to 1280; then a datagram bigger
// than that, which C now fragments itself, is echoed whole, and TCP bulk
// transfers through the same hairpin complete.
func TestHairpinTooBig6(t *testing.T) {
	testenv.RequirePrivileges(t)
	h := newIPv6Hairpin(t, false)
	for _, dev := range []string{h.Bridge, h.AVeth} {
		h.Host.IP(t, "link", "set", dev, "mtu", fmt.Sprint(hairpinMTU))
	}
	h.A.IP(t, "link", "set", "eth0", "mtu", fmt.Sprint(hairpinMTU))
	dialled := netip.AddrPortFrom(h.hostIP, 7000)

	t.Run("a datagram over the MTU earns Packet Too Big with the MTU", func(t *testing.T) {
		if !testenv.KernelAtLeast(t, 5, 12) {
			t.Skip("below Linux 5.12 the FIB lookup reports no MTU to name: the datagram is only dropped")
		}
		expectPathMTU(t, h.C, h.pins, dialled)
	})

	t.Run("then a bigger datagram, fragmented by its sender, is echoed", func(t *testing.T) {
		if !testenv.KernelAtLeast(t, 5, 12) {
			t.Skip("below Linux 5.12 the sender never learns the path MTU")
		}
		if err := h.C.EchoDatagrams(dialled.String(), 1400, 3); err != nil {
			t.Fatalf("%v\ndatapath counters: %s", err, counters(t, h.pins))
		}
	})

	hairpinBulk(t, h.C, h.pins, netip.AddrPortFrom(h.hostIP, 9000))
}

// learnPathMTU sends datagrams of size bytes (IP header included) that
// may not be fragmented to dst from a connected socket in ns until the
// kernel's path MTU for dst drops below size (an ICMP frag-needed, or
// ICMPv6 Packet Too Big, arrived), and returns it.
func learnPathMTU(ns *testenv.Netns, dst netip.AddrPort, size int) (int, error) {
	return learnPathMTUFrom(ns, netip.AddrPort{}, dst, size)
}

// learnPathMTUFrom is learnPathMTU from the socket address from (any when
// it is the zero AddrPort).
func learnPathMTUFrom(ns *testenv.Netns, from, dst netip.AddrPort, size int) (int, error) {
	network, level, discover, discoverDo, mtuOpt, headers := "udp4", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO, unix.IP_MTU, 28
	if dst.Addr().Is6() {
		network, level, discover, discoverDo, mtuOpt, headers = "udp6", unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO, unix.IPV6_MTU, 48
	}
	var mtu int
	err := ns.Do(func() error {
		var laddr *net.UDPAddr
		if from.IsValid() {
			laddr = net.UDPAddrFromAddrPort(from)
		}
		c, err := net.DialUDP(network, laddr, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		sockopt := func(fn func(fd int) error) error {
			var inner error
			if err := raw.Control(func(fd uintptr) { inner = fn(int(fd)) }); err != nil {
				return err
			}
			return inner
		}
		if err := sockopt(func(fd int) error { return unix.SetsockoptInt(fd, level, discover, discoverDo) }); err != nil {
			return fmt.Errorf("forbid fragmentation: %w", err)
		}
		payload := make([]byte, size-headers)
		for try := 0; try < 10; try++ {
			c.Write(payload) // EMSGSIZE once the MTU is known: that is the point
			time.Sleep(200 * time.Millisecond)
			if err := sockopt(func(fd int) (err error) {
				mtu, err = unix.GetsockoptInt(fd, level, mtuOpt)
				return err
			}); err != nil {
				return fmt.Errorf("read the path MTU: %w", err)
			}
			if mtu < size {
				return nil
			}
		}
		return fmt.Errorf("path MTU to %s still %d after 10 datagrams of %d bytes that may not be fragmented: no ICMP error came back", dst, mtu, size)
	})
	return mtu, err
}
