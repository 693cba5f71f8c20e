package control

import (
	"errors"
	"slices"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// TestNewIDsSkipHeldSlots: ids go on from nextID, past those whose
// binding_stats slot a live mapping holds and past 0; a request for more
// slots than are free is refused and changes nothing.
func TestNewIDsSkipHeldSlots(t *testing.T) {
	st := &state{ports: map[string]*PortMapping{}, nextID: 1 + maps.BindingStatsSlots}
	for _, id := range []uint32{1, 3} {
		st.putPort(&PortMapping{Endpoint: "web", Proto: "tcp", ID: id, Host: ipam.PortRange{First: uint16(8000 + id), Last: uint16(8000 + id)}})
	}
	ids, next, err := st.newIDs(3)
	if want := []uint32{2 + maps.BindingStatsSlots, 4 + maps.BindingStatsSlots, 5 + maps.BindingStatsSlots}; err != nil || !slices.Equal(ids, want) || next != want[2]+1 {
		t.Fatalf("newIDs(3) = %v, next %d, %v; want %v, next %d", ids, next, err, want, want[2]+1)
	}

	// A mapping that goes frees its slot.
	st.deletePort(&PortMapping{Endpoint: "web", Proto: "tcp", ID: 1, Host: ipam.PortRange{First: 8001, Last: 8001}})
	if ids, _, err := st.newIDs(1); err != nil || ids[0] != 1+maps.BindingStatsSlots {
		t.Fatalf("after id 1 went, newIDs(1) = %v, %v; want [%d]", ids, err, 1+maps.BindingStatsSlots)
	}

	st.nextID = ^uint32(0)
	if ids, next, err := st.newIDs(2); err != nil || !slices.Equal(ids, []uint32{^uint32(0), 1}) || next != 2 {
		t.Fatalf("newIDs(2) at the end of the id space = %v, next %d, %v; want [%d 1], next 2", ids, next, err, ^uint32(0))
	}

	// Every slot but two held.
	for id := uint32(4); id < maps.BindingStatsSlots; id++ {
		st.holdSlot(id)
	}
	st.holdSlot(maps.BindingStatsSlots) // slot 0
	before := st.nextID
	if _, _, err := st.newIDs(3); !errors.Is(err, ErrConflict) {
		t.Fatalf("newIDs(3) with two slots free: %v, want a conflict", err)
	}
	if st.nextID != before {
		t.Fatalf("a refused newIDs moved nextID from %d to %d", before, st.nextID)
	}
	if ids, _, err := st.newIDs(2); err != nil || len(ids) != 2 {
		t.Fatalf("newIDs(2) with two slots free = %v, %v", ids, err)
	}
}

// TestPublishAfterIDsWrapKeepsCounters: once ids have gone round the
// slots, a new mapping still gets a slot of its own, and an older mapping
// that holds the slot its id would have had keeps its counts.
func TestPublishAfterIDsWrapKeepsCounters(t *testing.T) {
	a := testAgent(t)
	stats := maps.NewBindingStats(a.dp.Maps.BindingStats)
	first, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8080:80/tcp"}})
	if err != nil {
		t.Fatal(err)
	}
	old := first[0].ID
	if err := stats.Put(old, maps.BindingCounter{PacketsIn: 9}); err != nil {
		t.Fatal(err)
	}
	a.st.nextID = old + maps.BindingStatsSlots // as after 65,536 publishes
	next, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8081:80/tcp", "8082:80/udp"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range next {
		if maps.StatsSlot(m.ID) == maps.StatsSlot(old) {
			t.Errorf("mapping %s got id %d, which shares binding %d's slot", m.Host, m.ID, old)
		}
		if c, ok := stats.Get(m.ID); !ok || c != (maps.BindingCounter{}) {
			t.Errorf("mapping %s (id %d): counters %+v, own slot %v; want zeroed counters of its own", m.Host, m.ID, c, ok)
		}
	}
	if c, ok := stats.Get(old); !ok || c.PacketsIn != 9 {
		t.Errorf("binding %d after the wrap: %+v, own slot %v; want its 9 packets in", old, c, ok)
	}
}
