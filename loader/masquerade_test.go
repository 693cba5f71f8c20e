package loader_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestMasqueradeAndIsolation covers what Docker needs iptables for besides
// published ports: containers reaching the outside under the uplink's
// address, networks kept apart, and all of it on a host whose FORWARD
// policy is DROP, where the tc programs forward in BPF.
func TestMasqueradeAndIsolation(t *testing.T) {
	testenv.RequirePrivileges(t)
	t.Run("stack forwarding", func(t *testing.T) { testMasquerade(t, false) })
	t.Run("FORWARD DROP with BPF forwarding", func(t *testing.T) {
		if _, err := exec.LookPath("iptables"); err != nil {
			t.Skip("needs iptables to set the FORWARD policy: run 'make deps'")
		}
		testMasquerade(t, true)
	})
}

// twoNetworks is a World plus a second network (bridge2, container C),
// loaded with the whole datapath and configured as the agent would.
type twoNetworks struct {
	*testenv.World
	pins, cgroup     string
	C                *testenv.Netns
	CIP, Gateway2    netip.Addr
	Subnet1, Subnet2 netip.Prefix
}

func newTwoNetworks(t *testing.T, forwardDrop, noICC bool) *twoNetworks {
	w := testenv.NewWorld(t)
	n := &twoNetworks{
		World:    w,
		pins:     testenv.PinDir(t),
		cgroup:   testenv.Cgroup(t),
		Subnet1:  netip.PrefixFrom(w.Gateway, w.ContainerPrefixLen).Masked(),
		Subnet2:  netip.MustParsePrefix("10.90.0.0/24"),
		Gateway2: netip.MustParseAddr("10.90.0.1"),
		CIP:      netip.MustParseAddr("10.90.0.2"),
	}
	bridge2, cVeth := "ptn"+w.ID, "pvc"+w.ID
	n.C = testenv.NewNetns(t, "ptd"+w.ID)
	w.Host.IP(t, "link", "add", bridge2, "type", "bridge")
	w.Host.IP(t, "addr", "add", n.Gateway2.String()+"/24", "dev", bridge2)
	w.Host.IP(t, "link", "set", bridge2, "up")
	testenv.Veth(t, w.Host, cVeth, n.C, "eth0")
	w.Host.IP(t, "link", "set", cVeth, "master", bridge2)
	n.C.IP(t, "addr", "add", n.CIP.String()+"/24", "dev", "eth0")
	n.C.IP(t, "route", "add", "default", "via", n.Gateway2.String())

	if forwardDrop {
		w.Host.Exec(t, "iptables", "-P", "FORWARD", "DROP")
	}
	if err := w.Host.Helper(t, "", new(string), "load", n.pins, w.Uplink, n.cgroup, string(loader.TCX),
		"bridge="+w.Bridge, "bridge="+bridge2,
		"endpoint="+w.AVeth, "endpoint="+w.BVeth, "endpoint="+cVeth); err != nil {
		t.Fatal(err)
	}
	configure(t, w, n.pins, forwardDrop, []maps.Network{
		{Subnet: n.Subnet1, Gateway: w.Gateway, ID: 1, Masquerade: true, NoICC: noICC},
		{Subnet: n.Subnet2, Gateway: n.Gateway2, ID: 2, Masquerade: true},
	})
	endpoints := maps.NewEndpoints(openPinned(t, n.pins, "endpoints"))
	for _, e := range []struct {
		addr      netip.Addr
		veth      string
		networkID uint32
	}{{w.AIP, w.AVeth, 1}, {w.BIP, w.BVeth, 1}, {n.CIP, cVeth, 2}} {
		if err := endpoints.Put(e.addr, uint32(ifindexIn(t, w.Host, e.veth)), e.networkID); err != nil {
			t.Fatal(err)
		}
	}
	registerNetns(t, n.pins, 1, w.A, w.B)
	registerNetns(t, n.pins, 2, n.C)
	return n
}

