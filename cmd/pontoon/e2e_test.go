package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pontoon-net/pontoon/control"
)

// TestLifecycle drives the real binary and agent through a network's whole
// life: create, attach, publish, traffic from outside, from the host and
// from another container, unpublish, detach, remove, cleanup.
func TestLifecycle(t *testing.T) {
	w := newWorld(t, 2)
	w.startAgent()
	c1, c2 := w.containers[0], w.containers[1]

	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24", "--mtu", "1400")
	var ep1, ep2 control.Endpoint
	w.okJSON(&ep1, "endpoint", "attach", "net", "c1", "--netns", c1.Path())
	w.okJSON(&ep2, "endpoint", "attach", "net", "c2", "--netns", c2.Path(), "--ip", "10.77.0.20", "--mac", "02:42:0a:4d:00:14")
	if ep1.IP != netip.MustParseAddr("10.77.0.2") || ep2.IP != netip.MustParseAddr("10.77.0.20") {
		t.Fatalf("addresses: c1 %s, c2 %s", ep1.IP, ep2.IP)
	}

	t.Run("the container side is eth0 with address, route, MTU and MAC", func(t *testing.T) {
		link := c2.IP(t, "-o", "link", "show", "eth0")
		if !strings.Contains(link, "mtu 1400") || !strings.Contains(link, "02:42:0a:4d:00:14") {
			t.Errorf("eth0 in c2: %s", link)
		}
		if addr := c2.IP(t, "-o", "addr", "show", "eth0"); !strings.Contains(addr, "10.77.0.20/24") {
			t.Errorf("eth0 address in c2: %s", addr)
		}
		if route := c2.IP(t, "route", "show", "default"); !strings.Contains(route, "via 10.77.0.1 dev eth0") {
			t.Errorf("default route in c2: %q", route)
		}
		if br := w.host.IP(t, "-o", "addr", "show", "pt-net"); !strings.Contains(br, "10.77.0.1/24") {
			t.Errorf("bridge address: %s", br)
		}
	})

	c1.ServeTCP(t, ":80")
	c1.ServeUDP(t, ":53")
	out := w.ok("port", "publish", "c1", "8080:80", "5353:53/udp", "127.0.0.1:9090:80", "80")
	wantLines := []string{"80/tcp -> 0.0.0.0:8080", "53/udp -> 0.0.0.0:5353", "80/tcp -> 127.0.0.1:9090"}
	for _, l := range wantLines {
		if !strings.Contains(out, l+"\n") {
			t.Errorf("publish output lacks %q:\n%s", l, out)
		}
	}
	var ms []control.PortMapping
	w.okJSON(&ms, "port", "ls", "c1")
	if len(ms) != 4 {
		t.Fatalf("port ls: %d mappings, want 4: %+v", len(ms), ms)
	}
	var dynamic netip.AddrPort
	for _, m := range ms {
		if m.Host.First != 8080 && m.Host.First != 5353 && m.Host.First != 9090 {
			dynamic = netip.AddrPortFrom(w.hostIP, m.Host.First)
		}
	}
	if !dynamic.IsValid() || dynamic.Port() < 49153 {
		t.Fatalf("no dynamic port from the dynamic range in %+v", ms)
	}

	hostTCP := netip.AddrPortFrom(w.hostIP, 8080).String()
	hostUDP := netip.AddrPortFrom(w.hostIP, 5353).String()
	t.Run("outside reaches the container", func(t *testing.T) {
		res, err := w.outside.Dial("tcp", hostTCP)
		expectEcho(t, res, err, w.outsideIP, hostTCP)
		res, err = w.outside.Dial("udp", hostUDP)
		expectEcho(t, res, err, w.outsideIP, hostUDP)
		res, err = w.outside.Dial("tcp", dynamic.String())
		expectEcho(t, res, err, w.outsideIP, dynamic.String())
	})
	t.Run("the host reaches the container through loopback and its own address", func(t *testing.T) {
		for _, c := range []struct{ network, addr string }{
			{"tcp", "127.0.0.1:8080"}, {"udp", "127.0.0.1:5353"}, {"tcp", hostTCP}, {"tcp", "127.0.0.1:9090"},
			// Linux takes 0.0.0.0 for loopback; the wildcard binding
			// is found for it, binding filter on.
			{"tcp", "0.0.0.0:8080"}, {"udp", "0.0.0.0:5353"},
		} {
			res, err := w.host.DialFrom(t, w.cgroup, c.network, c.addr)
			expectEcho(t, res, err, netip.MustParseAddr("10.77.0.1"), c.addr)
		}
	})
	t.Run("another container reaches it through the host address", func(t *testing.T) {
		res, err := c2.DialFrom(t, w.cgroup, "tcp", hostTCP)
		expectEcho(t, res, err, ep2.IP, hostTCP)
	})
	t.Run("the 127.0.0.1 binding is not reachable from outside", func(t *testing.T) {
		if res, err := w.outside.Dial("tcp", netip.AddrPortFrom(w.hostIP, 9090).String()); err == nil {
			t.Fatalf("outside reached a loopback-only binding: %+v", res)
		}
	})

	t.Run("status", func(t *testing.T) {
		var s control.Status
		w.okJSON(&s, "status")
		if s.Networks != 1 || s.Endpoints != 2 || s.Mappings != 4 || s.Bindings != 4 {
			t.Errorf("status counts: %+v", s)
		}
		if len(s.Uplinks) != 1 || s.Uplinks[0].Name != w.uplink || (s.TCMode != "tcx" && s.TCMode != "legacy-tc") {
			t.Errorf("status uplinks: %+v, mode %s", s.Uplinks, s.TCMode)
		}
		if s.HostAddrs == 0 || len(s.Attachments) < 6 {
			t.Errorf("status: %d host addresses, attachments %+v", s.HostAddrs, s.Attachments)
		}
		text := w.ok("status")
		if !strings.Contains(text, "tc attach mode:") || !strings.Contains(text, w.uplink) {
			t.Errorf("status text:\n%s", text)
		}
		// Each probed kernel feature has its line, in JSON and text
		// (loader's TestKernelFeatures holds the lines against each kernel).
		if len(s.KernelFeatures) == 0 {
			t.Errorf("status names no kernel features")
		}
		for _, f := range s.KernelFeatures {
			if !strings.Contains(text, "kernel feature:") || !strings.Contains(text, f.String()) {
				t.Errorf("status text lacks %q:\n%s", f.String(), text)
			}
		}
	})

	t.Run("unpublish stops the port and only that port", func(t *testing.T) {
		out := w.ok("port", "unpublish", "c1", "8080:80")
		if strings.TrimSpace(out) != "80/tcp -> 0.0.0.0:8080" {
			t.Errorf("unpublish printed %q", out)
		}
		if res, err := w.outside.Dial("tcp", hostTCP); err == nil {
			t.Fatalf("outside still reaches the unpublished port: %+v", res)
		}
		res, err := w.outside.Dial("udp", hostUDP)
		expectEcho(t, res, err, w.outsideIP, hostUDP)
		if got := len(w.bindings()); got != 3 {
			t.Errorf("%d bindings left, want 3", got)
		}
	})

	t.Run("rm refuses while endpoints are attached", func(t *testing.T) {
		r := w.pt("network", "rm", "net")
		if r.code == 0 || !strings.Contains(r.stderr, "endpoints attached") {
			t.Fatalf("rm with endpoints: exit %d, %q", r.code, r.stderr)
		}
	})

	t.Run("detach removes the veth, the address and the ports", func(t *testing.T) {
		w.ok("endpoint", "detach", "c1")
		if out := c1.IP(t, "-br", "link"); strings.Contains(out, "eth0") {
			t.Errorf("eth0 still in c1:\n%s", out)
		}
		if out := w.host.IP(t, "-br", "link"); strings.Contains(out, ep1.HostIf) {
			t.Errorf("veth %s still on the host:\n%s", ep1.HostIf, out)
		}
		if got := w.bindings(); len(got) != 0 {
			t.Errorf("bindings left after detach: %v", got)
		}
		if res, err := w.outside.Dial("udp", hostUDP); err == nil {
			t.Errorf("outside still reaches a detached endpoint: %+v", res)
		}
	})

	t.Run("rm --force detaches the rest and deletes the bridge", func(t *testing.T) {
		w.ok("network", "rm", "net", "--force")
		if out := w.host.IP(t, "-br", "link"); strings.Contains(out, "pt-net") || strings.Contains(out, ep2.HostIf) {
			t.Errorf("interfaces left on the host:\n%s", out)
		}
		var ns []control.NetworkInfo
		w.okJSON(&ns, "network", "ls")
		if len(ns) != 0 {
			t.Errorf("networks left: %+v", ns)
		}
	})

	t.Run("cleanup --purge removes pins, interfaces and state", func(t *testing.T) {
		w.ok("network", "create", "again", "--subnet", "10.78.0.0/24")
		w.agent.stop(syscall.SIGTERM)
		w.waitNotify("STOPPING=1")
		// Cleanup acts on the namespace it runs in: the host's.
		out := w.host.Exec(t, bin, "cleanup", "--state-dir", w.stateDir, "--bpffs", w.pins, "--purge")
		if !strings.Contains(out, "removed") {
			t.Errorf("cleanup printed %q", out)
		}
		if _, err := os.Stat(w.pins); !os.IsNotExist(err) {
			t.Errorf("pin directory still there: %v", err)
		}
		if _, err := os.Stat(filepath.Join(w.stateDir, "pontoon.db")); !os.IsNotExist(err) {
			t.Errorf("state file still there: %v", err)
		}
		if out := w.host.IP(t, "-br", "link"); strings.Contains(out, "pt-again") {
			t.Errorf("bridge left after cleanup:\n%s", out)
		}
	})
}
