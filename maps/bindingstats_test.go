package maps_test

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/pontoon-net/pontoon/maps"
)

// newBindingStats is an unpinned binding_stats of the datapath's layout.
func newBindingStats(t *testing.T) *maps.BindingStats {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating BPF maps needs root")
	}
	// Before 5.11 maps count against RLIMIT_MEMLOCK, and 65,536 slots
	// are more than its default.
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 40, MaxEntries: maps.BindingStatsSlots})
	if err != nil {
		t.Fatalf("create binding_stats map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return maps.NewBindingStats(m)
}

// TestBindingStatsCreate: Create gives new ids zeroed slots and keeps the
// counts of ids whose slot is theirs, one by one and as a batch (more ids
// than the one-by-one limit). A slot that names a gone binding is taken
// over, counts and all.
func TestBindingStatsCreate(t *testing.T) {
	for _, n := range []int{3, 1000} {
		s := newBindingStats(t)
		stale := uint32(2 + maps.BindingStatsSlots) // shares id 2's slot
		for id, packets := range map[uint32]uint64{1: 7, stale: 9} {
			if err := s.Put(id, maps.BindingCounter{PacketsIn: packets}); err != nil {
				t.Fatal(err)
			}
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
		if len(all) != n || all[1].PacketsIn != 7 || all[2] != (maps.BindingCounter{}) || all[uint32(n)] != (maps.BindingCounter{}) {
			t.Fatalf("%d ids: %d slots taken, id 1 has %d packets in, id 2 %d (want %d, 7, 0)", n, len(all), all[1].PacketsIn, all[2].PacketsIn, n)
		}
		if _, ok := s.Get(stale); ok {
			t.Errorf("%d ids: id %d still has counters after id 2 took its slot", n, stale)
		}
	}
}

// TestBindingStatsDelete frees only slots that name the ids given: a slot
// another binding took since is left to it, one by one and as a batch.
func TestBindingStatsDelete(t *testing.T) {
	for _, n := range []int{2, 1000} {
		s := newBindingStats(t)
		ids := make([]uint32, n)
		for i := range ids {
			ids[i] = uint32(i + 1)
		}
		if err := s.Create(ids); err != nil {
			t.Fatal(err)
		}
		newer := uint32(1 + maps.BindingStatsSlots)
		if err := s.Put(newer, maps.BindingCounter{BytesOut: 5}); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ids); err != nil {
			t.Fatalf("delete %d counters: %v", n, err)
		}
		all, err := s.All()
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || all[newer].BytesOut != 5 {
			t.Fatalf("%d ids deleted: slots hold %v, want only id %d's", n, all, newer)
		}
	}
}

// TestBindingStatsSync keeps the slots of the ids given, counts and all,
// frees the rest and creates the missing; of two ids that share a slot,
// the one holding it keeps it.
func TestBindingStatsSync(t *testing.T) {
	s := newBindingStats(t)
	shares := uint32(3 + maps.BindingStatsSlots)
	for id, packets := range map[uint32]uint64{1: 4, 2: 6, 3: 8} {
		if err := s.Put(id, maps.BindingCounter{PacketsOut: packets}); err != nil {
			t.Fatal(err)
		}
	}
	created, err := s.Sync([]uint32{1, 3, 5, shares})
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || created[0] != 5 {
		t.Errorf("sync created %v, want [5]", created)
	}
	all, err := s.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[1].PacketsOut != 4 || all[3].PacketsOut != 8 || all[5] != (maps.BindingCounter{}) {
		t.Errorf("after sync slots hold %v, want ids 1 (4 packets out), 3 (8) and 5 (none)", all)
	}
	if _, ok := s.Get(shares); ok {
		t.Errorf("id %d took the slot id 3 holds", shares)
	}
}
