package loader_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestBindingStatsUpgrade: a binding_stats pin of the layout before slots
// (a hash keyed by binding id) is upgraded by the next Load with its
// counts, where Load used to refuse it; the programs then count a
// published port's traffic in the upgraded table.
func TestBindingStatsUpgrade(t *testing.T) {
	testenv.RequirePrivileges(t)
	w := testenv.NewWorld(t)
	pins := testenv.PinDir(t)
	cgroup := testenv.Cgroup(t)
	if err := os.MkdirAll(pins, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 32, MaxEntries: 65536})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	// 7 and 7+65,536 share a slot: one of them keeps it.
	shares := uint32(7 + maps.BindingStatsSlots)
	for id, c := range map[uint32]maps.BindingCounter{
		7: {PacketsIn: 3, BytesIn: 300}, shares: {PacketsIn: 4}, 8: {PacketsOut: 5, BytesOut: 500},
	} {
		if err := old.Put(id, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Pin(filepath.Join(pins, "binding_stats")); err != nil {
		t.Fatal(err)
	}
	if loader.CanUpgradeBindingStats("ct", &ebpf.MapSpec{Type: ebpf.Array}, old) {
		t.Fatal("CanUpgradeBindingStats: want it for binding_stats only")
	}

	var mode string
	if err := w.Host.Helper(t, "", &mode, "load", pins, w.Uplink, cgroup, "tcx", "bridge="+w.Bridge); err != nil {
		t.Fatalf("load over the old binding_stats pin: %v", err)
	}
	pinned := openPinned(t, pins, "binding_stats")
	if pinned.Type() != ebpf.Array {
		t.Fatalf("binding_stats is a %v after the upgrade, want an array", pinned.Type())
	}
	stats := maps.NewBindingStats(pinned)
	all, err := stats.All()
	if err != nil {
		t.Fatal(err)
	}
	kept7, ok7 := all[7]
	keptShares, okShares := all[shares]
	if len(all) != 2 || all[8] != (maps.BindingCounter{PacketsOut: 5, BytesOut: 500}) || ok7 == okShares ||
		(ok7 && kept7 != (maps.BindingCounter{PacketsIn: 3, BytesIn: 300})) || (okShares && keptShares.PacketsIn != 4) {
		t.Fatalf("upgraded counters %v, want id 8's and one of ids 7 and %d, with their counts", all, shares)
	}

	// The programs count into the upgraded table.
	if err := maps.NewNetworks(openPinned(t, pins, "networks")).Put(maps.Network{
		Subnet: netip.PrefixFrom(w.Gateway, w.ContainerPrefixLen).Masked(), Gateway: w.Gateway, ID: 1,
	}); err != nil {
		t.Fatal(err)
	}
	if err := maps.NewBindings(openPinned(t, pins, "bindings")).PutBatch([]maps.Binding{
		{Proto: maps.TCP, Host: netip.AddrPortFrom(netip.IPv4Unspecified(), 8080), Backend: netip.AddrPortFrom(w.AIP, 80), ID: 8},
	}); err != nil {
		t.Fatal(err)
	}
	w.A.ServeTCP(t, ":80")
	conn := w.Outside.Connect(t, netip.AddrPortFrom(w.HostIP, 8080).String())
	conn.RoundTrip(t, w.OutsideIP)
	c, ok := stats.Get(8)
	if !ok || c.PacketsIn == 0 || c.PacketsOut <= 5 {
		t.Fatalf("binding 8 after a round trip: %+v (own slot %v), want packets in and more than 5 out", c, ok)
	}
}
