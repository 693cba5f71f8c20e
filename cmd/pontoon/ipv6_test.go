package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestIPv6Networks: `network create --ipv6` gives a network a unique local
// /64 (or the one given) besides its IPv4 subnet, the bridge carries the
// IPv6 gateway, listings show it, and every bad IPv6 subnet is refused with
// one line and no change.
func TestIPv6Networks(t *testing.T) {
	w := newWorld(t, 0)
	veth := "ppe" + w.id
	w.host.IP(t, "link", "add", veth, "type", "veth", "peer", "name", "ppf"+w.id)
	w.host.IP(t, "link", "set", veth, "up")
	w.host.IP(t, "-6", "addr", "add", "fd00:99::1/64", "dev", veth, "nodad")
	w.host.IP(t, "-6", "route", "add", "fd00:98::/64", "via", "fd00:99::fe", "dev", veth)
	w.startAgent()

	var picked control.NetworkInfo
	w.okJSON(&picked, "network", "create", "picked", "--ipv6")
	if !picked.IPv6 || len(picked.Subnets) != 2 || !picked.Subnets[0].Subnet.Addr().Is4() {
		t.Fatalf("network create --ipv6: %+v, want an IPv4 subnet then an IPv6 one", picked.Network)
	}
	ula := picked.Subnets[1]
	if ula.Subnet.Bits() != 64 || ula.Subnet.Addr().As16()[0] != 0xfd || ula.Gateway != ula.Subnet.Addr().Next() {
		t.Errorf("picked IPv6 subnet %s gateway %s, want a unique local /64 (fdxx::) with its first address as gateway", ula.Subnet, ula.Gateway)
	}
	if out := w.host.IP(t, "-6", "addr", "show", "dev", picked.Bridge); !strings.Contains(out, ula.Gateway.String()+"/64") {
		t.Errorf("bridge %s does not carry %s/64:\n%s", picked.Bridge, ula.Gateway, out)
	}

	var given control.NetworkInfo
	w.okJSON(&given, "network", "create", "given", "--subnet", "10.70.0.0/24", "--subnet6", "fd00:70::/64", "--gateway6", "fd00:70::fe")
	if len(given.Subnets) != 2 || given.Subnets[1].Subnet != netip.MustParsePrefix("fd00:70::/64") || given.Subnets[1].Gateway != netip.MustParseAddr("fd00:70::fe") {
		t.Errorf("given subnets %+v", given.Subnets)
	}
	var implied control.NetworkInfo
	w.okJSON(&implied, "network", "create", "implied", "--subnet", "fd00:71::/64")
	if !implied.IPv6 || len(implied.Subnets) != 2 || !implied.Subnets[0].Subnet.Addr().Is4() || implied.Subnets[1].Subnet != netip.MustParsePrefix("fd00:71::/64") {
		t.Errorf("an IPv6 --subnet alone: %+v, want a picked IPv4 subnet first and the IPv6 one", implied.Network)
	}
	if ls := w.ok("network", "ls"); !strings.Contains(ls, "fd00:70::/64") || !strings.Contains(ls, "fd00:70::fe") {
		t.Errorf("network ls shows no IPv6 subnet and gateway:\n%s", ls)
	}
	if out := w.ok("network", "inspect", "given"); !strings.Contains(out, "fd00:70::/64") || !strings.Contains(out, "ipv6:") {
		t.Errorf("network inspect:\n%s", out)
	}

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"wider than a /64", []string{"--subnet6", "fd00:72::/48"}, "subnet fd00:72::/48 is wider than a /64, the size of one IPv6 link; give a /64"},
		{"narrower than a /120", []string{"--subnet6", "fd00:72::/124"}, "narrower than a /120"},
		{"link-local", []string{"--subnet6", "fe80::/64"}, "overlaps the link-local range fe80::/10"},
		{"multicast", []string{"--subnet6", "ff05::/64"}, "overlaps the multicast range ff00::/8"},
		{"reserved", []string{"--subnet6", "::/64"}, "overlaps the reserved range ::/8"},
		{"IPv4-mapped", []string{"--subnet6", "::ffff:10.0.0.0/120"}, "IPv4-mapped"},
		{"another network's", []string{"--subnet6", "fd00:70::/64"}, "fd00:70::/64"},
		{"an interface's own subnet", []string{"--subnet6", "fd00:99::/64"}, "subnet fd00:99::/64 overlaps interface " + veth + "'s fd00:99::/64 (address fd00:99::1)"},
		{"a gatewayed route", []string{"--subnet6", "fd00:98::/64"}, "overlaps the host's route to fd00:98::/64 via fd00:99::fe dev " + veth},
		{"IPv4 as --subnet6", []string{"--subnet6", "10.72.0.0/24"}, "--subnet6 10.72.0.0/24 is an IPv4 subnet"},
		{"gateway outside", []string{"--subnet6", "fd00:72::/64", "--gateway6", "fd00:73::1"}, "gateway fd00:73::1: outside"},
		{"gateway on the anycast address", []string{"--subnet6", "fd00:72::/64", "--gateway6", "fd00:72::"}, "fd00:72::"},
		{"gateway without its subnet", []string{"--ipv6", "--gateway6", "fd00:72::1"}, "--gateway6 fd00:72::1 needs the subnet it lies in; give --subnet6"},
		{"malformed", []string{"--subnet6", "fd00:72::/64x"}, "parse subnet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := w.snapshot()
			r := w.pt(append([]string{"network", "create", "x"}, c.args...)...)
			expectOneLineError(t, r, c.want)
			sameSnapshot(t, strings.Join(c.args, " "), before, w.snapshot())
		})
	}
}

