package main

import (
	"errors"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestIPv6PublishedPorts: published ports on IPv6 from host processes,
// through the socket hooks. A spec without host IP publishes a dual-stack
// endpoint on 0.0.0.0 and [::] (two bindings, one mapping); [::1]:P and
// the host's IPv6 address:P reach the container's IPv6 address, with the
// client's own address seen by the server (nothing translates it) and the
// dialled one by the client; an IPv4-only container is reached from the
// same addresses through its IPv4 address; ::ffff:127.0.0.1 reaches the
// IPv4 binding; host binds of published IPv6 ports fail with EADDRINUSE;
// 64 MiB go each way over [::1]:P; all of it survives a restart; one
// unpublish removes both bindings.
func TestIPv6PublishedPorts(t *testing.T) {
	w := newWorld(t, 2)
	hostV6 := netip.MustParseAddr("fd00:ff::1")
	w.host.IP(t, "-6", "addr", "add", hostV6.String()+"/64", "dev", w.uplink, "nodad")
	w.startAgent()
	c0, c1 := w.containers[0], w.containers[1]
	w.ok("network", "create", "dual", "--subnet", "10.85.0.0/24", "--subnet6", "fd00:85::/64")
	w.ok("network", "create", "v4only", "--subnet", "10.86.0.0/24")
	var e0, e1 control.Endpoint
	w.okJSON(&e0, "endpoint", "attach", "dual", "e0", "--netns", c0.Path())
	w.okJSON(&e1, "endpoint", "attach", "v4only", "e1", "--netns", c1.Path())
	c0.ServeTCP(t, "[::]:80")
	c0.ServeUDP(t, "[::]:53")
	c0.ServeBulk(t, "[::]:5001")
	c1.ServeTCP(t, ":80")
	w.ok("port", "publish", "e0", "8080:80", "5353:53/udp", "[::1]:8081:80", "5001:5001")
	w.ok("port", "publish", "e1", "9080:80")

	t.Run("a wildcard spec writes both families' bindings under one mapping", func(t *testing.T) {
		bindings := strings.Join(w.bindings(), "\n")
		for _, want := range []string{
			"0.0.0.0:8080/tcp -> 10.85.0.2:80",
			"[::]:8080/tcp -> [fd00:85::2]:80",
			"[::]:5353/udp -> [fd00:85::2]:53",
			"[::1]:8081/tcp -> [fd00:85::2]:80",
			"0.0.0.0:9080/tcp -> 10.86.0.2:80",
		} {
			if !strings.Contains(bindings, want) {
				t.Errorf("bindings map lacks %s:\n%s", want, bindings)
			}
		}
		if strings.Contains(bindings, ":9080/tcp -> [") || strings.Contains(bindings, "[::]:9080") {
			t.Errorf("the IPv4-only endpoint got an IPv6 binding:\n%s", bindings)
		}
		var ms []control.PortMapping
		w.okJSON(&ms, "port", "ls", "e0")
		n := 0
		for _, m := range ms {
			if m.Host.First == 8080 {
				n++
				if m.Backend6 != e0.IPv6 || m.Backend != e0.IP {
					t.Errorf("8080's mapping: backends %s and %s, want %s and %s", m.Backend, m.Backend6, e0.IP, e0.IPv6)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d mappings for host port 8080, want one", n)
		}
		if out := w.ok("port", "ls", "e0"); !strings.Contains(out, "80/tcp -> 0.0.0.0:8080, [::]:8080") {
			t.Errorf("port ls:\n%s", out)
		}
		if out := w.ok("port", "inspect", "--host-port", "8080"); !strings.Contains(out, "[fd00:85::2]:80") {
			t.Errorf("port inspect shows no IPv6 backend:\n%s", out)
		}
	})

	dials := []struct {
		name, network, addr, peer string
		seen                      netip.Addr // the source the server saw
	}{
		{"[::1] to the IPv6 address", "tcp", "[::1]:8080", "[::1]:8080", e0.Gateway6},
		{"a host IPv6 address to the IPv6 address", "tcp", "[fd00:ff::1]:8080", "[fd00:ff::1]:8080", e0.Gateway6},
		{"an IPv6 loopback binding", "tcp", "[::1]:8081", "[::1]:8081", e0.Gateway6},
		{"connected UDP over IPv6", "udp-connected", "[::1]:5353", "[::1]:5353", e0.Gateway6},
		{"unconnected UDP over IPv6", "udp", "[::1]:5353", "[::1]:5353", e0.Gateway6},
		{"::ffff:127.0.0.1 to the IPv4 binding", "tcp", "[::ffff:127.0.0.1]:8080", "127.0.0.1:8080", e0.Gateway},
		{"[::1] to an IPv4-only container", "tcp", "[::1]:9080", "[::1]:9080", e1.Gateway},
		{"a host IPv6 address to an IPv4-only container", "tcp", "[fd00:ff::1]:9080", "[fd00:ff::1]:9080", e1.Gateway},
	}
	dialAll := func(t *testing.T) {
		for _, d := range dials {
			t.Run(d.name, func(t *testing.T) {
				res, err := w.host.DialFrom(t, w.cgroup, d.network, d.addr)
				if err != nil {
					t.Fatalf("dial %s %s: %v", d.network, d.addr, err)
				}
				if res.Peer != d.peer {
					t.Errorf("the client sees its peer as %s, want %s", res.Peer, d.peer)
				}
				expectEcho(t, res, err, d.seen, d.addr)
			})
		}
	}
	t.Run("host clients", dialAll)

	t.Run("host binds of published IPv6 ports are refused", func(t *testing.T) {
		if !testenv.KernelAtLeast(t, 5, 18) {
			t.Skip("refusing a bind with EADDRINUSE needs bpf_set_retval, Linux 5.18")
		}
		expectHostBinds(t, w,
			[]string{"tcp6 [::1]:8080", "tcp6 [fd00:ff::1]:8080", "tcp6 [::]:8080", "tcp6 [::1]:8081", "tcp6 [::]:8081", "udp6 [::1]:5353", "udp6 [::]:5353"},
			[]string{"tcp6 [::1]:8082", "tcp6 [fd00:ff::1]:8081", "udp6 [::1]:8080"})
	})

	t.Run("64 MiB each way over [::1]", func(t *testing.T) {
		for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
			tr := testenv.Transfer{Dir: dir, Addr: "[::1]:5001", Seed: uint64(60 + i), Size: testenv.BulkSize, Deadline: 3 * time.Minute}
			res, err := w.host.TransferFrom(t, w.cgroup, tr)
			if err != nil {
				t.Fatalf("%s over [::1]:5001: %v", dir, err)
			}
			t.Logf("%s: %d bytes in %s", dir, res.Bytes, res.Elapsed)
		}
	})

	t.Run("bad IPv6 specs", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"port", "publish", "e1", "[::1]:9081:80"}, "host IP ::1 is IPv6 and endpoint e1 has IPv4 only"},
			{[]string{"port", "publish", "e0", "[fd00:ff::2]:9081:80"}, "fd00:ff::2 is not an address of this host"},
			{[]string{"port", "publish", "e0", "[::1:9081:80"}, "no closing ]"},
			{[]string{"port", "publish", "e0", "[::]:8080:80"}, "holds it on [::] already"},
			{[]string{"network", "create", "nat66", "--subnet", "10.66.0.0/24", "--masquerade6"}, "--masquerade6 needs an IPv6 subnet: add --ipv6 or --subnet6"},
			{[]string{"network", "create", "nat66", "--ipv6", "--routed", "--masquerade6"}, "--routed and --masquerade6 exclude each other"},
		} {
			before := w.snapshot()
			expectOneLineError(t, w.pt(c.args...), c.want)
			sameSnapshot(t, strings.Join(c.args, " "), before, w.snapshot())
		}
	})

	t.Run("a restart", func(t *testing.T) {
		before := w.snapshot()
		w.agent.stop(syscall.SIGKILL)
		w.startAgent()
		sameSnapshot(t, "a restart", before, w.snapshot())
		dialAll(t)
	})

	t.Run("one unpublish removes both families", func(t *testing.T) {
		w.ok("port", "unpublish", "e0", "8080:80")
		for _, b := range w.bindings() {
			if strings.Contains(b, ":8080/") {
				t.Errorf("after unpublish the bindings map still has %s", b)
			}
		}
		if res, err := w.host.DialFrom(t, w.cgroup, "tcp", "[::1]:8080"); err == nil {
			t.Errorf("[::1]:8080 reached %+v after unpublish", res)
		}
	})
}

