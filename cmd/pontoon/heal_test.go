package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// healWorld is a world with a running agent, network net, endpoints c1
// and c2 (c1 serving TCP on :80) and c1's port 80 published on 8080.
type healWorld struct {
	*world
	net    control.NetworkInfo
	c1, c2 control.Endpoint
}

func newHealWorld(t *testing.T, agentArgs ...string) *healWorld {
	w := &healWorld{world: newWorld(t, 2)}
	w.startAgent(agentArgs...)
	w.okJSON(&w.net, "network", "create", "net", "--subnet", "10.77.0.0/24")
	w.okJSON(&w.c1, "endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())
	w.okJSON(&w.c2, "endpoint", "attach", "net", "c2", "--netns", w.containers[1].Path())
	w.containers[0].ServeTCP(t, ":80")
	w.ok("port", "publish", "c1", "8080:80")
	w.expectServed(t, 8080)
	return w
}

// expectServed waits until the outside reaches c1 through the published
// host port, seen with its own address. The wait is a hang guard only.
func (w *healWorld) expectServed(t *testing.T, port uint16) {
	t.Helper()
	addr := netip.AddrPortFrom(w.hostIP, port).String()
	var last error
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		res, err := w.outside.Dial("tcp", addr)
		if err == nil {
			expectEcho(t, res, err, w.outsideIP, addr)
			return
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the outside never reached %s: %v\nagent log:\n%s", addr, last, w.agentLog())
}

// ports lists the interfaces enslaved to a bridge in the host namespace;
// nothing while the bridge is missing.
func (w *healWorld) ports(bridge string) string {
	out, _ := exec.Command("ip", "-n", w.host.Name, "link", "show", "master", bridge).Output()
	return string(out)
}

// waitLog waits for the agent to log a line containing want.
func (w *healWorld) waitLog(t *testing.T, want string) {
	t.Helper()
	eventually(t, "the agent logs "+want, func() bool { return strings.Contains(w.agentLog(), want) })
}

func (w *healWorld) status(t *testing.T) control.Status {
	t.Helper()
	var s control.Status
	w.okJSON(&s, "status")
	return s
}

// TestHealDeletedBridge: a bridge deleted by hand while the agent runs
// comes back, with the endpoints' veths enslaved and its gateway, and the
// published port carries traffic again.
func TestHealDeletedBridge(t *testing.T) {
	w := newHealWorld(t)
	w.host.IP(t, "link", "del", w.net.Bridge)
	eventually(t, "bridge "+w.net.Bridge+" is back with both veths", func() bool {
		ports := w.ports(w.net.Bridge)
		return strings.Contains(ports, w.c1.HostIf) && strings.Contains(ports, w.c2.HostIf)
	})
	if addr := w.host.IP(t, "-br", "addr", "show", w.net.Bridge); !strings.Contains(addr, w.net.Gateway.String()+"/24") {
		t.Errorf("recreated bridge lacks the gateway %s: %s", w.net.Gateway, addr)
	}
	w.expectServed(t, 8080)
	res, err := w.containers[1].DialFrom(t, w.cgroup, "tcp", w.c1.IP.String()+":80")
	expectEcho(t, res, err, w.c2.IP, "c1 from c2")
	w.waitLog(t, "repaired bridge")
	if s := w.status(t); len(s.Degraded) > 0 {
		t.Errorf("status after a repair says degraded: %q", s.Degraded)
	}
}

// TestHealDeletedVeth: a host-side veth deleted by hand (its container
// side goes with it) is recreated as the pair it was: same names,
// address, MACs and default route in the container, enslaved, traffic
// flowing.
func TestHealDeletedVeth(t *testing.T) {
	w := newHealWorld(t)
	c1 := w.containers[0]
	ifindex := regexp.MustCompile(`@if\d+`)
	container := func() string {
		return ifindex.ReplaceAllString(interfaces(c1.IP(t, "-br", "addr"))+c1.IP(t, "-br", "link")+c1.IP(t, "-4", "route"), "")
	}
	before := container()
	hostMAC := w.host.IP(t, "-br", "link", "show", w.c1.HostIf)
	w.host.IP(t, "link", "del", w.c1.HostIf)
	eventually(t, "veth "+w.c1.HostIf+" is back on the bridge", func() bool {
		return strings.Contains(w.ports(w.net.Bridge), w.c1.HostIf)
	})
	w.expectServed(t, 8080)
	if after := container(); after != before {
		t.Errorf("the container's side differs after the repair:\nbefore %s\nafter  %s", before, after)
	}
	if got := w.host.IP(t, "-br", "link", "show", w.c1.HostIf); strings.Fields(got)[2] != strings.Fields(hostMAC)[2] {
		t.Errorf("host side MAC: before %s, after %s", hostMAC, got)
	}
	w.waitLog(t, "repaired endpoint")
}

// TestHealDeletedAddress: the gateway address taken off a bridge, and the
// bridge set down, are put back.
func TestHealDeletedAddress(t *testing.T) {
	w := newHealWorld(t)
	gw := w.net.Gateway.String() + "/24"
	w.host.IP(t, "addr", "del", gw, "dev", w.net.Bridge)
	eventually(t, "gateway "+gw+" is back", func() bool {
		return strings.Contains(w.host.IP(t, "-br", "addr", "show", w.net.Bridge), gw)
	})
	w.expectServed(t, 8080)
	w.host.IP(t, "link", "set", w.net.Bridge, "down")
	eventually(t, w.net.Bridge+" is up again", func() bool {
		return strings.Contains(w.host.IP(t, "-o", "link", "show", w.net.Bridge), ",UP")
	})
	w.expectServed(t, 8080)
	w.waitLog(t, "added again")
}

// TestHealRemovedPins: after rm -rf of the pin directory the agent pins
// its maps again (contents as before) and its links (which it holds, so
// nothing was detached: an established connection carries on), and
// publishing works: from outside, and from the host through the socket
// hooks.
func TestHealRemovedPins(t *testing.T) {
	w := newHealWorld(t)
	conn := w.outside.Connect(t, netip.AddrPortFrom(w.hostIP, 8080).String())
	conn.RoundTrip(t, w.outsideIP)
	before := w.bindings()
	// The heal pass may pin into the directory while it is being removed.
	eventually(t, "the pin directory removed", func() bool { return os.RemoveAll(w.pins) == nil })
	eventually(t, "the bindings map is pinned again", func() bool {
		_, err := os.Stat(filepath.Join(w.pins, "bindings"))
		return err == nil
	})
	if after := w.bindings(); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("bindings changed:\nbefore %v\nafter  %v", before, after)
	}
	eventually(t, "the socket hooks and the uplink programs are attached again", func() bool {
		var cgroup, uplink bool
		for _, a := range w.status(t).Attachments {
			cgroup = cgroup || a.Kind == "cgroup"
			uplink = uplink || a.Target == w.uplink
		}
		return cgroup && uplink
	})
	w.expectServed(t, 8080)
	conn.RoundTrip(t, w.outsideIP)
	w.ok("port", "publish", "c1", "8081:80", "127.0.0.1:9091:80")
	w.expectServed(t, 8081)
	res, err := w.host.DialFrom(t, w.cgroup, "tcp", "127.0.0.1:9091")
	expectEcho(t, res, err, w.net.Gateway, "127.0.0.1:9091")
	w.waitLog(t, "repaired pins")
	if s := w.status(t); len(s.Degraded) > 0 {
		t.Errorf("status after a repair says degraded: %q", s.Degraded)
	}
	// The recreated directory is a new one: the agent locks it again, so
	// a second agent on it is refused as before the rm -rf.
	w.waitLog(t, "locked the recreated pin directory again")
	sp := newSpare(t)
	r := pontoonIn(t, sp.ns, "agent", "--state-dir", sp.stateDir, "--socket", sp.socket,
		"--bpffs", w.pins, "--cgroup", sp.cgroup)
	expectOneLineError(t, r, "holds the pin directory "+w.pins)

	// A binding deleted from the map by hand is put back by the
	// periodic resync.
	want := w.bindings()
	m, err := ebpf.LoadPinnedMap(filepath.Join(w.pins, "bindings"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := maps.NewBindings(m).Delete(maps.TCP, netip.MustParseAddrPort("0.0.0.0:8081")); err != nil {
		t.Fatal(err)
	}
	if slices.Equal(w.bindings(), want) {
		t.Fatal("deleting the 8081 binding changed nothing")
	}
	eventually(t, "the deleted binding is back", func() bool { return slices.Equal(w.bindings(), want) })
	w.expectServed(t, 8081)
	w.waitLog(t, "repaired bindings map")
}

// TestHealDetachedLink: links detached while their pins stay (bpftool
// link detach) are attached again: the uplink's tcx link and a socket
// hook's cgroup link.
func TestHealDetachedLink(t *testing.T) {
	w := newHealWorld(t)
	w.expectQuiet(t)
	if s := w.status(t); s.TCMode != "tcx" {
		t.Skipf("uplinks are attached with %s; detaching a link needs tcx links", s.TCMode)
	}
	pins, err := filepath.Glob(filepath.Join(w.pins, "links", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var detached []string
	for _, pin := range pins {
		name := filepath.Base(pin)
		if !strings.HasPrefix(name, "tcx_ingress_") && !strings.HasPrefix(name, "cg_connect4_") {
			continue
		}
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Detach(); err != nil {
			t.Fatalf("detach %s: %v", name, err)
		}
		l.Close()
		detached = append(detached, name)
	}
	if len(detached) != 2 {
		t.Fatalf("detached %v, want the uplink's ingress link and the connect4 hook", detached)
	}
	w.waitLog(t, "repaired socket hooks")
	w.waitLog(t, "attached uplink")
	w.expectServed(t, 8080)
	w.ok("port", "publish", "c1", "127.0.0.1:9091:80")
	res, err := w.host.DialFrom(t, w.cgroup, "tcp", "127.0.0.1:9091")
	expectEcho(t, res, err, w.net.Gateway, "127.0.0.1:9091")
}

// TestHealLegacyTC: with --legacy-tc, a whole datapath is left alone (no
// repair is logged over several heal passes), and the uplink's cls_bpf
// filter deleted by hand is put back.
func TestHealLegacyTC(t *testing.T) {
	w := newHealWorld(t, "--legacy-tc")
	w.expectQuiet(t)
	w.host.Exec(t, "tc", "filter", "del", "dev", w.uplink, "ingress")
	w.waitLog(t, "repairing uplink")
	eventually(t, "the uplink's filter is back", func() bool {
		return strings.Contains(w.host.Exec(t, "tc", "filter", "show", "dev", w.uplink, "ingress"), "pontoon_ingress")
	})
	w.expectServed(t, 8080)
}

// expectQuiet lets a few heal passes (one every 2 s) go by and checks
// that none repaired anything: nothing was broken.
func (w *healWorld) expectQuiet(t *testing.T) {
	t.Helper()
	time.Sleep(5 * time.Second)
	for _, line := range strings.Split(w.agentLog(), "\n") {
		if strings.Contains(line, "repaired") || strings.Contains(line, "repairing") || strings.Contains(line, "could not restore") {
			t.Errorf("the agent repaired a whole datapath: %s", line)
		}
	}
}

// TestHealReportsAdoptedBridgeGone: an adopted bridge is the host's, so
// the agent cannot recreate it when it is deleted: status names it, with
// what to do. Once it is back, the agent puts the gateway on it and the
// report goes.
func TestHealReportsAdoptedBridgeGone(t *testing.T) {
	w := newWorld(t, 0)
	w.startAgent()
	br := "ppa" + w.id
	w.host.IP(t, "link", "add", br, "type", "bridge")
	w.ok("network", "create", "adopt", "--bridge", br, "--subnet", "10.79.0.0/24")
	w.host.IP(t, "link", "del", br)
	eventually(t, "status reports "+br, func() bool {
		var s control.Status
		w.okJSON(&s, "status")
		return len(s.Degraded) == 1 && strings.Contains(s.Degraded[0], br) && strings.Contains(s.Degraded[0], "remove the network")
	})
	if out := w.ok("status"); !strings.Contains(out, ", degraded") || !strings.Contains(out, "degraded:") {
		t.Errorf("status output does not say degraded:\n%s", out)
	}
	w.host.IP(t, "link", "add", br, "type", "bridge")
	eventually(t, "the gateway is put on the bridge again", func() bool {
		out, err := w.host.TryIP("-br", "addr", "show", br)
		return err == nil && strings.Contains(out, "10.79.0.1/24")
	})
	eventually(t, "status is whole again", func() bool {
		var s control.Status
		w.okJSON(&s, "status")
		return len(s.Degraded) == 0
	})
}

// TestRestartRepairsBridge: a bridge deleted while no agent runs comes
// back at start with the veths still there enslaved, and traffic flows.
func TestRestartRepairsBridge(t *testing.T) {
	w := newHealWorld(t)
	w.agent.stop(syscall.SIGTERM)
	w.host.IP(t, "link", "del", w.net.Bridge)
	w.startAgent()
	ports := w.ports(w.net.Bridge)
	if !strings.Contains(ports, w.c1.HostIf) || !strings.Contains(ports, w.c2.HostIf) {
		t.Errorf("after a restart, bridge %s has ports %q, want %s and %s", w.net.Bridge, ports, w.c1.HostIf, w.c2.HostIf)
	}
	w.expectServed(t, 8080)
}

// TestPublishRefusedWhenDetached: when the agent cannot restore the
// datapath, status says what and why, and publish and attach are refused
// with 503 and one line, changing nothing; once the cause goes, it heals
// and they work again. Two causes: the pins gone and the pin directory no
// bpffs any more (a tmpfs mounted over it), and the socket hooks' cgroup
// removed.
func TestPublishRefusedWhenDetached(t *testing.T) {
	t.Run("pins", func(t *testing.T) {
		w := newHealWorld(t)
		// Mounted over the pins in one step: removing them first races
		// the heal pass, which pins them again.
		testenv.Run(t, "mount", "-t", "tmpfs", "pontoon-test", w.pins)
		mounted := true
		unmount := func() {
			if mounted {
				testenv.Run(t, "umount", w.pins)
				mounted = false
			}
		}
		t.Cleanup(unmount)
		w.expectRefused(t, "not on a bpffs")
		unmount()
		w.expectHealed(t)
	})
	t.Run("socket hooks", func(t *testing.T) {
		w := newHealWorld(t)
		testenv.Run(t, "rmdir", w.cgroup)
		w.expectRefused(t, "socket hooks on "+w.cgroup)
		testenv.Run(t, "mkdir", w.cgroup)
		w.expectHealed(t)
		w.ok("port", "publish", "c1", "127.0.0.1:9091:80")
		res, err := w.host.DialFrom(t, w.cgroup, "tcp", "127.0.0.1:9091")
		expectEcho(t, res, err, w.net.Gateway, "127.0.0.1:9091")
	})
}

// expectRefused waits for status to report reason, then checks that a
// publish and an attach are refused (CLI: non-zero exit, one line; API:
// 503) and change nothing.
func (w *healWorld) expectRefused(t *testing.T, reason string) {
	t.Helper()
	eventually(t, "status reports "+reason, func() bool {
		return strings.Contains(strings.Join(w.status(t).Degraded, "\n"), reason)
	})
	if out := w.ok("status"); !strings.Contains(out, ", degraded") {
		t.Errorf("status output does not say degraded:\n%s", out)
	}
	ports := w.mappingsWithoutTraffic()
	r := w.pt("port", "publish", "c1", "9090:80")
	if r.code == 0 || !strings.Contains(r.stderr, reason) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Errorf("publish into a broken datapath: exit %d, stderr %q; want non-zero and one line saying %q", r.code, r.stderr, reason)
	}
	if code := postStatus(t, w.socket, "/v1/ports", control.PublishRequest{Endpoint: "c1", Specs: []string{"9090:80"}}); code != http.StatusServiceUnavailable {
		t.Errorf("API publish into a broken datapath: %d, want 503", code)
	}
	name := "ppd" + w.id
	testenv.Run(t, "ip", "netns", "add", name)
	defer testenv.Run(t, "ip", "netns", "del", name)
	if r := w.pt("endpoint", "attach", "net", "c3", "--netns", "/run/netns/"+name); r.code == 0 || !strings.Contains(r.stderr, reason) {
		t.Errorf("attach into a broken datapath: exit %d, stderr %q", r.code, r.stderr)
	}
	if after := w.mappingsWithoutTraffic(); after != ports {
		t.Errorf("a refused publish changed the mappings:\nbefore %s\nafter  %s", ports, after)
	}
	// By name: a MAC in the table may well contain "c3".
	var eps []control.Endpoint
	w.okJSON(&eps, "endpoint", "ls")
	for _, e := range eps {
		if e.Name == "c3" {
			t.Errorf("a refused attach left an endpoint: %+v", e)
		}
	}
}

// expectHealed waits for status to be whole again, then publishes and
// checks both published ports carry traffic.
func (w *healWorld) expectHealed(t *testing.T) {
	t.Helper()
	eventually(t, "status is whole again", func() bool { return len(w.status(t).Degraded) == 0 })
	w.ok("port", "publish", "c1", "9090:80")
	w.expectServed(t, 9090)
	w.expectServed(t, 8080)
}

// postStatus sends one JSON request to the agent's API and returns the
// HTTP status.
func postStatus(t *testing.T, socket, path string, body any) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post("http://pontoon"+path, "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
