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
		mtu, err := learnPathMTU(n.C, dialled, 1400)
		if err != nil {
			t.Fatalf("%v\ndatapath counters: %s", err, counters(t, n.pins))
		}
		if mtu != hairpinMTU {
			t.Fatalf("path MTU to %s is %d after a 1400-byte DF datagram, want %d\ndatapath counters: %s", dialled, mtu, hairpinMTU, counters(t, n.pins))
		}
		stats, err := maps.NewStats(openPinned(t, n.pins, "stats")).Read()
		if err != nil {
			t.Fatal(err)
		}
		if stats["drop_frag_needed"].Packets == 0 {
			t.Errorf("the datagram too big is not counted as drop_frag_needed: %s", counters(t, n.pins))
		}
	})

	t.Run("a datagram at the MTU gets through", func(t *testing.T) {
		if err := n.C.EchoDatagrams(dialled.String(), hairpinMTU-28, 3); err != nil {
			t.Fatalf("%v\ndatapath counters: %s", err, counters(t, n.pins))
		}
	})

	for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
		t.Run("64 MiB "+dir.String()+" through the hairpin", func(t *testing.T) {
			res, err := n.C.Transfer(testenv.Transfer{
				Dir: dir, Addr: netip.AddrPortFrom(w.HostIP, 9000).String(), Seed: uint64(i + 1),
				Size: testenv.BulkSize, Deadline: transferDeadline,
			})
			if err != nil {
				t.Fatalf("%v\ndatapath counters: %s", err, counters(t, n.pins))
			}
			t.Logf("%d bytes in %s", res.Bytes, res.Elapsed)
		})
	}
}

// learnPathMTU sends DF datagrams of size bytes to dst from a connected
// socket in ns until the kernel's path MTU for dst drops below size (an
// ICMP frag-needed arrived), and returns it.
func learnPathMTU(ns *testenv.Netns, dst netip.AddrPort, size int) (int, error) {
	var mtu int
	err := ns.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
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
		if err := sockopt(func(fd int) error {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		}); err != nil {
			return fmt.Errorf("set IP_PMTUDISC_DO: %w", err)
		}
		payload := make([]byte, size-28)
		for try := 0; try < 10; try++ {
			c.Write(payload) // EMSGSIZE once the MTU is known: that is the point
			time.Sleep(200 * time.Millisecond)
			if err := sockopt(func(fd int) (err error) {
				mtu, err = unix.GetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU)
				return err
			}); err != nil {
				return fmt.Errorf("read IP_MTU: %w", err)
			}
			if mtu < size {
				return nil
			}
		}
		return fmt.Errorf("path MTU to %s still %d after 10 DF datagrams of %d bytes: no frag-needed came back", dst, mtu, size)
	})
	return mtu, err
}
