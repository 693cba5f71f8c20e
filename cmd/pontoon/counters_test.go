package main

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/maps"
)

// TestBindingCounters sends a known number of datagrams through one of two
// published ports and checks that its counters moved by exactly that many
// packets each way, the other mapping's not at all, and that the counts
// survive an agent restart and keep counting after it.
func TestBindingCounters(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	c1 := w.containers[0]
	w.ok("network", "create", "cnt", "--subnet", "10.79.0.0/24")
	w.ok("endpoint", "attach", "cnt", "c1", "--netns", c1.Path())
	c1.ServeUDP(t, ":53")
	w.ok("port", "publish", "c1", "5353:53/udp", "5454:53/udp")
	var ms []control.PortMapping
	w.okJSON(&ms, "port", "ls", "c1")
	ids := map[uint16]uint32{}
	for _, m := range ms {
		ids[m.Host.First] = m.ID
	}
	if len(ids) != 2 || ids[5353] == ids[5454] {
		t.Fatalf("mappings %+v: want two with their own binding ids", ms)
	}

	dial := netip.AddrPortFrom(w.hostIP, 5353).String()
	send := func(n int) {
		t.Helper()
		for range n {
			res, err := w.outside.Dial("udp", dial)
			expectEcho(t, res, err, w.outsideIP, dial)
		}
	}
	want := func(n uint64) {
		t.Helper()
		all, err := maps.NewBindingStats(openPin(t, w.pins, "binding_stats")).All()
		if err != nil {
			t.Fatal(err)
		}
		got, other := all[ids[5353]], all[ids[5454]]
		if got.PacketsIn != n || got.PacketsOut != n {
			t.Errorf("binding %d counted %d in, %d out; want %d each way", ids[5353], got.PacketsIn, got.PacketsOut, n)
		}
		if got.BytesIn == 0 || got.BytesOut == 0 {
			t.Errorf("binding %d counted no bytes: %+v", ids[5353], got)
		}
		if other != (maps.BindingCounter{}) {
			t.Errorf("binding %d carried nothing but counted %+v", ids[5454], other)
		}
	}
	send(7)
	want(7)
	// port ls shows them too.
	w.okJSON(&ms, "port", "ls", "c1")
	for _, m := range ms {
		wantIn := uint64(0)
		if m.Host.First == 5353 {
			wantIn = 7
		}
		if m.Traffic == nil || m.Traffic.PacketsIn != wantIn || m.Traffic.PacketsOut != wantIn {
			t.Errorf("port ls: mapping %d traffic %+v, want %d packets each way", m.Host.First, m.Traffic, wantIn)
		}
	}
	// So do the port ls table and port inspect, by binding id and by
	// host port.
	for _, args := range [][]string{{"port", "ls"}, {"port", "ls", "c1"}} {
		text := w.ok(args...)
		want := regexp.MustCompile(`(?m)^(c1\s+)?53/udp -> 0\.0\.0\.0:5353  \(binding \d+: in 7 pkts \d+ B, out 7 pkts \d+ B\)$`)
		idle := regexp.MustCompile(`(?m)^(c1\s+)?53/udp -> 0\.0\.0\.0:5454  \(binding \d+: in 0 pkts 0 B, out 0 pkts 0 B\)$`)
		if !want.MatchString(text) || !idle.MatchString(text) {
			t.Errorf("pontoon %s shows no traffic of 7 packets each way on 5353 and none on 5454:\n%s", strings.Join(args, " "), text)
		}
	}
	for _, args := range [][]string{{"port", "inspect", strconv.FormatUint(uint64(ids[5353]), 10)}, {"port", "inspect", "--host-port", "5353", "--proto", "udp"}} {
		var got []control.PortMapping
		w.okJSON(&got, args...)
		if len(got) != 1 || got[0].ID != ids[5353] || got[0].Traffic == nil || got[0].Traffic.PacketsIn != 7 || got[0].Traffic.PacketsOut != 7 {
			t.Errorf("pontoon %s: %+v, want binding %d with 7 packets each way", strings.Join(args, " "), got, ids[5353])
		}
		text := w.ok(args...)
		if !regexp.MustCompile(`(?m)^in:\s+7 packets, [1-9]\d* bytes$`).MatchString(text) || !strings.Contains(text, "0.0.0.0:5353") {
			t.Errorf("pontoon %s text:\n%s", strings.Join(args, " "), text)
		}
	}
	for _, args := range [][]string{{"port", "inspect"}, {"port", "inspect", "x"}, {"port", "inspect", "4000000"}, {"port", "inspect", "--host-port", "5999"}, {"port", "inspect", "1", "--host-port", "5353"}} {
		r := w.pt(args...)
		if r.code == 0 || r.stderr == "" || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("pontoon %s: exit %d, stderr %q: want a one-line refusal", strings.Join(args, " "), r.code, r.stderr)
		}
	}

	w.agent.stop(syscall.SIGTERM)
	w.startAgent()
	want(7)
	send(3)
	want(10)

	// An unpublished mapping's counters go with it at the next reconcile.
	w.ok("port", "unpublish", "c1", "5353:53/udp")
	w.agent.stop(syscall.SIGTERM)
	w.startAgent()
	all, err := maps.NewBindingStats(openPin(t, w.pins, "binding_stats")).All()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := all[ids[5353]]; ok {
		t.Errorf("counters of the unpublished binding %d survived a reconcile", ids[5353])
	}
	if _, ok := all[ids[5454]]; !ok {
		t.Errorf("counters of binding %d, still published, are gone", ids[5454])
	}
}
