package loader_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestNAT66: containers on a network with NAT66 reach an IPv6 server
// outside as the uplink's IPv6 address: TCP, UDP and ping; 100
// connections from two containers on the same source ports; 64 MiB each
// way and datagrams bigger than the MTU, over an uplink whose MTU is
// smaller than the bridge's. The outside, which has a route to the
// containers, still reaches none of them by its own address, and a
// stranger's datagram to a masqueraded port reaches no container socket.
// Three forwarding modes: the stack's, BPF's FIB redirect, and that
// under an ip6tables FORWARD policy of DROP.
func TestNAT66(t *testing.T) {
	testenv.RequirePrivileges(t)
	forwardingModes6(t, testNAT66)
}

func testNAT66(t *testing.T, redirect, forwardDrop bool) {
	w := testenv.NewWorld(t)
	if forwardDrop {
		w.Host.Exec(t, "ip6tables", "-P", "FORWARD", "DROP")
	}
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)
	v6 := addIPv6(t, w, "2001:db8:66::/64", "fd00:66::/64")
	hostIP, outsideIP, aIP := v6.HostIP, v6.OutsideIP, v6.AIP
	bIP := aIP.Next()
	w.B.IP(t, "addr", "add", netip.PrefixFrom(bIP, v6.Subnet.Bits()).String(), "dev", "eth0", "nodad")
	w.B.IP(t, "-6", "route", "add", "default", "via", v6.Gateway.String())
	v6.narrowLink(t, w)

	w.Outside.ServeTCP(t, "[::]:80")
	w.Outside.ServeUDP(t, "[::]:53")
	w.Outside.ServeBulk(t, "[::]:9000")
	w.Outside.ServeDatagramEcho(t, "[::]:7000")
	w.A.ServeTCP(t, "[::]:80")

	var mode string
	if err := w.Host.Helper(t, "", &mode, "load", pins, w.Uplink, cgroup, string(loader.TCX), "bridge="+w.Bridge); err != nil {
		t.Fatal(err)
	}
	networks := v6.networks(w)
	networks[1].Masquerade, networks[1].NAT66 = true, true
	configure(t, w, pins, redirect, networks)
	v6.putHostAddrs(t, w, pins)
	uplinks6 := maps.NewUplinks(openPinned(t, pins, "uplinks6"))
	if err := uplinks6.Put(uint32(ifindexIn(t, w.Host, w.Uplink)), hostIP); err != nil {
		t.Fatal(err)
	}
	at := func(port uint16) string { return netip.AddrPortFrom(outsideIP, port).String() }

	t.Run("containers reach the outside as the uplink's address", func(t *testing.T) {
		res, err := w.A.Dial("tcp", at(80))
		expect(t, res, err, hostIP, at(80))
		res, err = w.B.Dial("udp", at(53))
		expect(t, res, err, hostIP, at(53))
	})

	t.Run("ping", func(t *testing.T) {
		if err := w.A.Ping6(netip.Addr{}, outsideIP, 0x6666); err != nil {
			t.Fatalf("%v\ndatapath counters: %s", err, counters(t, pins))
		}
	})

	t.Run("errors about pings reach the container (traceroute -I, an unreachable host)", func(t *testing.T) {
		pingErrors(t, w, outsideIP, aIP, netip.MustParseAddr("2001:db8:beef::7"), netip.MustParseAddr("2001:db8:dead::7"))
	})

	t.Run("100 connections from two containers sharing source ports", func(t *testing.T) {
		sharedSourcePorts(t, at(80), hostIP, w.A, w.B)
	})

	t.Run("datagrams bigger than the MTU", func(t *testing.T) {
		for _, size := range datagramSizes {
			if err := w.A.EchoDatagrams(at(7000), size, datagramsPerSize); err != nil {
				t.Errorf("%d-byte datagrams: %v\ndatapath counters: %s", size, err, counters(t, pins))
			}
		}
	})

	for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
		t.Run("64 MiB "+dir.String(), func(t *testing.T) {
			res, err := w.A.Transfer(testenv.Transfer{
				Dir: dir, Addr: at(9000), Seed: uint64(i + 1), Size: testenv.BulkSize, Deadline: transferDeadline,
			})
			if err != nil {
				t.Fatalf("%v\ndatapath counters: %s", err, counters(t, pins))
			}
			t.Logf("%d bytes in %s", res.Bytes, res.Elapsed)
		})
	}

	t.Run("the containers are not reachable by their own addresses", func(t *testing.T) {
		if res, err := w.Outside.Dial("tcp", netip.AddrPortFrom(aIP, 80).String()); err == nil {
			t.Fatalf("outside reached the container directly: %+v", res)
		}
	})

	t.Run("a stranger's datagram to a masqueraded port reaches no container", func(t *testing.T) {
		strangerReachesNoContainer(t, w, at(53), hostIP, pins)
	})

	t.Run("no firewall rule was written", func(t *testing.T) {
		if out := w.Host.Exec(t, "ip6tables-save"); strings.Contains(out, "-A ") {
			t.Fatalf("ip6tables rules exist in the host namespace:\n%s", out)
		}
	})

	t.Run("without an IPv6 address on the uplink the containers' addresses stay in", func(t *testing.T) {
		inbox := w.Outside.ListenInbox(t, "udp6", "[::]:5454")
		send := func(msg string) {
			t.Helper()
			if err := w.A.Do(func() error {
				c, err := net.Dial("udp6", at(5454))
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Write([]byte(msg))
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		uplink := uint32(ifindexIn(t, w.Host, w.Uplink))
		before := statPackets(t, pins, "drop_unmasqueraded")
		if err := uplinks6.Delete(uplink); err != nil {
			t.Fatal(err)
		}
		send("without")
		// With the address back, the next datagram leaves translated; the
		// first, sent before it on the same path, would be there by then,
		// and counted.
		if err := uplinks6.Put(uplink, hostIP); err != nil {
			t.Fatal(err)
		}
		send("with")
		if inbox.WaitFor(func(d testenv.Datagram) bool { return string(d.Payload) == "with" }, 1, 5*time.Second) != 1 {
			t.Fatalf("the datagram sent with NAT66 back never arrived: %s", counters(t, pins))
		}
		for _, d := range inbox.Received() {
			if string(d.Payload) != "with" || d.From != hostIP {
				t.Errorf("the outside got %q from %s; want only \"with\" from %s", d.Payload, d.From, hostIP)
			}
		}
		// Under FORWARD DROP the stack drops it before the uplink sees it.
		if !forwardDrop && statPackets(t, pins, "drop_unmasqueraded") == before {
			t.Errorf("nothing counted drop_unmasqueraded: %s", counters(t, pins))
		}
	})
}

// strangerReachesNoContainer: container A's unconnected UDP socket talks
// to server through NAT66 (as nat:port) and gets its answer; a datagram
// to nat:port from the server's address but another port, and one from
// a third address, must not reach that socket.
func strangerReachesNoContainer(t *testing.T, w *testenv.World, server string, nat netip.Addr, pins string) {
	t.Helper()
	var sock *net.UDPConn
	if err := w.A.Do(func() (err error) {
		sock, err = net.ListenUDP("udp6", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	srv := netip.MustParseAddrPort(server)
	if _, err := sock.WriteToUDPAddrPort([]byte("who am i"), srv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := sock.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no answer from the server: %v\ndatapath counters: %s", err, counters(t, pins))
	}
	peer, _, err := testenv.ParseEcho(string(buf[:n]))
	if err != nil || from.Addr().Unmap() != srv.Addr() {
		t.Fatalf("answer %q from %s: %v", buf[:n], from, err)
	}
	masqueraded := netip.MustParseAddrPort(peer)
	if masqueraded.Addr() != nat {
		t.Fatalf("the server saw %s, want the uplink's address %s", masqueraded, nat)
	}

	// The outside sends from another port of its own address, and from a
	// second address it adds (the test's own link, no one else's),
	// deprecated so that the server's answers keep their source.
	stranger := netip.MustParseAddr("2001:db8:66::99")
	w.Outside.IP(t, "addr", "add", stranger.String()+"/64", "dev", "eth0", "nodad", "preferred_lft", "0")
	for _, src := range []netip.AddrPort{netip.AddrPortFrom(srv.Addr(), 54), netip.AddrPortFrom(stranger, 154)} {
		if err := w.Outside.Do(func() error {
			c, err := net.DialUDP("udp6", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(masqueraded))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("not yours"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The server's own answer, sent after them, still arrives; nothing
	// before it may.
	if _, err := sock.WriteToUDPAddrPort([]byte("again"), srv); err != nil {
		t.Fatal(err)
	}
	sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err = sock.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no second answer from the server: %v", err)
	}
	if from.Addr().Unmap() != srv.Addr() || from.Port() != srv.Port() || bytes.Contains(buf[:n], []byte("not yours")) {
		t.Fatalf("the container's socket got %q from %s: a stranger's datagram got through", buf[:n], from)
	}
}

// statPackets is one datapath counter's packets.
func statPackets(t *testing.T, pins, name string) uint64 {
	t.Helper()
	stats, err := maps.NewStats(openPinned(t, pins, "stats")).Read()
	if err != nil {
		t.Fatal(err)
	}
	c, ok := stats[name]
	if !ok {
		panic(fmt.Sprintf("no counter %q", name))
	}
	return c.Packets
}