// TestIPv6ForwardingRestored: the agent turns IPv6 forwarding on only for
// a network that needs the host to route IPv6 (a routed dual-stack one, or
// one with --masquerade6), records the value it found, and cleanup puts it
// back.
func TestIPv6ForwardingRestored(t *testing.T) {
	for _, c := range []struct{ name, flag string }{{"routed", "--routed"}, {"masquerade6", "--masquerade6"}} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 0)
			forward := func() string {
				t.Helper()
				return strings.TrimSpace(w.host.Exec(t, "cat", "/proc/sys/net/ipv6/conf/all/forwarding"))
			}
			w.host.Sysctl(t, "net.ipv6.conf.all.forwarding", "0")
			// The uplink's NAT66 address: global before unique local.
			w.host.IP(t, "-6", "addr", "add", "fd00:ff::1/64", "dev", w.uplink, "nodad")
			w.host.IP(t, "-6", "addr", "add", "2001:db8:ff::1/64", "dev", w.uplink, "nodad")
			// A default route from router advertisements, which forwarding
			// makes the uplink ignore: status warns once forwarding is wanted.
			w.host.Sysctl(t, "net.ipv6.conf."+w.uplink+".accept_ra", "1")
			w.host.IP(t, "-6", "route", "add", "default", "via", "fe80::1", "dev", w.uplink, "proto", "ra")
			const raWarning = "ignores router advertisements"
			w.startAgent()
			w.ok("network", "create", "masq", "--subnet", "10.87.0.0/24", "--subnet6", "fd00:87::/64")
			if got := forward(); got != "0" {
				t.Fatalf("IPv6 forwarding %s for a network whose IPv6 stays in, want it left at 0", got)
			}
			if out := w.ok("status"); strings.Contains(out, raWarning) {
				t.Errorf("status warns of router advertisements with forwarding off:\n%s", out)
			}
			w.ok("network", "create", c.name, c.flag, "--subnet", "10.88.0.0/24", "--subnet6", "fd00:88::/64")
			if got := forward(); got != "1" {
				t.Fatalf("IPv6 forwarding %s with a %s IPv6 network, want 1", got, c.flag)
			}
			status := w.ok("status")
			if !strings.Contains(status, raWarning) || !strings.Contains(status, "net.ipv6.conf."+w.uplink+".accept_ra=2") {
				t.Errorf("status does not warn that %s's router advertisements are ignored:\n%s", w.uplink, status)
			}
			if c.flag == "--masquerade6" {
				if !strings.Contains(status, "IPv6 as 2001:db8:ff::1)") {
					t.Errorf("status does not show the uplink's NAT66 address 2001:db8:ff::1:\n%s", status)
				}
				out := w.ok("network", "inspect", c.name)
				if !regexp.MustCompile(`masquerade6:\s+true`).MatchString(out) || !strings.Contains(out, "2001:db8:ff::1 on "+w.uplink) {
					t.Errorf("network inspect lacks masquerade6 or its note:\n%s", out)
				}
			}
			// A restart finds its own 1 and keeps the 0 recorded.
			w.agent.stop(syscall.SIGTERM)
			w.startAgent()
			w.agent.stop(syscall.SIGTERM)
			out := w.host.Exec(t, bin, "cleanup", "--state-dir", w.stateDir, "--bpffs", w.pins)
			if got := forward(); got != "0" {
				t.Errorf("IPv6 forwarding %s after cleanup, want the 0 the agent found", got)
			}
			if !strings.Contains(out, "restored net.ipv6.conf.all.forwarding to 0") {
				t.Errorf("cleanup does not say it restored IPv6 forwarding:\n%s", out)
			}
		})
	}
}

