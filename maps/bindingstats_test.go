package maps_test

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/pontoon-net/pontoon/maps"
)

// TestBindingStatsCreate: Create gives new ids zeroed counters and keeps
// the counts of ids that have some, one by one and as a batch (more ids
// than the one-by-one limit).
func TestBindingStatsCreate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating BPF maps needs root")
	}
	// Before 5.11 maps count against RLIMIT_MEMLOCK, and 65,536 entries
	// are more than its default.
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{3, 1000} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 32, MaxEntries: 65536})
		if err != nil {
			t.Fatalf("create binding_stats map: %v", err)
		}
		defer m.Close()
		s := maps.NewBindingStats(m)
		if err := m.Put(uint32(1), maps.BindingCounter{PacketsIn: 7}); err != nil {
			t.Fatal(err)
		}
		ids := make([]uint32, n)
		for i := range ids {
			ids[i] = uint32(i + 1)
		}
		if err := s.Create(ids); err != nil {
			t.Fatalf("create %d counters: %v", n, err)
		}
		all, err := s.All()
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != n || all[1].PacketsIn != 7 || all[uint32(n)] != (maps.BindingCounter{}) {
			t.Fatalf("%d ids: %d entries, id 1 has %d packets in (want %d, 7)", n, len(all), all[1].PacketsIn, n)
		}
	}
}