// TestIPv6Endpoints: an endpoint of a dual-stack network gets an address
// of each family, the IPv6 gateway as a default route too, both in its
// record and listing, both in the endpoints map; the agent restarts onto
// them and a detach takes them away.
func TestIPv6Endpoints(t *testing.T) {
	w := newWorld(t, 3)
	w.startAgent()
	c0, c1 := w.containers[0], w.containers[1]
	w.ok("network", "create", "dual", "--subnet", "10.74.0.0/24", "--subnet6", "fd00:74::/64")
	var e0, e1 control.Endpoint
	w.okJSON(&e0, "endpoint", "attach", "dual", "e0", "--netns", c0.Path())
	w.okJSON(&e1, "endpoint", "attach", "dual", "e1", "--netns", c1.Path(), "--ip6", "fd00:74::99")
	if e0.IP != netip.MustParseAddr("10.74.0.2") || e0.IPv6 != netip.MustParseAddr("fd00:74::2") || e0.Gateway6 != netip.MustParseAddr("fd00:74::1") || e0.PrefixLen6 != 64 {
		t.Errorf("e0: %s/%d via %s, %s/%d via %s", e0.IP, e0.PrefixLen, e0.Gateway, e0.IPv6, e0.PrefixLen6, e0.Gateway6)
	}
	if e1.IPv6 != netip.MustParseAddr("fd00:74::99") {
		t.Errorf("e1 asked for fd00:74::99, got %s", e1.IPv6)
	}
	if out := c0.IP(t, "-6", "addr", "show", "dev", "eth0"); !strings.Contains(out, "fd00:74::2/64") {
		t.Errorf("e0's eth0:\n%s", out)
	}
	if out := c0.IP(t, "-6", "route", "show", "default"); !strings.Contains(out, "via fd00:74::1 dev eth0") {
		t.Errorf("e0's IPv6 default route:\n%s", out)
	}
	if ls := w.ok("endpoint", "ls"); !strings.Contains(ls, "10.74.0.2,fd00:74::2") {
		t.Errorf("endpoint ls shows no IPv6 address:\n%s", ls)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--ip6", "fd00:75::5"}, "outside every subnet"},
		{[]string{"--ip6", "10.74.0.9"}, "IPv6 address \"10.74.0.9\""},
		{[]string{"--ip6", "fd00:74::99"}, "fd00:74::99"},
	} {
		before := w.snapshot()
		r := w.pt(append([]string{"endpoint", "attach", "dual", "bad", "--netns", w.containers[2].Path()}, bad.args...)...)
		expectOneLineError(t, r, bad.want)
		sameSnapshot(t, strings.Join(bad.args, " "), before, w.snapshot())
	}
	if got := w.endpointKeys(); !strings.Contains(got, "fd00:74::2") || !strings.Contains(got, "fd00:74::99") {
		t.Errorf("endpoints map lacks the IPv6 addresses: %s", got)
	}

	before := w.snapshot()
	w.agent.stop(syscall.SIGKILL)
	w.startAgent()
	sameSnapshot(t, "a restart", before, w.snapshot())
	if got := w.endpointKeys(); !strings.Contains(got, "fd00:74::2") {
		t.Errorf("after a restart the endpoints map lacks fd00:74::2: %s", got)
	}

	w.ok("endpoint", "detach", "e0")
	if got := w.endpointKeys(); strings.Contains(got, "fd00:74::2") {
		t.Errorf("after detach the endpoints map still has fd00:74::2: %s", got)
	}
	// The address is free again, handed out next-fit: not straight away.
	var e2 control.Endpoint
	w.okJSON(&e2, "endpoint", "attach", "dual", "e2", "--netns", c0.Path())
	if e2.IPv6 != netip.MustParseAddr("fd00:74::3") {
		t.Errorf("next-fit after fd00:74::2: got %s, want fd00:74::3", e2.IPv6)
	}
}

