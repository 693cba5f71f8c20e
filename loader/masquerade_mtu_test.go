package loader_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestMasqueradeReplyFragNeeded: container A, on a network whose MTU is
// 1280, talks UDP to a server outside through masquerade. A reply too big
// for A's network, which may not be fragmented, earns the server the
// host's ICMP "fragmentation needed", quoting the reply as the server sent
// it (to the uplink address and the masquerade port), so the server's
// kernel learns path MTU 1280; a reply that fits then reaches A.
func TestMasqueradeReplyFragNeeded(t *testing.T) {
	testenv.RequirePrivileges(t)
	t.Run("stack forwarding", func(t *testing.T) { testMasqueradeReplyFragNeeded(t, false) })
	t.Run("FORWARD DROP with BPF forwarding", func(t *testing.T) {
		if _, err := exec.LookPath("iptables"); err != nil {
			t.Skip("needs iptables to set the FORWARD policy: run 'make deps'")
		}
		testMasqueradeReplyFragNeeded(t, true)
	})
}

func testMasqueradeReplyFragNeeded(t *testing.T, forwardDrop bool) {
	n := newTwoNetworks(t, forwardDrop, false)
	w := n.World
	for _, dev := range []string{w.Bridge, w.AVeth} {
		w.Host.IP(t, "link", "set", dev, "mtu", fmt.Sprint(hairpinMTU))
	}
	w.A.IP(t, "link", "set", "eth0", "mtu", fmt.Sprint(hairpinMTU))
	server := netip.AddrPortFrom(w.OutsideIP, 5400)

	// The server learns the masqueraded address from A's first datagram;
	// A's socket stays open for the replies.
	var listener, client *net.UDPConn
	if err := w.Outside.Do(func() (err error) {
		listener, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(server))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	if err := w.A.Do(func() (err error) {
		client, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	listener.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, masqueraded, err := listener.ReadFromUDPAddrPort(make([]byte, 64))
	if err != nil {
		t.Fatalf("the server heard nothing from the container: %v\ndatapath counters: %s", err, counters(t, n.pins))
	}
	if masqueraded.Addr() != w.HostIP {
		t.Fatalf("the container's datagram came from %s, want the uplink address %s", masqueraded, w.HostIP)
	}
	listener.Close() // its port is the replies' source now

	t.Run("a DF reply over the MTU teaches the server the path MTU", func(t *testing.T) {
		mtu, err := learnPathMTUFrom(w.Outside, server, masqueraded, 1400)
		if err != nil {
			t.Fatalf("%v\ndatapath counters: %s", err, counters(t, n.pins))
		}
		if mtu != hairpinMTU {
			t.Fatalf("path MTU to %s is %d after a 1400-byte reply, want %d", masqueraded, mtu, hairpinMTU)
		}
		stats, err := maps.NewStats(openPinned(t, n.pins, "stats")).Read()
		if err != nil {
			t.Fatal(err)
		}
		if stats["icmp_snat"].Packets == 0 {
			t.Errorf("the host's frag-needed is not counted icmp_snat: %s", counters(t, n.pins))
		}
	})

	t.Run("a reply at the MTU reaches the container", func(t *testing.T) {
		payload := bytes.Repeat([]byte{0x5a}, hairpinMTU-28)
		if err := w.Outside.Do(func() error {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(server), net.UDPAddrFromAddrPort(masqueraded))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(payload)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 2*hairpinMTU)
		k, err := client.Read(got)
		if err != nil {
			t.Fatalf("no reply reached the container: %v\ndatapath counters: %s", err, counters(t, n.pins))
		}
		if !bytes.Equal(got[:k], payload) {
			t.Fatalf("the container got %d bytes, want the %d sent", k, len(payload))
		}
	})
}
