package main

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// counter reads one datapath counter from the agent's status.
func (w *world) counter(name string) uint64 {
	w.t.Helper()
	var s control.Status
	w.okJSON(&s, "status")
	return s.Counters[name].Packets
}

// TestRoutedNetwork: the outside reaches a --routed network's containers
// by their own addresses, on any port and without masquerade either way,
// while a default network's containers stay out of reach except through
// published ports.
func TestRoutedNetwork(t *testing.T) {
	w := newWorld(t, 2)
	w.startAgent()
	cr, cn := w.containers[0], w.containers[1]

	var routed, nat control.NetworkInfo
	w.okJSON(&routed, "network", "create", "rt", "--subnet", "10.84.0.0/24", "--routed")
	w.okJSON(&nat, "network", "create", "nt", "--subnet", "10.85.0.0/24")
	t.Run("routed is stored and shown", func(t *testing.T) {
		if !routed.Routed || routed.Masquerade || nat.Routed || !nat.Masquerade {
			t.Errorf("routed network %+v, default network %+v", routed.Network, nat.Network)
		}
		var ns []control.NetworkInfo
		w.okJSON(&ns, "network", "ls")
		if len(ns) != 2 || ns[0].Name != "nt" || ns[0].Routed || !ns[1].Routed {
			t.Errorf("network ls: %+v", ns)
		}
		ls := w.ok("network", "ls")
		if !strings.Contains(ls, "MODE") || !regexpLine(ls, `^rt\s.*\srouted\s`) || !regexpLine(ls, `^nt\s.*\snat\s`) {
			t.Errorf("network ls text:\n%s", ls)
		}
		inspect := w.ok("network", "inspect", "rt")
		if !regexpLine(inspect, `^routed:\s+true$`) || !regexpLine(inspect, `^masquerade:\s+false$`) || !strings.Contains(inspect, "route to 10.84.0.0/24") {
			t.Errorf("network inspect text:\n%s", inspect)
		}
	})

	var er, en control.Endpoint
	w.okJSON(&er, "endpoint", "attach", "rt", "r1", "--netns", cr.Path())
	w.okJSON(&en, "endpoint", "attach", "nt", "n1", "--netns", cn.Path())
	for _, c := range []*testenv.Netns{cr, cn} {
		c.ServeTCP(t, ":80")
		c.ServeUDP(t, ":53")
	}
	// The LAN routes both subnets via the host, as a router would.
	for _, sub := range []string{"10.84.0.0/24", "10.85.0.0/24"} {
		w.outside.IP(t, "route", "add", sub, "via", w.hostIP.String())
	}

	t.Run("the outside reaches a routed container by its address", func(t *testing.T) {
		for _, network := range []string{"tcp", "udp"} {
			port := map[string]string{"tcp": "80", "udp": "53"}[network]
			addr := net.JoinHostPort(er.IP.String(), port)
			res, err := w.outside.Dial(network, addr)
			expectEcho(t, res, err, w.outsideIP, addr)
		}
	})
	t.Run("the outside does not reach a default network's container", func(t *testing.T) {
		dropped := w.counter("drop_not_published")
		for _, network := range []string{"tcp", "udp"} {
			port := map[string]string{"tcp": "80", "udp": "53"}[network]
			addr := net.JoinHostPort(en.IP.String(), port)
			if res, err := w.outside.Dial(network, addr); err == nil {
				t.Errorf("outside reached %s/%s of a default network: %+v", addr, network, res)
			}
		}
		if got := w.counter("drop_not_published"); got <= dropped {
			t.Errorf("drop_not_published %d, was %d: the drops are not counted", got, dropped)
		}
	})
	t.Run("a published port of the default network still works", func(t *testing.T) {
		w.ok("port", "publish", "n1", "8080:80")
		addr := netip.AddrPortFrom(w.hostIP, 8080).String()
		res, err := w.outside.Dial("tcp", addr)
		expectEcho(t, res, err, w.outsideIP, addr)
	})
	t.Run("a routed container goes out with its own address, a default one masqueraded", func(t *testing.T) {
		w.outside.ServeTCP(t, ":8000")
		addr := netip.AddrPortFrom(w.outsideIP, 8000).String()
		res, err := cr.Dial("tcp", addr)
		expectEcho(t, res, err, er.IP, addr)
		res, err = cn.Dial("tcp", addr)
		expectEcho(t, res, err, w.hostIP, addr)
	})
	t.Run("routed survives a restart", func(t *testing.T) {
		w.agent.stop(syscall.SIGTERM)
		w.startAgent()
		var n control.NetworkInfo
		w.okJSON(&n, "network", "inspect", "rt")
		if !n.Routed || n.Masquerade {
			t.Errorf("after a restart: %+v", n.Network)
		}
		addr := net.JoinHostPort(er.IP.String(), "80")
		res, err := w.outside.Dial("tcp", addr)
		expectEcho(t, res, err, w.outsideIP, addr)
	})
}

