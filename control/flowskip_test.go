package control

import (
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// TestUnpublishWalksOnlyForTraffic: an unpublish walks the conntrack
// tables for a binding whose counters saw a packet, or whose counters were
// made after it (countedLate), and skips the walk for one that never
// carried a packet. The entries here are planted: the datapath makes an
// entry only for a packet it counts, so the one left behind by the skip
// cannot arise from traffic.
func TestUnpublishWalksOnlyForTraffic(t *testing.T) {
	a := withCT(t, testAgent(t))
	stats := maps.NewBindingStats(a.dp.Maps.BindingStats)
	publishOne := func(spec string) uint32 {
		t.Helper()
		ms, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{spec}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := stats.Get(ms[0].ID); !ok {
			t.Fatalf("publish %s made no counters for binding %d", spec, ms[0].ID)
		}
		return ms[0].ID
	}
	plantFlow := func(id uint32, sport uint16) {
		t.Helper()
		k := maps.CTKey{Family: 2, Proto: maps.TCP, Sport: sport, Dport: 80}
		if err := a.dp.Maps.CT.Put(k, maps.CTValue{BindingID: id}); err != nil {
			t.Fatal(err)
		}
	}
	flowsOf := func(id uint32) int {
		t.Helper()
		all, err := maps.NewCT(a.dp.Maps.CT, a.dp.Maps.CTNew).All()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range all {
			if e.BindingID == id {
				n++
			}
		}
		return n
	}
	unpublish := func(spec string) {
		t.Helper()
		if ms, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: spec}); err != nil || len(ms) != 1 {
			t.Fatalf("unpublish %s: %d removed, %v", spec, len(ms), err)
		}
	}

	busy := publishOne("8080:80/tcp")
	plantFlow(busy, 1)
	if err := maps.NewBindingStats(a.dp.Maps.BindingStats).Put(busy, maps.BindingCounter{PacketsIn: 1, BytesIn: 60}); err != nil {
		t.Fatal(err)
	}
	unpublish("8080:80/tcp")
	if n := flowsOf(busy); n != 0 {
		t.Errorf("binding %d that carried a packet keeps %d conntrack entries after unpublish, want 0", busy, n)
	}

	idle := publishOne("8081:80/tcp")
	plantFlow(idle, 2)
	unpublish("8081:80/tcp")
	if n := flowsOf(idle); n != 1 {
		t.Errorf("binding %d that never carried a packet: %d entries after unpublish, want the planted one left (no walk)", idle, n)
	}

	late := publishOne("8082:80/tcp")
	if err := stats.Delete([]uint32{late}); err != nil {
		t.Fatal(err)
	}
	if err := a.syncBindingCounters(a.wantBindings()); err != nil {
		t.Fatal(err)
	}
	if _, ok := stats.Get(late); !ok {
		t.Fatalf("sync did not make the missing counters of binding %d", late)
	}
	plantFlow(late, 3)
	unpublish("8082:80/tcp")
	if n := flowsOf(late); n != 0 {
		t.Errorf("binding %d whose counters came after it keeps %d entries after unpublish, want 0", late, n)
	}
	if a.countedLate[late] {
		t.Errorf("binding %d still marked countedLate after its unpublish", late)
	}
}
