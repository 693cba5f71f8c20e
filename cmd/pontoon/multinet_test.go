package main

import (
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// multiWorld is a container c1 on two networks (c1 on n1 as eth0, c1b on
// n2 as eth1), a peer on each network (p1, p2), a third container on n1
// only (c3), and a spare namespace.
type multiWorld struct {
	*world
	c1, p1, p2, c3, spare *testenv.Netns
	e1, e2, ep1, ep2, e3  control.Endpoint
}

func newMultiWorld(t *testing.T) *multiWorld {
	w := &multiWorld{world: newWorld(t, 5)}
	w.c1, w.p1, w.p2, w.c3, w.spare = w.containers[0], w.containers[1], w.containers[2], w.containers[3], w.containers[4]
	w.startAgent()
	w.ok("network", "create", "n1", "--subnet", "10.81.0.0/24")
	// n2 hands out from the upper half only, and never .128.
	w.ok("network", "create", "n2", "--subnet", "10.82.0.0/24", "--ip-range", "10.82.0.128/25", "--aux-address", "router=10.82.0.128")
	w.okJSON(&w.e1, "endpoint", "attach", "n1", "c1", "--netns", w.c1.Path())
	w.okJSON(&w.e2, "endpoint", "attach", "n2", "c1b", "--netns", w.c1.Path())
	w.okJSON(&w.ep1, "endpoint", "attach", "n1", "p1", "--netns", w.p1.Path())
	w.okJSON(&w.ep2, "endpoint", "attach", "n2", "p2", "--netns", w.p2.Path())
	w.okJSON(&w.e3, "endpoint", "attach", "n1", "c3", "--netns", w.c3.Path())
	// Each server listens on one address only: a connection that reached
	// the wrong endpoint's address would be refused.
	for _, s := range []struct {
		ns *testenv.Netns
		e  control.Endpoint
	}{{w.c1, w.e1}, {w.c1, w.e2}, {w.p1, w.ep1}, {w.p2, w.ep2}, {w.c3, w.e3}} {
		s.ns.ServeTCP(t, netip.AddrPortFrom(s.e.IP, 80).String())
	}
	return w
}

// defaultRoutes lists a namespace's IPv4 default routes of the main table.
func defaultRoutes(t *testing.T, ns *testenv.Netns) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(ns.IP(t, "-4", "route", "show", "default")), "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func wantDefaultRoute(t *testing.T, ns *testenv.Netns, want string) {
	t.Helper()
	if got := defaultRoutes(t, ns); len(got) != 1 || !strings.HasPrefix(got[0], want) {
		t.Errorf("default routes in %s: %q, want exactly one, %q", ns.Name, got, want)
	}
}

func endpointAddr(e control.Endpoint) string { return netip.AddrPortFrom(e.IP, 80).String() }

// reaches dials addr from ns and checks the server saw source.
func reaches(t *testing.T, ns *testenv.Netns, addr string, source netip.Addr) {
	t.Helper()
	res, err := ns.Dial("tcp", addr)
	expectEcho(t, res, err, source, ns.Name+" -> "+addr)
}

func blocked(t *testing.T, ns *testenv.Netns, addr string) {
	t.Helper()
	if res, err := ns.Dial("tcp", addr); err == nil {
		t.Errorf("%s reached %s (reply %q); the networks must stay apart", ns.Name, addr, res.Reply)
	}
}