// regexpLine reports whether some line of text matches the expression.
func regexpLine(text, expr string) bool {
	for _, line := range strings.Split(text, "\n") {
		if matched, _ := regexp.MatchString(expr, strings.TrimRight(line, " ")); matched {
			return true
		}
	}
	return false
}

// TestIPForwardRestored: the agent records the net.ipv4.ip_forward it
// found before turning it on (a restarted agent finds its own "1" and
// keeps the first value), and cleanup puts it back.
func TestIPForwardRestored(t *testing.T) {
	w := newWorld(t, 0)
	forward := func() string {
		t.Helper()
		return strings.TrimSpace(w.host.Exec(t, "cat", "/proc/sys/net/ipv4/ip_forward"))
	}
	w.host.Sysctl(t, "net.ipv4.ip_forward", "0")
	w.startAgent()
	if got := forward(); got != "1" {
		t.Fatalf("ip_forward %s with the agent running, want 1", got)
	}
	w.agent.stop(syscall.SIGTERM)
	w.startAgent()
	w.agent.stop(syscall.SIGTERM)
	if got := forward(); got != "1" {
		t.Fatalf("ip_forward %s after the agent stopped, want 1 until cleanup", got)
	}

	out := w.host.Exec(t, bin, "cleanup", "--state-dir", w.stateDir, "--bpffs", w.pins)
	if got := forward(); got != "0" {
		t.Errorf("ip_forward %s after cleanup, want the 0 the first agent found", got)
	}
	if !strings.Contains(out, "restored net.ipv4.ip_forward to 0") {
		t.Errorf("cleanup does not say it restored ip_forward:\n%s", out)
	}

	// The state file stays; the next agent records afresh, and a host
	// that forwarded already keeps forwarding.
	w.host.Sysctl(t, "net.ipv4.ip_forward", "1")
	w.startAgent()
	w.agent.stop(syscall.SIGTERM)
	w.host.Exec(t, bin, "cleanup", "--state-dir", w.stateDir, "--bpffs", w.pins, "--purge")
	if got := forward(); got != "1" {
		t.Errorf("ip_forward %s after cleanup, want the 1 the agent found", got)
	}
}

