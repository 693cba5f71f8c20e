package main

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/maps"
)

// TestRestart stops the agent (SIGTERM, then kill -9): established and new
// connections keep working while no agent runs; drift made meanwhile (a
// lost veth, a stray binding, a stray labelled interface) is repaired on
// start, and the state afterwards is what it was before.
func TestRestart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) { testRestart(t, sig) })
	}
}

func testRestart(t *testing.T, sig syscall.Signal) {
	w := newWorld(t, 2)
	w.startAgent()
	c1, c2 := w.containers[0], w.containers[1]
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	var ep2 control.Endpoint
	w.ok("endpoint", "attach", "net", "c1", "--netns", c1.Path())
	w.okJSON(&ep2, "endpoint", "attach", "net", "c2", "--netns", c2.Path())
	c1.ServeTCP(t, ":80")
	w.ok("port", "publish", "c1", "8080:80", "127.0.0.1:9090:80")
	hostTCP := netip.AddrPortFrom(w.hostIP, 8080).String()

	conn := w.outside.Connect(t, hostTCP)
	conn.RoundTrip(t, w.outsideIP)
	before := w.snapshot()

	w.agent.stop(sig)
	if sig == syscall.SIGTERM {
		w.waitNotify("STOPPING=1")
		if w.agent.err != nil {
			t.Errorf("agent exit on SIGTERM: %v, want a clean exit\n%s", w.agent.err, w.agentLog())
		}
	}

	t.Run("traffic carries on without an agent", func(t *testing.T) {
		conn.RoundTrip(t, w.outsideIP)
		res, err := w.outside.Dial("tcp", hostTCP)
		expectEcho(t, res, err, w.outsideIP, hostTCP)
		res, err = w.host.DialFrom(t, w.cgroup, "tcp", "127.0.0.1:9090")
		expectEcho(t, res, err, netip.MustParseAddr("10.77.0.1"), "127.0.0.1:9090")
		res, err = c2.DialFrom(t, w.cgroup, "tcp", hostTCP)
		expectEcho(t, res, err, ep2.IP, hostTCP)
	})

	// Drift while the agent is down.
	w.host.IP(t, "link", "del", ep2.HostIf)
	// A bridge labelled and named as network ghost's would be, with no
	// record: a crash leftover, pruned. One labelled for an endpoint but
	// not the veth the agent would make: no proof, left alone.
	w.host.IP(t, "link", "add", "pt-ghost", "type", "bridge")
	w.host.IP(t, "link", "set", "pt-ghost", "alias", "pontoon:net:ghost")
	w.host.IP(t, "link", "add", "ptvstray", "type", "bridge")
	w.host.IP(t, "link", "set", "ptvstray", "alias", "pontoon:ep:ghost")
	m, err := ebpf.LoadPinnedMap(filepath.Join(w.pins, "bindings"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	stray := maps.Binding{Proto: maps.TCP, Host: netip.MustParseAddrPort("0.0.0.0:7777"), Backend: netip.MustParseAddrPort("10.77.0.99:1"), ID: 999}
	if err := maps.NewBindings(m).Put(stray); err != nil {
		t.Fatal(err)
	}
	// A flow of it, as an agent that died between an unpublish's record
	// and its flush leaves one.
	ct := openPin(t, w.pins, "ct")
	strayFlow := maps.CTKey{Family: 2, Proto: maps.TCP, Sport: netPort(1), Dport: netPort(40000),
		Saddr: raw4("10.77.0.99"), Daddr: raw4(w.outsideIP.String())}
	if err := ct.Put(strayFlow, maps.CTValue{NatAddr: raw4(w.hostIP.String()), NatPort: netPort(7777),
		Flags: maps.CTDNATReply, BindingID: 999}); err != nil {
		t.Fatal(err)
	}

	w.startAgent()
	t.Run("the stray binding's flow is flushed", func(t *testing.T) {
		var v maps.CTValue
		if err := ct.Lookup(strayFlow, &v); err == nil {
			t.Error("a flow of a binding no record wants survived the restart")
		}
	})

	t.Run("the established connection survived", func(t *testing.T) {
		conn.RoundTrip(t, w.outsideIP)
	})
	t.Run("state, maps and interfaces are what they were", func(t *testing.T) {
		if links := w.host.IP(t, "-br", "link"); !strings.Contains(links, "ptvstray") {
			t.Error("the agent deleted a labelled interface nothing proves it made")
		}
		w.host.IP(t, "link", "del", "ptvstray")
		after := w.snapshot()
		// A recreated veth pair has new interface indexes; nothing else
		// may differ.
		ifindex := regexp.MustCompile(`@if\d+`)
		for k, v := range before.links {
			before.links[k] = ifindex.ReplaceAllString(v, "")
			after.links[k] = ifindex.ReplaceAllString(after.links[k], "")
		}
		sameSnapshot(t, "a restart", before, after)
		if strings.Contains(after.links[w.host.Name], "pt-ghost") {
			t.Error("the stray bridge of a network without a record survived the restart")
		}
	})
	t.Run("the recreated endpoint works", func(t *testing.T) {
		res, err := c2.DialFrom(t, w.cgroup, "tcp", hostTCP)
		expectEcho(t, res, err, ep2.IP, hostTCP)
		if link := c2.IP(t, "-o", "link", "show", "eth0"); !strings.Contains(link, ep2.MAC) {
			t.Errorf("recreated eth0 lost its MAC %s: %s", ep2.MAC, link)
		}
	})
}

// TestAgentWatchdog: with WATCHDOG_USEC set, as systemd sets it for
// WatchdogSec=, the agent pings after READY=1.
func TestAgentWatchdog(t *testing.T) {
	w := newWorld(t, 0)
	w.agentEnv = []string{"WATCHDOG_USEC=200000"}
	w.startAgent()
	w.waitNotify("WATCHDOG=1")
	w.waitNotify("WATCHDOG=1")
}

// TestUpgradeFlushesGoneFlows: a start that moves conntrack to this
// build's layout flushes the flows no binding translates too. Load copies
// the old table, reconcile flushes the copy, and the copy of what the old
// programs wrote meanwhile (FinishUpgrade) brings the flow back from the
// old table, which still holds it: the agent flushes again after it.
func TestUpgradeFlushesGoneFlows(t *testing.T) {
	w := newWorld(t, 0)
	w.startAgent()
	w.agent.stop(syscall.SIGTERM)
	obj, err := bpf.LoadForKernel(bpf.LoadTcUplink)
	if err != nil {
		t.Fatal(err)
	}
	spec := obj.Maps["ct"]
	// The layout before created_ns: 48 bytes, which the loader upgrades.
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ct", Type: spec.Type, KeySize: spec.KeySize, ValueSize: 48, MaxEntries: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	gone := maps.CTKey{Family: 2, Proto: maps.TCP, Sport: netPort(1), Dport: netPort(40000),
		Saddr: raw4("10.77.0.99"), Daddr: raw4("192.0.2.77")}
	v := make([]byte, 48)
	nat := raw4(w.hostIP.String())
	copy(v, nat[:])
	binary.NativeEndian.PutUint16(v[16:], netPort(7777))
	v[18] = maps.CTDNATReply
	binary.NativeEndian.PutUint32(v[20:], 999)
	if err := old.Put(gone, v); err != nil {
		t.Fatal(err)
	}
	// The old build's ct in place of the one the first start made.
	if err := os.Remove(filepath.Join(w.pins, "ct")); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(w.pins, "ct")); err != nil {
		t.Fatal(err)
	}

	w.startAgent()
	if !strings.Contains(w.agentLog(), "conntrack tables upgraded") {
		t.Fatalf("the agent did not upgrade the old ct pin:\n%s", w.agentLog())
	}
	var cur maps.CTValue
	if err := openPin(t, w.pins, "ct").Lookup(gone, &cur); err == nil {
		t.Error("a flow no binding translates survived the upgrade")
	}
}