// TestMultiNetworkEndpoints: a namespace on two networks gets eth0 and
// eth1 with one default route, talks to both networks, has ports published
// on each endpoint reached from outside and through the socket hooks, and
// does not join the networks for anyone else.
func TestMultiNetworkEndpoints(t *testing.T) {
	w := newMultiWorld(t)
	hostPort := func(p string) string { return w.hostIP.String() + ":" + p }
	w.ok("port", "publish", "c1", "8081:80")
	w.ok("port", "publish", "c1b", "8082:80")
	w.ok("port", "publish", "p1", "8091:80")
	w.ok("port", "publish", "p2", "8092:80")

	checkInterfaces := func(t *testing.T) {
		if w.e1.IfName != "eth0" || w.e1.NoDefaultRoute || w.e2.IfName != "eth1" || !w.e2.NoDefaultRoute {
			t.Errorf("c1 is %s (no default route: %v), c1b %s (%v); want eth0 with and eth1 without the default route",
				w.e1.IfName, w.e1.NoDefaultRoute, w.e2.IfName, w.e2.NoDefaultRoute)
		}
		for _, e := range []control.Endpoint{w.e1, w.e2} {
			if out := w.c1.IP(t, "-4", "-o", "addr", "show", e.IfName); !strings.Contains(out, e.IP.String()+"/24") {
				t.Errorf("%s in c1 lacks %s/24: %s", e.IfName, e.IP, out)
			}
		}
		wantDefaultRoute(t, w.c1, "default via 10.81.0.1 dev eth0")
	}
	checkTraffic := func(t *testing.T) {
		// Both networks' sides: the peers and the gateways.
		reaches(t, w.c1, endpointAddr(w.ep1), w.e1.IP)
		reaches(t, w.c1, endpointAddr(w.ep2), w.e2.IP)
		reaches(t, w.p2, endpointAddr(w.e2), w.ep2.IP)
		for _, gw := range []string{"10.81.0.1", "10.82.0.1"} {
			if from, err := w.c1.Ping(netip.MustParseAddr(gw), 0x4d31); err != nil || from.String() != gw {
				t.Errorf("ping gateway %s from c1: reply from %s, %v", gw, from, err)
			}
		}
		// Published ports on each endpoint, from outside: the reply of
		// the eth1 one must leave by eth1 although the default route is
		// eth0's.
		for _, p := range []string{"8081", "8082"} {
			res, err := w.outside.Dial("tcp", hostPort(p))
			expectEcho(t, res, err, w.outsideIP, "outside -> "+hostPort(p))
		}
		// Socket hooks: a host process reaches both endpoints' ports.
		for _, c := range []struct {
			port string
			gw   netip.Addr
		}{{"8081", netip.MustParseAddr("10.81.0.1")}, {"8082", netip.MustParseAddr("10.82.0.1")}} {
			res, err := w.host.DialFrom(t, w.cgroup, "tcp", hostPort(c.port))
			expectEcho(t, res, err, c.gw, "host -> "+hostPort(c.port))
		}
		// c1 dialling hostIP:P reaches a backend on either of its
		// networks directly, from its address in that network.
		res, err := w.c1.DialFrom(t, w.cgroup, "tcp", hostPort("8091"))
		expectEcho(t, res, err, w.e1.IP, "c1 -> "+hostPort("8091"))
		res, err = w.c1.DialFrom(t, w.cgroup, "tcp", hostPort("8092"))
		expectEcho(t, res, err, w.e2.IP, "c1 -> "+hostPort("8092"))
		// Without the socket hooks, tc's hairpin path takes it through
		// the host, to either network.
		res, err = w.c1.Dial("tcp", hostPort("8091"))
		expectEcho(t, res, err, netip.MustParseAddr("10.81.0.1"), "c1 -> "+hostPort("8091")+" (hairpin)")
		res, err = w.c1.Dial("tcp", hostPort("8092"))
		expectEcho(t, res, err, netip.MustParseAddr("10.82.0.1"), "c1 -> "+hostPort("8092")+" (hairpin)")
	}
	checkIsolation := func(t *testing.T) {
		// c3 is on n1 only: n2 stays out of its reach, c1's n2 address
		// included.
		reaches(t, w.c3, endpointAddr(w.e1), w.e3.IP)
		blocked(t, w.c3, endpointAddr(w.ep2))
		blocked(t, w.c3, endpointAddr(w.e2))
		blocked(t, w.p2, endpointAddr(w.e1))
		blocked(t, w.p2, endpointAddr(w.ep1))
		blocked(t, w.p1, endpointAddr(w.ep2))
	}

	t.Run("interfaces and the default route", checkInterfaces)
	t.Run("traffic to both networks", checkTraffic)
	t.Run("isolation for a container on one network", checkIsolation)
	t.Run("the range and the auxiliary address", func(t *testing.T) {
		if w.e2.IP != netip.MustParseAddr("10.82.0.129") || w.ep2.IP != netip.MustParseAddr("10.82.0.130") {
			t.Errorf("n2 gave %s and %s, want 10.82.0.129 and .130 (the range, skipping the auxiliary .128)", w.e2.IP, w.ep2.IP)
		}
		var n control.NetworkInfo
		w.okJSON(&n, "network", "inspect", "n2")
		if len(n.Subnets) != 1 || n.Subnets[0].IPRange.String() != "10.82.0.128/25" || n.Subnets[0].AuxAddresses["router"].String() != "10.82.0.128" {
			t.Errorf("inspect n2: %+v, want the range and the auxiliary address", n.Subnets)
		}
		if out := w.ok("network", "inspect", "n2"); !strings.Contains(out, "10.82.0.128/25") || !strings.Contains(out, "router=10.82.0.128") {
			t.Errorf("inspect n2 does not show the range and the auxiliary address:\n%s", out)
		}
	})

	before := w.snapshot()
	w.agent.stop(syscall.SIGTERM)
	w.waitNotify("STOPPING=1")
	// Drift: c1's second pair is lost while no agent runs.
	w.host.IP(t, "link", "del", w.e2.HostIf)
	w.startAgent()
	t.Run("restart", func(t *testing.T) {
		after := w.snapshot()
		ifindex := regexp.MustCompile(`@if\d+`)
		for _, s := range []*snapshot{&before, &after} {
			// The recreated host veth has a new index and comes last
			// in the list.
			for k, v := range s.links {
				lines := strings.Split(ifindex.ReplaceAllString(v, ""), "\n")
				slices.Sort(lines)
				s.links[k] = strings.Join(lines, "\n")
			}
			for k, v := range s.routes {
				lines := strings.Split(v, "\n")
				slices.Sort(lines)
				s.routes[k] = strings.Join(lines, "\n")
			}
		}
		sameSnapshot(t, "a restart", before, after)
		checkInterfaces(t)
		checkTraffic(t)
		checkIsolation(t)
	})

	t.Run("detach the default endpoint", func(t *testing.T) {
		w.ok("endpoint", "detach", "c1")
		wantDefaultRoute(t, w.c1, "default via 10.82.0.1 dev eth1")
		var e2 control.Endpoint
		w.okJSON(&e2, "endpoint", "inspect", "c1b")
		if e2.NoDefaultRoute {
			t.Error("c1b's record does not hold the default route it took over")
		}
		if bs := strings.Join(w.bindings(), "\n"); strings.Contains(bs, ":8081") || !strings.Contains(bs, ":8082") {
			t.Errorf("bindings after detaching c1: %s; want 8081 gone and 8082 kept", bs)
		}
		if _, err := w.outside.Dial("tcp", hostPort("8081")); err == nil {
			t.Error("c1's published port answers after its endpoint was detached")
		}
		res, err := w.outside.Dial("tcp", hostPort("8082"))
		expectEcho(t, res, err, w.outsideIP, "outside -> "+hostPort("8082"))
		reaches(t, w.c1, endpointAddr(w.ep2), w.e2.IP)
	})

	t.Run("attach with --default-route, then detach the other", func(t *testing.T) {
		var e1 control.Endpoint
		w.okJSON(&e1, "endpoint", "attach", "n1", "c1", "--netns", w.c1.Path(), "--ip", w.e1.IP.String(), "--default-route")
		if e1.IfName != "eth0" || e1.NoDefaultRoute {
			t.Errorf("re-attached c1 is %s (no default route: %v), want eth0 with the default route", e1.IfName, e1.NoDefaultRoute)
		}
		wantDefaultRoute(t, w.c1, "default via 10.81.0.1 dev eth0")
		w.ok("endpoint", "detach", "c1b")
		wantDefaultRoute(t, w.c1, "default via 10.81.0.1 dev eth0")
		if bs := strings.Join(w.bindings(), "\n"); strings.Contains(bs, ":8082") {
			t.Errorf("c1b's port 8082 is still bound after its detach: %s", bs)
		}
		if rules := w.c1.IP(t, "-4", "rule"); strings.Contains(rules, w.e2.IP.String()) {
			t.Errorf("c1b's source rule outlived it:\n%s", rules)
		}
		reaches(t, w.c1, endpointAddr(w.ep1), w.e1.IP)
		// With n2 gone from c1, p2 is out of its reach.
		blocked(t, w.c1, endpointAddr(w.ep2))
	})
}