// endpointKeys lists the addresses in the pinned endpoints map.
func (w *world) endpointKeys() string {
	w.t.Helper()
	var out []string
	for a := range w.endpointMACs() {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// ping6 pings until a reply comes or the tries run out: a fresh
// link-local address is tentative for a second or two.
func ping6(t *testing.T, ns *testenv.Netns, src, dst netip.Addr) error {
	t.Helper()
	var err error
	for i := range 5 {
		if err = ns.Ping6(src, dst, uint16(100+i)); err == nil {
			return nil
		}
	}
	return err
}

// TestIPv6Datapath: dual-stack endpoints reach each other over IPv6 (echo,
// link-local, TCP) and their gateway; networks stay apart, icc=false keeps
// a network's endpoints apart, a spoofed IPv6 source goes nowhere, and a
// LAN host routing to a network's IPv6 subnet reaches no container, while
// the host forwards IPv6.
func TestIPv6Datapath(t *testing.T) {
	w := newWorld(t, 5)
	w.host.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	w.host.IP(t, "-6", "addr", "add", "fd00:ff::1/64", "dev", w.uplink, "nodad")
	w.outside.IP(t, "-6", "addr", "add", "fd00:ff::2/64", "dev", "eth0", "nodad")
	w.outside.IP(t, "-6", "route", "add", "fd00:80::/64", "via", "fd00:ff::1")
	w.startAgent()
	w.ok("network", "create", "a", "--subnet", "10.80.0.0/24", "--subnet6", "fd00:80::/64")
	w.ok("network", "create", "b", "--subnet", "10.81.0.0/24", "--subnet6", "fd00:81::/64")
	w.ok("network", "create", "q", "--subnet", "10.82.0.0/24", "--subnet6", "fd00:82::/64", "--icc=false")
	eps := make([]control.Endpoint, 5)
	for i, net := range []string{"a", "a", "b", "q", "q"} {
		w.okJSON(&eps[i], "endpoint", "attach", net, fmt.Sprintf("e%d", i), "--netns", w.containers[i].Path())
	}
	c := w.containers
	for _, e := range eps {
		if !e.IPv6.IsValid() {
			t.Fatalf("endpoint %s has no IPv6 address", e.Name)
		}
	}

	t.Run("within a network", func(t *testing.T) {
		if err := ping6(t, c[0], netip.Addr{}, eps[1].IPv6); err != nil {
			t.Errorf("e0 pings e1's %s: %v", eps[1].IPv6, err)
		}
		if err := ping6(t, c[0], netip.Addr{}, eps[0].Gateway6); err != nil {
			t.Errorf("e0 pings its gateway %s: %v", eps[0].Gateway6, err)
		}
		mac, _ := net.ParseMAC(eps[1].MAC)
		ll := netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 2, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]}).WithZone("eth0")
		if err := ping6(t, c[0], netip.Addr{}, ll); err != nil {
			t.Errorf("e0 pings e1's link-local %s: %v", ll, err)
		}
		addr := netip.AddrPortFrom(eps[1].IPv6, 80).String()
		c[1].ServeTCP(t, addr)
		res, err := c[0].Dial("tcp", addr)
		expectEcho(t, res, err, eps[0].IPv6, addr)
	})

	t.Run("across networks", func(t *testing.T) {
		before := w.counter("drop_isolation")
		if err := c[0].Ping6(netip.Addr{}, eps[2].IPv6, 200); err == nil {
			t.Errorf("e0 (network a) pinged e2 (network b) at %s", eps[2].IPv6)
		}
		if w.counter("drop_isolation") == before {
			t.Error("drop_isolation did not count the ping across networks")
		}
		// The host's address in the other network is the host's.
		if err := ping6(t, c[0], netip.Addr{}, eps[2].Gateway6); err != nil {
			t.Errorf("e0 pings network b's gateway %s: %v", eps[2].Gateway6, err)
		}
	})

	t.Run("icc=false", func(t *testing.T) {
		// Its neighbour discovery passes; the echo itself is dropped.
		before := w.counter("drop_icc")
		if err := c[3].Ping6(netip.Addr{}, eps[4].IPv6, 300); err == nil {
			t.Errorf("e3 pinged e4 at %s on an icc=false network", eps[4].IPv6)
		}
		if w.counter("drop_icc") == before {
			t.Error("drop_icc did not count the ping")
		}
		if err := ping6(t, c[3], netip.Addr{}, eps[3].Gateway6); err != nil {
			t.Errorf("e3 pings its gateway: %v", err)
		}
	})

	t.Run("spoofed source", func(t *testing.T) {
		spoof := netip.MustParseAddr("fd00:80::99")
		c[0].IP(t, "-6", "addr", "add", spoof.String()+"/128", "dev", "eth0", "nodad")
		atE1 := c[1].Sniff(t, "eth0")
		fromSpoof := func(f []byte) bool {
			return len(f) >= 14+40 && f[12] == 0x86 && f[13] == 0xdd && netip.AddrFrom16([16]byte(f[14+8:14+24])) == spoof
		}
		before := w.counter("drop_spoofed")
		if err := c[0].Ping6(spoof, eps[1].IPv6, 400); err == nil {
			t.Errorf("a ping from %s, not e0's address, reached e1", spoof)
		}
		if got := atE1.Count(fromSpoof); got > 0 {
			t.Errorf("%d packets from %s reached e1", got, spoof)
		}
		if w.counter("drop_spoofed") == before {
			t.Error("drop_spoofed did not count the spoofed source")
		}
		if err := ping6(t, c[0], eps[0].IPv6, eps[1].IPv6); err != nil {
			t.Errorf("from its own address e0 still pings e1: %v", err)
		}
	})

	t.Run("a LAN host routing to the subnet", func(t *testing.T) {
		addr := netip.AddrPortFrom(eps[0].IPv6, 81).String()
		c[0].ServeTCP(t, addr)
		before := w.counter("drop_not_published")
		if res, err := w.outside.Dial("tcp", addr); err == nil {
			t.Errorf("the outside reached an unpublished port at %s: %+v", addr, res)
		}
		if w.counter("drop_not_published") == before {
			t.Error("drop_not_published did not count the attempt")
		}
		if err := ping6(t, w.outside, netip.Addr{}, eps[0].Gateway6); err != nil {
			t.Errorf("the outside pings the host's gateway address %s: %v", eps[0].Gateway6, err)
		}
	})
}