func testMasquerade(t *testing.T, forwardDrop bool) {
	n := newTwoNetworks(t, forwardDrop, false)
	w, pins, c, cIP := n.World, n.pins, n.C, n.CIP
	w.Outside.ServeTCP(t, ":80")
	w.Outside.ServeUDP(t, ":53")
	w.A.ServeTCP(t, ":80")
	c.ServeTCP(t, ":80")
	server := netip.AddrPortFrom(w.OutsideIP, 80).String()

	t.Run("containers reach the outside as the uplink address", func(t *testing.T) {
		res, err := w.A.Dial("tcp", server)
		expect(t, res, err, w.HostIP, server)
		udpServer := netip.AddrPortFrom(w.OutsideIP, 53).String()
		res, err = w.B.Dial("udp", udpServer)
		expect(t, res, err, w.HostIP, udpServer)
		res, err = c.Dial("tcp", server)
		expect(t, res, err, w.HostIP, server)
	})

	t.Run("ICMP errors about masqueraded flows reach the container", func(t *testing.T) {
		// Nothing listens on the outside's port 9: its port unreachable
		// quotes the datagram as sent from the uplink address, and must
		// come back to A's socket as ECONNREFUSED.
		err := w.A.Do(func() error {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(w.OutsideIP, 9)))
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte("anyone?")); err != nil {
				return err
			}
			_, err = c.Read(make([]byte, 64))
			if err == nil || !strings.Contains(err.Error(), "connection refused") {
				return fmt.Errorf("read after sending to a closed port: %v, want connection refused", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ping", func(t *testing.T) {
		from, err := w.A.Ping(w.OutsideIP, 0x5151)
		if err != nil {
			t.Fatal(err)
		}
		if from != w.OutsideIP {
			t.Fatalf("echo reply from %s, want %s", from, w.OutsideIP)
		}
	})

	t.Run("errors about pings reach the container (traceroute -I, an unreachable host)", func(t *testing.T) {
		pingErrors(t, w, w.OutsideIP, w.AIP, netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("198.51.100.7"))
	})

	t.Run("100 connections from two containers sharing source ports", func(t *testing.T) {
		sharedSourcePorts(t, server, w.HostIP, w.A, w.B)
	})

	t.Run("networks are isolated from each other", func(t *testing.T) {
		if res, err := c.Dial("tcp", netip.AddrPortFrom(w.AIP, 80).String()); err == nil {
			t.Fatalf("network 2 reached a container of network 1: %+v", res)
		}
		if res, err := w.A.Dial("tcp", netip.AddrPortFrom(cIP, 80).String()); err == nil {
			t.Fatalf("network 1 reached a container of network 2: %+v", res)
		}
		// Same network still talks.
		res, err := w.B.Dial("tcp", netip.AddrPortFrom(w.AIP, 80).String())
		expect(t, res, err, w.BIP, netip.AddrPortFrom(w.AIP, 80).String())
	})

	t.Run("published ports work alongside", func(t *testing.T) {
		bindings := maps.NewBindings(openPinned(t, pins, "bindings"))
		if err := bindings.Put(maps.Binding{Proto: maps.TCP, Host: netip.AddrPortFrom(netip.IPv4Unspecified(), 8080), Backend: netip.AddrPortFrom(w.AIP, 80), ID: 9}); err != nil {
			t.Fatal(err)
		}
		hostTCP := netip.AddrPortFrom(w.HostIP, 8080).String()
		res, err := w.Outside.Dial("tcp", hostTCP)
		expect(t, res, err, w.OutsideIP, hostTCP)
	})

	t.Run("no firewall rule was written", func(t *testing.T) {
		if out := w.Host.Exec(t, "iptables-save"); strings.Contains(out, "-A ") {
			t.Fatalf("iptables rules exist in the host namespace:\n%s", out)
		}
		if out := w.Host.Exec(t, "nft", "list", "ruleset"); strings.Contains(strings.ToLower(out), "pontoon") || strings.Contains(out, "masquerade") || strings.Contains(out, "dnat") {
			t.Fatalf("nftables rules for Pontoon exist in the host namespace:\n%s", out)
		}
	})

	t.Run("conntrack expires on schedule and stays bounded under churn", func(t *testing.T) {
		snat := maps.NewSNAT(openPinned(t, pins, "snat"))
		short := maps.Lifetimes{TCPOpening: time.Second, TCPEstablished: time.Minute, TCPClosing: 0, UDP: time.Second, ICMP: time.Second}
		churn, gcEvery := 10000, 1000
		if testing.Short() {
			// vmtest runs -short: 10,000 connections take minutes under
			// full emulation.
			churn, gcEvery = 2000, 500
		}
		peak := 0
		if err := w.A.Do(func() error {
			for i := 0; i < churn; i++ {
				// Generous: under emulation (vmtest) the server's accept
				// queue can fill and a SYN needs its retransmit.
				conn, err := net.DialTimeout("tcp4", server, 15*time.Second)
				if err != nil {
					return fmt.Errorf("connection %d: %w (datapath counters: %s)", i, err, counters(t, pins))
				}
				conn.Close()
				if (i+1)%gcEvery == 0 {
					n, err := snat.Count()
					if err != nil {
						return err
					}
					peak = max(peak, n)
					// Closed flows are due at once: a FIN was seen both ways.
					if _, err := snat.GC(maps.MonotonicNow(), short); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// Two entries per flow; a GC round clears what the previous
		// 1,000 connections left, apart from flows still closing.
		if bound := 2 * 2 * gcEvery; peak > bound {
			t.Fatalf("snat held %d entries at peak under churn, want at most %d", peak, bound)
		}

		// A live UDP flow is kept until its lifetime has passed.
		if _, err := w.A.Dial("udp", netip.AddrPortFrom(w.OutsideIP, 53).String()); err != nil {
			t.Fatal(err)
		}
		now := maps.MonotonicNow()
		before, _ := snat.Count()
		if n, err := snat.GC(now, short); err != nil || n != 0 && before-n < 2 {
			t.Fatalf("GC before the lifetime removed the live UDP flow (%d of %d gone, %v)", n, before, err)
		}
		if _, err := snat.GC(now+2*time.Second, short); err != nil {
			t.Fatal(err)
		}
		if after, _ := snat.Count(); after != 0 {
			t.Fatalf("%d snat entries left after every lifetime passed", after)
		}
	})
}

// pingErrors: past the outside, beyond is routed on (over a link of its own)
// and nowhere is unreachable. A ping from A with TTL 2 dies of time
// exceeded at the outside, as traceroute -I's first probes do, and one to
// nowhere gets an unreachable; both errors quote the ping as the outside
// saw it, under the uplink's address, and must reach A quoting it as A
// sent it.
func pingErrors(t *testing.T, w *testenv.World, outsideIP, aIP, beyond, nowhere netip.Addr) {
	t.Helper()
	prefix, forwarding, unreachable := 24, "net.ipv4.ip_forward", uint8(3)
	timeExceeded := uint8(11)
	if beyond.Is6() {
		prefix, forwarding, timeExceeded = 64, "net.ipv6.conf.all.forwarding", 3
		unreachable = 1
	}
	// A veth pair of the outside's own stands for the link beyond (the
	// kernels here have no dummy driver).
	link := "ptx" + w.ID
	w.Outside.Sysctl(t, forwarding, "1")
	w.Outside.IP(t, "link", "add", link, "type", "veth", "peer", "name", "pty"+w.ID)
	w.Outside.IP(t, "link", "set", link, "up")
	w.Outside.IP(t, "link", "set", "pty"+w.ID, "up")
	for _, c := range []struct {
		dst netip.Addr
		ttl int
		typ uint8
	}{{beyond, 2, timeExceeded}, {nowhere, 64, unreachable}} {
		route := netip.PrefixFrom(c.dst, prefix).Masked().String()
		w.Host.IP(t, "route", "add", route, "via", outsideIP.String())
		if c.dst == beyond {
			w.Outside.IP(t, "route", "add", route, "dev", link)
		} else {
			w.Outside.IP(t, "route", "add", "unreachable", route)
		}
		const id = 0x7e57
		e, err := w.A.PingError(c.dst, id, c.ttl)
		if err != nil {
			t.Fatalf("ping %s with ttl %d: %v", c.dst, c.ttl, err)
		}
		if e.Type != c.typ || e.From != outsideIP || e.QuotedSrc != aIP || e.QuotedID != id {
			t.Errorf("ping %s with ttl %d: icmp type %d from %s quoting %s id %#x, want type %d from %s quoting %s id %#x",
				c.dst, c.ttl, e.Type, e.From, e.QuotedSrc, e.QuotedID, c.typ, outsideIP, aIP, id)
		}
	}
}

// configure does the agent's part: networks, uplink addresses, and BPF
// forwarding when the stack's forward path is closed.
func configure(t *testing.T, w *testenv.World, pins string, redirect bool, networks []maps.Network) {
	t.Helper()
	nets := maps.NewNetworks(openPinned(t, pins, "networks"))
	for _, n := range networks {
		if err := nets.Put(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := maps.NewUplinks(openPinned(t, pins, "uplinks")).Put(uint32(ifindexIn(t, w.Host, w.Uplink)), w.HostIP); err != nil {
		t.Fatal(err)
	}
	cfg := maps.NewConfig(openPinned(t, pins, "config"))
	v, err := cfg.Get()
	if err != nil {
		t.Fatal(err)
	}
	if redirect {
		v.Flags |= maps.ConfigFIBRedirect
	}
	if err := cfg.Set(v); err != nil {
		t.Fatal(err)
	}
}

func ifindexIn(t *testing.T, ns *testenv.Netns, ifname string) int {
	t.Helper()
	var ifindex int
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err == nil {
			ifindex = l.Attrs().Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ifindex
}

// TestICCAndHairpin: with icc=false, containers of a network cannot reach
// each other directly but still reach each other's published ports through
// the host; and a container that does not go through the socket hooks (a
// VM, a raw client) reaches a published port by tc's hairpin path.
func TestICCAndHairpin(t *testing.T) {
	testenv.RequirePrivileges(t)
	t.Run("stack forwarding", func(t *testing.T) { testICCAndHairpin(t, false) })
	t.Run("FORWARD DROP with BPF forwarding", func(t *testing.T) {
		if _, err := exec.LookPath("iptables"); err != nil {
			t.Skip("needs iptables to set the FORWARD policy: run 'make deps'")
		}
		testICCAndHairpin(t, true)
	})
}

func testICCAndHairpin(t *testing.T, forwardDrop bool) {
	n := newTwoNetworks(t, forwardDrop, true)
	n.A.ServeTCP(t, ":80")
	n.A.ServeUDP(t, ":53")
	bindings := maps.NewBindings(openPinned(t, n.pins, "bindings"))
	any4 := netip.IPv4Unspecified()
	if err := bindings.PutBatch([]maps.Binding{
		{Proto: maps.TCP, Host: netip.AddrPortFrom(any4, 8080), Backend: netip.AddrPortFrom(n.AIP, 80), ID: 1},
		{Proto: maps.UDP, Host: netip.AddrPortFrom(any4, 5353), Backend: netip.AddrPortFrom(n.AIP, 53), ID: 2},
	}); err != nil {
		t.Fatal(err)
	}
	hostTCP := netip.AddrPortFrom(n.HostIP, 8080).String()
	hostUDP := netip.AddrPortFrom(n.HostIP, 5353).String()

	t.Run("icc=false: no direct connection between containers", func(t *testing.T) {
		if res, err := n.B.Dial("tcp", netip.AddrPortFrom(n.AIP, 80).String()); err == nil {
			t.Fatalf("B reached A directly despite icc=false: %+v", res)
		}
		if res, err := n.B.DialFrom(t, n.cgroup, "tcp", netip.AddrPortFrom(n.AIP, 80).String()); err == nil {
			t.Fatalf("B (with socket hooks) reached A directly despite icc=false: %+v", res)
		}
	})

	t.Run("icc=false: the published port is reachable through the host", func(t *testing.T) {
		// Through the host, as with Docker: A sees its gateway.
		res, err := n.B.DialFrom(t, n.cgroup, "tcp", hostTCP)
		expect(t, res, err, n.Gateway, hostTCP)
		res, err = n.B.DialFrom(t, n.cgroup, "udp", hostUDP)
		expect(t, res, err, n.Gateway, hostUDP)
	})

	t.Run("hairpin without socket hooks", func(t *testing.T) {
		res, err := n.B.Dial("tcp", hostTCP)
		expect(t, res, err, n.Gateway, hostTCP)
		res, err = n.B.Dial("udp", hostUDP)
		expect(t, res, err, n.Gateway, hostUDP)
	})

	t.Run("another network reaches the published port, not the container", func(t *testing.T) {
		res, err := n.C.Dial("tcp", hostTCP) // tc hairpin
		expect(t, res, err, n.Gateway, hostTCP)
		res, err = n.C.DialFrom(t, n.cgroup, "tcp", hostTCP) // socket hooks defer to it
		expect(t, res, err, n.Gateway, hostTCP)
		if res, err := n.C.Dial("tcp", netip.AddrPortFrom(n.AIP, 80).String()); err == nil {
			t.Fatalf("network 2 reached a container of network 1 directly: %+v", res)
		}
	})

	t.Run("outside and host still reach it", func(t *testing.T) {
		res, err := n.Outside.Dial("tcp", hostTCP)
		expect(t, res, err, n.OutsideIP, hostTCP)
		res, err = n.Host.DialFrom(t, n.cgroup, "tcp", "127.0.0.1:8080")
		expect(t, res, err, n.Gateway, "127.0.0.1:8080")
	})
}

// counters summarises the non-zero datapath counters, for failure messages.
func counters(t *testing.T, pins string) string {
	stats, err := maps.NewStats(openPinned(t, pins, "stats")).Read()
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, name := range maps.StatNames {
		if c := stats[name]; c.Packets > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", name, c.Packets))
		}
	}
	return strings.Join(parts, " ")
}

// sharedSourcePorts opens 50 connections from each container to server,
// the same 50 source ports in each, all open at once: each must answer,
// and the server must see each as a source port of its own on nat.
func sharedSourcePorts(t *testing.T, server string, nat netip.Addr, containers ...*testenv.Netns) {
	t.Helper()
	const perContainer = 50
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for _, ns := range containers {
		if err := ns.Do(func() error {
			for i := 0; i < perContainer; i++ {
				// Below the ephemeral range, so no earlier connection of
				// this container can still hold the port in TIME_WAIT.
				d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{Port: 20000 + i}}
				conn, err := d.Dial("tcp", server)
				if err != nil {
					return fmt.Errorf("connection %d from %s: %w", i, ns.Name, err)
				}
				conns = append(conns, conn)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	type answer struct {
		peer string
		err  error
	}
	answers := make(chan answer, len(conns))
	for _, conn := range conns {
		go func(conn net.Conn) {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintln(conn, "hi"); err != nil {
				answers <- answer{err: err}
				return
			}
			reply, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				answers <- answer{err: err}
				return
			}
			peer, _, err := testenv.ParseEcho(reply)
			answers <- answer{peer, err}
		}(conn)
	}
	seen := map[string]bool{}
	for range conns {
		a := <-answers
		if a.err != nil {
			t.Fatal(a.err)
		}
		ap, err := netip.ParseAddrPort(a.peer)
		if err != nil || ap.Addr() != nat {
			t.Fatalf("server saw %q, want %s:port", a.peer, nat)
		}
		seen[a.peer] = true
	}
	if len(seen) != len(conns) {
		t.Fatalf("server saw %d distinct sources for %d connections: source ports collided", len(seen), len(conns))
	}
}