// TestMultiNetworkBadInput: mistakes with the new options are one line
// saying what to do, a non-zero exit and no change.
func TestMultiNetworkBadInput(t *testing.T) {
	w := newMultiWorld(t)
	// A third network c1 is not on, for an --ifname c1 has already.
	w.ok("network", "create", "n3b", "--subnet", "10.85.0.0/24")
	cases := []struct {
		name string
		args []string
		says string
	}{
		{"same network twice", []string{"endpoint", "attach", "n1", "again", "--netns", w.c1.Path()}, "already attached to network n1 as endpoint c1"},
		{"interface name taken", []string{"endpoint", "attach", "n3b", "x", "--netns", w.c1.Path(), "--ifname", "eth1"}, "as eth1 already; give another --ifname"},
		{"bad interface name", []string{"endpoint", "attach", "n1", "x", "--netns", w.spare.Path(), "--ifname", "lo"}, "interface name \"lo\""},
		{"long interface name", []string{"endpoint", "attach", "n1", "x", "--netns", w.spare.Path(), "--ifname", "averyveryverylongname"}, "1-15 letters"},
		{"aux address reserved", []string{"endpoint", "attach", "n2", "x", "--netns", w.spare.Path(), "--ip", "10.82.0.128"}, "reserved as auxiliary address router"},
		{"range without subnet", []string{"network", "create", "n3", "--ip-range", "10.83.0.0/25"}, "needs the subnet it lies in; give --subnet"},
		{"aux without subnet", []string{"network", "create", "n3", "--aux-address", "r=10.83.0.5"}, "needs the subnet it lies in; give --subnet"},
		{"range outside", []string{"network", "create", "n3", "--subnet", "10.83.0.0/24", "--ip-range", "10.84.0.0/25"}, "outside subnet 10.83.0.0/24"},
		{"aux outside", []string{"network", "create", "n3", "--subnet", "10.83.0.0/24", "--aux-address", "r=10.84.0.5"}, "outside subnet 10.83.0.0/24"},
		{"aux malformed", []string{"network", "create", "n3", "--subnet", "10.83.0.0/24", "--aux-address", "10.83.0.5"}, "write it as name=IP"},
		{"two gateways for a subnet", []string{"network", "create", "n3", "--subnet", "10.83.0.0/24", "--gateway", "10.83.0.1", "--gateway", "10.83.0.2"}, "one gateway per subnet"},
		{"overlapping subnets", []string{"network", "create", "n3", "--subnet", "10.83.0.0/24", "--subnet", "10.83.0.0/25"}, "they overlap"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := w.snapshot()
			r := w.pt(c.args...)
			if r.code == 0 || !strings.Contains(r.stderr, c.says) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Errorf("pontoon %s: exit %d, stderr %q; want a one-line refusal saying %q", strings.Join(c.args, " "), r.code, r.stderr, c.says)
			}
			sameSnapshot(t, c.name, before, w.snapshot())
		})
	}
}