// TestCleanupSafety: cleanup deletes the interfaces the agent made and
// leaves every other one, labelled or not: an alias is no proof.
func TestCleanupSafety(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	c1 := w.containers[0]
	custom := "ppc" + w.id
	w.ok("network", "create", "net", "--subnet", "10.86.0.0/24")
	w.ok("network", "create", "custom", "--subnet", "10.87.0.0/24", "--bridge", custom)
	var ep control.Endpoint
	w.okJSON(&ep, "endpoint", "attach", "net", "c1", "--netns", c1.Path())
	w.agent.stop(syscall.SIGTERM)

	// Decoys: labels that do not fit the interface they are on.
	decoys := map[string][]string{
		"ppd" + w.id:       {"type", "bridge", "pontoon:ep:c1"},         // an endpoint's label, not a veth
		"ppb" + w.id:       {"type", "bridge", "pontoon:net:ghost"},     // no record, not named pt-ghost
		"ppv" + w.id:       {"type", "veth", "pontoon:ep:ghost"},        // not named as ghost's veth
		"ppn" + w.id:       {"type", "bridge", "pontoon:net:custom"},    // custom's bridge is another
		"ppx" + w.id:       {"type", "bridge", "pontoon:something-new"}, // no kind Pontoon makes
		"ppu" + w.id + "x": {"type", "bridge", ""},                      // unlabelled
	}
	for name, d := range decoys {
		w.host.IP(t, append([]string{"link", "add", name}, d[:2]...)...)
		if d[2] != "" {
			w.host.IP(t, "link", "set", name, "alias", d[2])
		}
	}
	// A crash leftover: a bridge labelled and named as the agent names
	// network ghost2's, whose record is gone.
	w.host.IP(t, "link", "add", "pt-ghost2", "type", "bridge")
	w.host.IP(t, "link", "set", "pt-ghost2", "alias", "pontoon:net:ghost2")

	out := w.host.Exec(t, bin, "cleanup", "--state-dir", w.stateDir, "--bpffs", w.pins)
	t.Logf("cleanup:\n%s", out)
	links := w.host.IP(t, "-br", "link")
	has := func(name string) bool {
		for _, line := range strings.Split(links, "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.SplitN(f[0], "@", 2)[0] == name {
				return true
			}
		}
		return false
	}
	for name := range decoys {
		if !has(name) {
			t.Errorf("cleanup deleted %s, which nothing proves Pontoon made", name)
		}
		if decoys[name][2] != "" && !strings.Contains(out, "left "+name+" ") {
			t.Errorf("cleanup does not say it left %s", name)
		}
	}
	for _, name := range []string{"pt-net", custom, ep.HostIf, "pt-ghost2"} {
		if has(name) {
			t.Errorf("cleanup left %s, which the agent made", name)
		}
	}
	if !has(w.uplink) {
		t.Errorf("cleanup deleted the uplink %s", w.uplink)
	}
	if got := c1.IP(t, "-br", "link"); strings.Contains(got, "eth0") {
		t.Errorf("eth0 left in the container:\n%s", got)
	}
}