// expectHostBinds tries host binds ("tcp6 [::1]:8080") from the world's
// cgroup: each of taken must fail with EADDRINUSE, each of free succeed.
func expectHostBinds(t *testing.T, w *world, taken, free []string) {
	t.Helper()
	var binds []testenv.Bind
	for _, b := range append(slices.Clone(taken), free...) {
		network, addr, _ := strings.Cut(b, " ")
		binds = append(binds, testenv.Bind{Network: network, Addr: netip.MustParseAddrPort(addr)})
	}
	errs := w.host.BindFrom(t, w.cgroup, binds...)
	for i, b := range binds {
		switch {
		case i < len(taken) && !errors.Is(errs[i], unix.EADDRINUSE):
			t.Errorf("host bind %s: %v, want EADDRINUSE", b, errs[i])
		case i >= len(taken) && errs[i] != nil:
			t.Errorf("host bind %s: %v", b, errs[i])
		}
	}
}

// TestIPv6PublishedPortsFromOutside: an outside IPv6 client of a port a
// spec without host IP published reaches the container's IPv6 address
// with its own address kept, and `pontoon monitor -o json` shows the new
// flow with the client, the dialled address and the container's.
// Forwarding, off before, is turned on by the publish: neither the stack
// nor bpf_fib_lookup forwards IPv6 without it.
func TestIPv6PublishedPortsFromOutside(t *testing.T) {
	w := newWorld(t, 1)
	hostV6, outsideV6 := netip.MustParseAddr("fd00:ff::1"), netip.MustParseAddr("fd00:ff::2")
	w.host.IP(t, "-6", "addr", "add", hostV6.String()+"/64", "dev", w.uplink, "nodad")
	w.outside.IP(t, "-6", "addr", "add", outsideV6.String()+"/64", "dev", "eth0", "nodad")
	w.host.Sysctl(t, "net.ipv6.conf.all.forwarding", "0")
	w.startAgent()
	c0 := w.containers[0]
	w.ok("network", "create", "dual", "--subnet", "10.89.0.0/24", "--subnet6", "fd00:89::/64")
	var ep control.Endpoint
	w.okJSON(&ep, "endpoint", "attach", "dual", "e0", "--netns", c0.Path())
	c0.ServeTCP(t, "[::]:80")
	w.ok("port", "publish", "e0", "8080:80")
	mon := w.startMonitor()

	if got := strings.TrimSpace(w.host.Exec(t, "cat", "/proc/sys/net/ipv6/conf/all/forwarding")); got != "1" {
		t.Errorf("IPv6 forwarding %s after publishing an IPv6 port, want 1", got)
	}

	dialled := netip.AddrPortFrom(hostV6, 8080)
	addr := dialled.String()
	res, err := w.outside.Dial("tcp", addr)
	expectEcho(t, res, err, outsideV6, addr)

	flow := mon.waitFor(t, "new flow from "+outsideV6.String(), func(m control.MonitorMessage) bool {
		return m.Type == "flow_new" && m.Source.Addr() == outsideV6
	})
	if flow.Kind != "published" || flow.Destination != dialled || flow.Translated != netip.AddrPortFrom(ep.IPv6, 80) || flow.Proto != "tcp" {
		t.Errorf("new IPv6 flow %+v: want published tcp from %s -> %s to [%s]:80", flow, outsideV6, dialled, ep.IPv6)
	}
	if code := mon.stop(); code != 0 {
		t.Errorf("monitor exited %d: %s", code, mon.stderr.String())
	}
}