// TestSeveralSubnets: a network with two subnets gives addresses from the
// first with room; each endpoint gets its own subnet's gateway, and the
// bridge carries both.
func TestSeveralSubnets(t *testing.T) {
	w := newWorld(t, 3)
	w.startAgent()
	var n control.NetworkInfo
	w.okJSON(&n, "network", "create", "multi", "--subnet", "10.86.0.0/30", "--subnet", "10.87.0.0/24", "--gateway", "10.87.0.254")
	if len(n.Subnets) != 2 || n.Subnets[1].Gateway.String() != "10.87.0.254" || n.Subnet.String() != "10.86.0.0/30" {
		t.Fatalf("created %+v, want two subnets, the second's gateway 10.87.0.254", n)
	}
	var a, b control.Endpoint
	w.okJSON(&a, "endpoint", "attach", "multi", "a", "--netns", w.containers[0].Path())
	w.okJSON(&b, "endpoint", "attach", "multi", "b", "--netns", w.containers[1].Path())
	if a.IP.String() != "10.86.0.2" || a.PrefixLen != 30 || b.IP.String() != "10.87.0.1" || b.PrefixLen != 24 || b.Gateway.String() != "10.87.0.254" {
		t.Errorf("endpoints %s/%d and %s/%d via %s; want 10.86.0.2/30, then 10.87.0.1/24 via 10.87.0.254", a.IP, a.PrefixLen, b.IP, b.PrefixLen, b.Gateway)
	}
	wantDefaultRoute(t, w.containers[1], "default via 10.87.0.254 dev eth0")
	br := w.host.IP(t, "-4", "-o", "addr", "show", n.Bridge)
	for _, gw := range []string{"10.86.0.1/30", "10.87.0.254/24"} {
		if !strings.Contains(br, gw) {
			t.Errorf("bridge %s lacks gateway %s: %s", n.Bridge, gw, br)
		}
	}
	for _, c := range []struct {
		ns *testenv.Netns
		gw string
	}{{w.containers[0], "10.86.0.1"}, {w.containers[1], "10.87.0.254"}} {
		if from, err := c.ns.Ping(netip.MustParseAddr(c.gw), 0x4d32); err != nil || from.String() != c.gw {
			t.Errorf("ping gateway %s from %s: reply from %s, %v", c.gw, c.ns.Name, from, err)
		}
	}
	// Published ports on an endpoint of the second subnet.
	w.containers[1].ServeTCP(t, netip.AddrPortFrom(b.IP, 80).String())
	w.ok("port", "publish", "b", "8083:80")
	res, err := w.outside.Dial("tcp", w.hostIP.String()+":8083")
	expectEcho(t, res, err, w.outsideIP, "outside -> 8083")
	outside := netip.AddrPortFrom(w.outsideIP, 9000).String()
	w.outside.ServeTCP(t, outside)
	reaches(t, w.containers[1], outside, w.hostIP)
	// One network: its subnets reach each other directly.
	reaches(t, w.containers[0], netip.AddrPortFrom(b.IP, 80).String(), a.IP)

	// After a restart the subnets, the gateway and the cursor hold.
	w.agent.stop(syscall.SIGTERM)
	w.waitNotify("STOPPING=1")
	w.startAgent()
	var again control.NetworkInfo
	w.okJSON(&again, "network", "inspect", "multi")
	if len(again.Subnets) != 2 || !reflect.DeepEqual(again.Subnets, n.Subnets) {
		t.Errorf("after a restart the network is %+v, want %+v", again.Subnets, n.Subnets)
	}
	res, err = w.outside.Dial("tcp", w.hostIP.String()+":8083")
	expectEcho(t, res, err, w.outsideIP, "outside -> 8083 after a restart")
	// Masqueraded out of the second subnet.
	reaches(t, w.containers[1], outside, w.hostIP)
	reaches(t, w.containers[0], netip.AddrPortFrom(b.IP, 80).String(), a.IP)
	var c control.Endpoint
	w.okJSON(&c, "endpoint", "attach", "multi", "c", "--netns", w.containers[2].Path())
	if c.IP.String() != "10.87.0.2" {
		t.Errorf("after a restart the next address is %s, want 10.87.0.2", c.IP)
	}
	w.ok("network", "rm", "multi", "--force")
	if out := w.host.IP(t, "-br", "link"); strings.Contains(out, n.Bridge+" ") {
		t.Errorf("bridge %s left after network rm:\n%s", n.Bridge, out)
	}
}
