package main

import (
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// TestNetworkOptions covers what the lifecycle test leaves out: picked
// subnets, adopted bridges, stored-but-not-enforced flags, --pid and the
// legacy tc attach mode.
func TestNetworkOptions(t *testing.T) {
	w := newWorld(t, 0)
	w.startAgent()
	uplinkNet := netip.MustParsePrefix("198.19.0.0/24")

	t.Run("without --subnet a free private range is picked", func(t *testing.T) {
		var a, b control.NetworkInfo
		w.okJSON(&a, "network", "create", "auto1")
		w.okJSON(&b, "network", "create", "auto2")
		if !a.Subnet.Addr().IsPrivate() || !b.Subnet.Addr().IsPrivate() || a.Subnet.Overlaps(b.Subnet) ||
			a.Subnet.Overlaps(uplinkNet) || b.Subnet.Overlaps(uplinkNet) {
			t.Fatalf("picked %s and %s", a.Subnet, b.Subnet)
		}
		w.ok("network", "rm", "auto1")
		w.ok("network", "rm", "auto2")
	})

	t.Run("an existing bridge is adopted and outlives the network", func(t *testing.T) {
		br := "ppa" + w.id
		w.host.IP(t, "link", "add", br, "type", "bridge")
		var n control.NetworkInfo
		w.okJSON(&n, "network", "create", "adopt", "--bridge", br, "--subnet", "10.79.0.0/24")
		if !n.Adopted || n.Bridge != br {
			t.Fatalf("network %+v", n)
		}
		if out := w.host.IP(t, "-o", "addr", "show", br); !strings.Contains(out, "10.79.0.1/24") {
			t.Fatalf("gateway not on the adopted bridge: %s", out)
		}
		w.ok("network", "rm", "adopt")
		out := w.host.IP(t, "-o", "addr", "show", br)
		if strings.Contains(out, "10.79.0.1") {
			t.Errorf("gateway address left on the adopted bridge: %s", out)
		}
		r := w.pt("network", "create", "notabridge", "--bridge", w.uplink, "--subnet", "10.80.0.0/24")
		expectOneLineError(t, r, "not a bridge")
	})

	t.Run("icc and masquerade are stored and shown", func(t *testing.T) {
		var n control.NetworkInfo
		w.okJSON(&n, "network", "create", "iso", "--subnet", "10.81.0.0/24", "--icc=false", "--masquerade=false")
		w.okJSON(&n, "network", "inspect", "iso")
		if n.ICC || n.Masquerade || len(n.Notes) == 0 || !strings.Contains(n.Notes[0], "only through published ports") {
			t.Fatalf("inspect: %+v", n)
		}
		if out := w.ok("network", "inspect", "iso"); !strings.Contains(out, "only through published ports") {
			t.Errorf("text inspect does not explain icc=false:\n%s", out)
		}
	})

	t.Run("attach by --pid", func(t *testing.T) {
		ns := testenv.NewNetns(t, "ppp"+w.id)
		sleeper := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
		var e control.Endpoint
		w.okJSON(&e, "endpoint", "attach", "iso", "bypid", "--pid", strconv.Itoa(sleeper.Process.Pid))
		if e.Netns != "/proc/"+strconv.Itoa(sleeper.Process.Pid)+"/ns/net" {
			t.Errorf("netns %s", e.Netns)
		}
		if out := ns.IP(t, "-o", "addr", "show", "eth0"); !strings.Contains(out, e.IP.String()) {
			t.Errorf("eth0 in the process's namespace: %s", out)
		}
		w.ok("endpoint", "detach", "bypid")
	})
}

// TestLegacyTC runs the agent with --legacy-tc: status reports it and
// published ports work through clsact + cls_bpf.
func TestLegacyTC(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent("--legacy-tc")
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())
	w.containers[0].ServeTCP(t, ":80")
	w.ok("port", "publish", "c1", "8080:80")
	var s control.Status
	w.okJSON(&s, "status")
	if s.TCMode != "legacy-tc" {
		t.Fatalf("tc mode %q, want legacy-tc", s.TCMode)
	}
	addr := netip.AddrPortFrom(w.hostIP, 8080).String()
	res, err := w.outside.Dial("tcp", addr)
	expectEcho(t, res, err, w.outsideIP, addr)
}
