package main

import (
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestXDP runs published ports, a bulk transfer, --allow-from, a
// loopback-only binding and a SYN flood with the agent's XDP off, native
// and generic (veth has native XDP), so both datapaths keep the same
// promises. The BPF tables in bpf/ prove which of them did the work.
func TestXDP(t *testing.T) {
	for _, mode := range []string{"off", "native", "generic"} {
		t.Run(mode, func(t *testing.T) { testXDPMode(t, mode) })
	}
}

func testXDPMode(t *testing.T, mode string) {
	w := newWorld(t, 1)
	w.startAgent("--xdp", mode)
	c1 := w.containers[0]
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", c1.Path())
	c1.ServeTCP(t, ":80")
	c1.ServeUDP(t, ":53")
	c1.ServeBulk(t, ":5001")
	w.ok("port", "publish", "c1", "8080:80", "5353:53/udp", "5001:5001", "127.0.0.1:9090:80")
	w.ok("port", "publish", "c1", "8081:80", "--allow-from", w.outsideIP.String()+"/32", "--allow-from", "203.0.113.0/24")
	w.ok("port", "publish", "c1", "8082:80", "--allow-from", "203.0.113.0/24")

	t.Run("status shows the xdp mode", func(t *testing.T) {
		var s control.Status
		w.okJSON(&s, "status")
		if len(s.Uplinks) != 1 || s.Uplinks[0].XDP != mode {
			t.Errorf("uplinks %+v, want xdp %s", s.Uplinks, mode)
		}
		var xdp []string
		for _, a := range s.Attachments {
			if strings.HasPrefix(a.Kind, "xdp") {
				xdp = append(xdp, a.Kind+" on "+a.Target)
			}
		}
		want := []string{"xdp-" + mode + " on " + w.uplink}
		if mode == "off" {
			want = nil
		}
		if fmt.Sprint(xdp) != fmt.Sprint(want) {
			t.Errorf("xdp attachments %v, want %v", xdp, want)
		}
		// The kernel's view: the program is on the uplink in that mode.
		out, _ := exec.Command("ip", "-n", w.host.Name, "-d", "link", "show", w.uplink).Output()
		attached := map[string]string{"native": " xdp ", "generic": " xdpgeneric "}[mode]
		if mode != "off" && (!strings.Contains(string(out), attached) || !strings.Contains(string(out), "name uplink_xdp")) {
			t.Errorf("ip link shows no uplink_xdp in mode %q on %s:\n%s", attached, w.uplink, out)
		}
		if mode == "off" && strings.Contains(string(out), "prog/xdp") {
			t.Errorf("xdp off, but the uplink has an XDP program:\n%s", out)
		}
		if text := w.ok("status"); !strings.Contains(text, "xdp "+mode) {
			t.Errorf("status text does not show xdp %s:\n%s", mode, text)
		}
	})

	t.Run("published ports", func(t *testing.T) {
		for _, c := range []struct{ network, port string }{{"tcp", "8080"}, {"udp", "5353"}, {"tcp", "8081"}} {
			addr := netip.AddrPortFrom(w.hostIP, mustPort(t, c.port)).String()
			res, err := w.outside.Dial(c.network, addr)
			expectEcho(t, res, err, w.outsideIP, addr)
		}
	})

	t.Run("bulk transfer", func(t *testing.T) {
		addr := netip.AddrPortFrom(w.hostIP, 5001).String()
		for i, dir := range []testenv.Direction{testenv.Upload, testenv.Download} {
			if _, err := w.outside.Transfer(testenv.Transfer{Dir: dir, Addr: addr, Seed: uint64(i + 1), Size: 32 << 20, Deadline: 2 * time.Minute}); err != nil {
				t.Errorf("%s through %s: %v", dir, addr, err)
			}
		}
	})

	t.Run("allow-from drops a source outside the list", func(t *testing.T) {
		mon := w.startMonitor("--drops")
		before := w.counter("drop_not_allowed")
		published := netip.AddrPortFrom(w.hostIP, 8082)
		if res, err := w.outside.Dial("tcp", published.String()); err == nil {
			t.Fatalf("a source outside --allow-from got through: %+v", res)
		}
		if after := w.counter("drop_not_allowed"); after <= before {
			t.Errorf("drop_not_allowed stayed at %d", after)
		}
		// XDP dropped it: the monitor hears of it as of tc's drops.
		d := mon.waitFor(t, "the allow-from drop", func(m control.MonitorMessage) bool {
			return m.Type == "drop" && m.Reason == "drop_not_allowed" && m.Destination == published
		})
		if d.Source.Addr() != w.outsideIP || d.Proto != "tcp" || d.Bytes == 0 {
			t.Errorf("drop event %+v: want tcp from %s", d, w.outsideIP)
		}
		var ms []control.PortMapping
		w.okJSON(&ms, "port", "ls", "c1")
		for _, m := range ms {
			if m.Host.First == 8082 && (len(m.AllowFrom) != 1 || m.AllowFrom[0] != netip.MustParsePrefix("203.0.113.0/24")) {
				t.Errorf("port ls shows allow_from %v for 8082", m.AllowFrom)
			}
		}
		if out := w.ok("port", "ls", "c1"); !strings.Contains(out, "80/tcp -> 0.0.0.0:8082 (allow-from 203.0.113.0/24)") {
			t.Errorf("port ls text:\n%s", out)
		}
	})

	t.Run("the loopback-only binding is not reachable from outside", func(t *testing.T) {
		if res, err := w.outside.Dial("tcp", netip.AddrPortFrom(w.hostIP, 9090).String()); err == nil {
			t.Fatalf("outside reached a loopback-only binding: %+v", res)
		}
		res, err := w.host.DialFrom(t, w.cgroup, "tcp", "127.0.0.1:9090")
		expectEcho(t, res, err, netip.MustParseAddr("10.77.0.1"), "127.0.0.1:9090")
	})

	t.Run("a SYN flood fills ct_new only and the port still answers", func(t *testing.T) {
		for _, p := range testenv.DocumentationRanges {
			w.outside.IP(t, "route", "replace", "blackhole", p.String())
		}
		dnat := w.counter("dnat")
		sent, err := w.outside.FloodSYN(testenv.SYNFlood{
			Dst: netip.AddrPortFrom(w.hostIP, 8080), Sources: testenv.DocumentationRanges,
			Count: 40000, Limit: time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		var s control.Status
		w.okJSON(&s, "status")
		if s.CTNew < 1000 {
			t.Errorf("ct_new holds %d after %d spoofed SYNs", s.CTNew, sent.Sent)
		}
		if got := w.counter("dnat") - dnat; got < uint64(sent.Sent)/2 {
			t.Errorf("%d of %d SYNs were translated", got, sent.Sent)
		}
		addr := netip.AddrPortFrom(w.hostIP, 8080).String()
		res, err := w.outside.Dial("tcp", addr)
		expectEcho(t, res, err, w.outsideIP, addr)
	})
}

func mustPort(t *testing.T, s string) uint16 {
	var p uint16
	if _, err := fmt.Sscan(s, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHealDetachedXDPLink: the uplink's XDP link detached while its pin
// stays (bpftool link detach) is attached again.
func TestHealDetachedXDPLink(t *testing.T) {
	w := newHealWorld(t, "--xdp", "native")
	pin := filepath.Join(w.pins, "links", "xdp_uplink_"+strconv.Itoa(w.uplinkIndex(t)))
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Detach(); err != nil {
		t.Fatalf("detach %s: %v", pin, err)
	}
	l.Close()
	attached := func() bool {
		out, _ := exec.Command("ip", "-n", w.host.Name, "-d", "link", "show", w.uplink).Output()
		return strings.Contains(string(out), " xdp ") && strings.Contains(string(out), "name uplink_xdp")
	}
	if attached() {
		t.Fatal("the XDP program is still attached after the detach")
	}
	eventually(t, "the XDP program is back on "+w.uplink, attached)
	w.expectServed(t, 8080)
}

// uplinkIndex is the uplink's ifindex in the host namespace.
func (w *world) uplinkIndex(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("ip", "-n", w.host.Name, "-o", "link", "show", w.uplink).Output()
	if err != nil {
		t.Fatal(err)
	}
	idx, _, ok := strings.Cut(string(out), ":")
	n, err := strconv.Atoi(idx)
	if !ok || err != nil {
		t.Fatalf("no ifindex in %q", out)
	}
	return n
}