// TestIPv6StateRebuild: `pontoon state rebuild` brings a dual-stack
// network and its endpoints back from the interfaces and pinned maps,
// IPv6 subnet, gateway and addresses included, and their published
// ports, a wildcard spec's two families as one mapping.
func TestIPv6StateRebuild(t *testing.T) {
	w := newWorld(t, 2)
	w.startAgent()
	w.ok("network", "create", "dual", "--subnet", "10.76.0.0/24", "--subnet6", "fd00:76::/64")
	// Each family's masquerade comes back from its own map entry.
	w.ok("network", "create", "nat66", "--subnet", "10.77.0.0/24", "--subnet6", "fd00:77::/64", "--masquerade=false", "--masquerade6")
	w.ok("endpoint", "attach", "dual", "e0", "--netns", w.containers[0].Path())
	w.ok("endpoint", "attach", "dual", "e1", "--netns", w.containers[1].Path(), "--ip6", "fd00:76::abc")
	// Both families' bindings of a wildcard spec come back as one mapping.
	w.ok("port", "publish", "e0", "8080:80", "[::1]:8081:80", "0.0.0.0:8082:80/udp")
	before := w.snapshot()
	w.agent.stop(syscall.SIGTERM)
	path := control.StatePath(w.stateDir)
	os.Remove(control.LastGoodPath(path))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	r := w.inHost("state", "rebuild", "--state-dir", w.stateDir, "--bpffs", w.pins)
	if r.code != 0 {
		t.Fatalf("state rebuild: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	w.startAgent()
	sameSnapshot(t, "a rebuild", before, w.snapshot())
	var e1 control.Endpoint
	w.okJSON(&e1, "endpoint", "inspect", "e1")
	if e1.IPv6 != netip.MustParseAddr("fd00:76::abc") || e1.Gateway6 != netip.MustParseAddr("fd00:76::1") {
		t.Errorf("rebuilt e1: %s via %s", e1.IPv6, e1.Gateway6)
	}
	if out := w.ok("port", "ls", "e0"); !strings.Contains(out, "80/tcp -> 0.0.0.0:8080, [::]:8080") {
		t.Errorf("rebuilt wildcard mapping:\n%s", out)
	}
	var n control.NetworkInfo
	w.okJSON(&n, "network", "inspect", "nat66")
	if n.Masquerade || !n.Masquerade6 {
		t.Errorf("rebuilt nat66: masquerade %v masquerade6 %v, want false true", n.Masquerade, n.Masquerade6)
	}
}

// TestIPv6SocketHooks: host processes on IPv6 sockets reach the IPv4
// backend of a published port through the socket hooks, with no proxy:
// [::1]:P and the host's IPv6 address for a wildcard binding,
// ::ffff:127.0.0.1:P (a dual-stack client) for any loopback binding, TCP
// and connected UDP; getpeername shows what was dialled. [::1] does not
// reach a binding on 127.0.0.1 alone, as with Docker.
func TestIPv6SocketHooks(t *testing.T) {
	w := newWorld(t, 1)
	w.host.IP(t, "-6", "addr", "add", "fd00:ff::1/64", "dev", w.uplink, "nodad")
	w.startAgent()
	c0 := w.containers[0]
	w.ok("network", "create", "v4only", "--subnet", "10.78.0.0/24")
	w.ok("endpoint", "attach", "v4only", "e0", "--netns", c0.Path())
	c0.ServeTCP(t, ":80")
	c0.ServeUDP(t, ":53")
	w.ok("port", "publish", "e0", "8080:80", "127.0.0.1:9090:80", "5353:53/udp")
	gw := netip.MustParseAddr("10.78.0.1") // the backend sees the host's IPv4 source on its bridge

	for _, c := range []struct{ network, addr, peer string }{
		{"tcp", "[::1]:8080", "[::1]:8080"},
		{"tcp", "[fd00:ff::1]:8080", "[fd00:ff::1]:8080"},
		{"tcp", "[::ffff:127.0.0.1]:8080", "127.0.0.1:8080"},
		{"tcp", "[::ffff:127.0.0.1]:9090", "127.0.0.1:9090"},
		{"udp-connected", "[::1]:5353", "[::1]:5353"},
		{"udp-connected", "[::ffff:127.0.0.1]:5353", "127.0.0.1:5353"},
	} {
		t.Run(c.network+" "+c.addr, func(t *testing.T) {
			res, err := w.host.DialFrom(t, w.cgroup, c.network, c.addr)
			if err != nil {
				t.Fatalf("dial %s: %v", c.addr, err)
			}
			if res.Peer != c.peer {
				t.Errorf("getpeername: %s, want %s", res.Peer, c.peer)
			}
			if c.network == "tcp" {
				expectEcho(t, res, err, gw, c.addr)
			}
		})
	}
	t.Run("[::1] does not reach a 127.0.0.1 binding", func(t *testing.T) {
		if res, err := w.host.DialFrom(t, w.cgroup, "tcp", "[::1]:9090"); err == nil {
			t.Errorf("[::1]:9090 reached %+v", res)
		}
	})
	t.Run("host binds of what connect6 reaches are refused", func(t *testing.T) {
		// A binding on 127.0.0.1 alone leaves [::1] free, as does an
		// unpublished port.
		expectHostBinds(t, w,
			[]string{"tcp6 [::1]:8080", "tcp6 [fd00:ff::1]:8080", "udp6 [::1]:5353"},
			[]string{"tcp6 [::1]:9090", "tcp6 [fd00:ff::1]:8081"})
	})
	t.Run("a container's own [::1] is its own", func(t *testing.T) {
		if res, err := c0.DialFrom(t, w.cgroup, "tcp", "[::1]:8080"); err == nil {
			t.Errorf("the container's [::1]:8080 reached %+v", res)
		}
	})
}

// TestIPv6Heal: a dual-stack endpoint's deleted veth comes back with its
// IPv6 address and reaches its peer again; the bridge's IPv6 gateway,
// taken off, is put back.
func TestIPv6Heal(t *testing.T) {
	w := newWorld(t, 2)
	w.startAgent()
	var net control.NetworkInfo
	w.okJSON(&net, "network", "create", "dual", "--subnet", "10.79.0.0/24", "--subnet6", "fd00:79::/64")
	var e0, e1 control.Endpoint
	w.okJSON(&e0, "endpoint", "attach", "dual", "e0", "--netns", w.containers[0].Path())
	w.okJSON(&e1, "endpoint", "attach", "dual", "e1", "--netns", w.containers[1].Path())

	w.host.IP(t, "link", "del", e0.HostIf)
	eventually(t, "e0's IPv6 address is back", func() bool {
		// eth0 is gone until the agent recreates the pair.
		out, err := w.containers[0].TryIP("-6", "addr", "show", "dev", "eth0")
		return err == nil && strings.Contains(out, e0.IPv6.String()+"/64")
	})
	if err := ping6(t, w.containers[1], netip.Addr{}, e0.IPv6); err != nil {
		t.Errorf("e1 pings the repaired e0 at %s: %v", e0.IPv6, err)
	}

	gw := "fd00:79::1/64"
	w.host.IP(t, "-6", "addr", "del", gw, "dev", net.Bridge)
	eventually(t, "gateway "+gw+" is back", func() bool {
		return strings.Contains(w.host.IP(t, "-6", "addr", "show", "dev", net.Bridge), gw)
	})
	if err := ping6(t, w.containers[0], netip.Addr{}, e0.Gateway6); err != nil {
		t.Errorf("e0 pings its gateway again: %v", err)
	}
}