// TestSNATPorts: masquerade's source ports stay clear of the kernel's
// ephemeral ports and the published-port range, by default and when given,
// and status shows them.
func TestSNATPorts(t *testing.T) {
	w := newWorld(t, 1)
	c1 := w.containers[0]
	// Ephemeral 20000-50000: published ports get 50001-65535, masquerade
	// 1024-19999.
	w.host.Sysctl(t, "net.ipv4.ip_local_port_range", "20000 50000")
	w.host.Sysctl(t, "net.ipv4.ip_local_reserved_ports", "")
	w.startAgent()
	w.ok("network", "create", "net", "--subnet", "10.88.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", c1.Path())
	w.outside.ServeTCP(t, ":8000")
	// The container picks source ports from its own 32768-60999.
	server := netip.AddrPortFrom(w.outsideIP, 8000).String()

	check := func(t *testing.T, first, last uint16) {
		t.Helper()
		want := fmt.Sprintf("%d-%d", first, last)
		var s control.Status
		w.okJSON(&s, "status")
		if s.SNATPorts != want || s.DynamicPorts != "50001-65535" {
			t.Errorf("status: masquerade ports %q, dynamic ports %q; want %s and 50001-65535", s.SNATPorts, s.DynamicPorts, want)
		}
		if text := w.ok("status"); !regexpLine(text, `^masquerade ports:\s+`+want+`$`) {
			t.Errorf("status text does not show masquerade ports %s:\n%s", want, text)
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(w.pins, "config"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		cfg, err := maps.NewConfig(m).Get()
		if err != nil || cfg.SnatPortMin != first || cfg.SnatPortMax != last {
			t.Errorf("config map: %+v %v, want SNAT ports %s", cfg, err, want)
		}
		for range 5 {
			res, err := c1.Dial("tcp", server)
			expectEcho(t, res, err, w.hostIP, server)
			peer, _, _ := testenv.ParseEcho(res.Reply)
			seen, err := netip.ParseAddrPort(peer)
			if err != nil || seen.Port() < first || seen.Port() > last {
				t.Errorf("masqueraded flow left from %s, want a port in %s", peer, want)
			}
		}
	}
	t.Run("default", func(t *testing.T) { check(t, 1024, 19999) })
	t.Run("given", func(t *testing.T) {
		w.agent.stop(syscall.SIGTERM)
		w.startAgent("--snat-ports", "5000-5099")
		check(t, 5000, 5099)
	})
	t.Run("refused", func(t *testing.T) {
		// With the agent running, its namespace, pins and cgroup would
		// be refused first; with a new state directory beside its
		// datapath, the state check would.
		w.agent.stop(syscall.SIGTERM)
		for _, ports := range []string{"19000-20000", "50001-50001x", "60000-60100"} {
			r := w.inHost("agent", "--state-dir", w.stateDir, "--socket", filepath.Join(t.TempDir(), "s.sock"),
				"--bpffs", w.pins, "--cgroup", w.cgroup, "--uplink", w.uplink, "--snat-ports", ports)
			expectOneLineError(t, r, "--snat-ports")
		}
	})
}

// endpointMACs reads the MAC of every endpoint in the pinned endpoints
// map, by address.
func (w *world) endpointMACs() map[netip.Addr]net.HardwareAddr {
	w.t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(w.pins, "endpoints"), nil)
	if err != nil {
		w.t.Fatal(err)
	}
	defer m.Close()
	out := map[netip.Addr]net.HardwareAddr{}
	var (
		k maps.EndpointKey
		v maps.EndpointValue
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		a := netip.AddrFrom16(k.Addr)
		if k.Family == 2 {
			a = netip.AddrFrom4([4]byte(k.Addr[:4]))
		}
		out[a] = net.HardwareAddr(append([]byte(nil), v.MAC[:]...))
	}
	if err := it.Err(); err != nil {
		w.t.Fatal(err)
	}
	return out
}

// eth0MAC is the MAC of eth0 in a namespace.
func eth0MAC(t *testing.T, ns *testenv.Netns) string {
	t.Helper()
	f := strings.Fields(ns.IP(t, "-o", "link", "show", "eth0"))
	for i, x := range f {
		if x == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC for eth0 in %s: %v", ns.Name, f)
	return ""
}

// TestEndpointMAC: the endpoints map holds each container's eth0 MAC, so
// the datapath drops what an endpoint sends from another one; the MAC is
// kept across restarts and a recreated veth.
func TestEndpointMAC(t *testing.T) {
	w := newWorld(t, 2)
	w.startAgent()
	c1, c2 := w.containers[0], w.containers[1]
	w.ok("network", "create", "net", "--subnet", "10.89.0.0/24")
	var e1, e2 control.Endpoint
	w.okJSON(&e1, "endpoint", "attach", "net", "c1", "--netns", c1.Path())
	w.okJSON(&e2, "endpoint", "attach", "net", "c2", "--netns", c2.Path(), "--mac", "02:42:0a:59:00:0c")

	checkMap := func(t *testing.T) {
		t.Helper()
		macs := w.endpointMACs()
		for _, c := range []struct {
			e  control.Endpoint
			ns *testenv.Netns
		}{{e1, c1}, {e2, c2}} {
			if got, want := macs[c.e.IP].String(), eth0MAC(t, c.ns); got != want || want != c.e.MAC {
				t.Errorf("endpoint %s: MAC %s in the map, %s on eth0, %s in the record", c.e.Name, got, want, c.e.MAC)
			}
		}
	}
	t.Run("the map holds eth0's MAC", checkMap)

	c1.ServeTCP(t, ":80")
	peer := net.JoinHostPort(e1.IP.String(), "80")
	t.Run("an endpoint sending from another MAC is dropped", func(t *testing.T) {
		res, err := c2.Dial("tcp", peer)
		expectEcho(t, res, err, e2.IP, peer)
		spoofed := w.counter("drop_spoofed")
		c2.IP(t, "link", "set", "eth0", "address", "02:42:0a:59:00:99")
		if res, err := c2.Dial("tcp", peer); err == nil {
			t.Errorf("c2 reached c1 from a MAC not its own: %+v", res)
		}
		if got := w.counter("drop_spoofed"); got <= spoofed {
			t.Errorf("drop_spoofed %d, was %d", got, spoofed)
		}
		c2.IP(t, "link", "set", "eth0", "address", e2.MAC)
		c2.IP(t, "neigh", "flush", "dev", "eth0")
		c1.IP(t, "neigh", "flush", "dev", "eth0")
		res, err = c2.Dial("tcp", peer)
		expectEcho(t, res, err, e2.IP, peer)
	})

	t.Run("restart and a recreated veth keep the MAC", func(t *testing.T) {
		w.agent.stop(syscall.SIGKILL)
		w.host.IP(t, "link", "del", e1.HostIf)
		w.startAgent()
		checkMap(t)
		res, err := c2.Dial("tcp", peer)
		expectEcho(t, res, err, e2.IP, peer)
	})
}
