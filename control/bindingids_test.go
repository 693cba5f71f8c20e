package control

import (
	"slices"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// TestNewIDsSkipHeldSlots: ids go on from nextID, past those whose
// binding_stats slot a live mapping holds and past 0. Once no slot is
// free, ids are still given out, distinct, and listed as uncounted.
func TestNewIDsSkipHeldSlots(t *testing.T) {
	st := &state{ports: map[string]*PortMapping{}, nextID: 1 + maps.BindingStatsSlots}
	mapping := func(id uint32, port uint16) *PortMapping {
		return &PortMapping{Endpoint: "web", Proto: "tcp", ID: id, Host: ipam.PortRange{First: port, Last: port}}
	}
	st.putPort(mapping(1, 8001))
	st.putPort(mapping(3, 8003))
	ids, counted, next := st.newIDs(3)
	if want := []uint32{2 + maps.BindingStatsSlots, 4 + maps.BindingStatsSlots, 5 + maps.BindingStatsSlots}; !slices.Equal(ids, want) || !slices.Equal(counted, want) || next != want[2]+1 {
		t.Fatalf("newIDs(3) = %v (counted %v), next %d; want %v, all counted, next %d", ids, counted, next, want, want[2]+1)
	}

	// A mapping that goes frees its slot, and so does one replaced by
	// a mapping of another id under the same key.
	st.deletePort(mapping(1, 8001))
	st.putPort(mapping(7, 8003))
	if ids, _, _ := st.newIDs(3); !slices.Equal(ids, []uint32{1 + maps.BindingStatsSlots, 2 + maps.BindingStatsSlots, 3 + maps.BindingStatsSlots}) {
		t.Fatalf("after ids 1 and 3 went, newIDs(3) = %v; want slots 1, 2 and 3", ids)
	}

	st.nextID = ^uint32(0)
	if ids, _, next := st.newIDs(2); !slices.Equal(ids, []uint32{^uint32(0), 1}) || next != 2 {
		t.Fatalf("newIDs(2) at the end of the id space = %v, next %d; want [%d 1], next 2", ids, next, ^uint32(0))
	}

	// Every slot but two held: two ids counted, the third shares a slot.
	for id := uint32(8); id <= maps.BindingStatsSlots; id++ {
		st.holdSlot(id)
	}
	st.holdSlot(3)
	st.holdSlot(4)
	st.holdSlot(5)
	st.holdSlot(6)
	st.nextID = 1
	ids, counted, next = st.newIDs(3)
	if !slices.Equal(counted, []uint32{1, 2}) || len(ids) != 3 || ids[0] != 1 || ids[1] != 2 || ids[2] <= 2 || next != ids[2]+1 {
		t.Fatalf("newIDs(3) with slots 1 and 2 free = %v (counted %v), next %d; want 1 and 2 counted and a third id past them", ids, counted, next)
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
	a.st.nextID = old + maps.BindingStatsSlots - 1 // as after 65,535 publishes
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

	// Through the API, the client learns the ids the agent gave: they
	// skip the slots of the three mappings above, so they are not
	// consecutive.
	a.st.nextID = old + 2*maps.BindingStatsSlots - 2
	c := serveAPI(t, a, nil)
	got, err := c.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8083:80/tcp", "8084:80/tcp"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		held, ok := a.st.ports[portKey(m)]
		if !ok || held.ID != m.ID {
			t.Errorf("client says %s has id %d; the agent holds %v", m.Host, m.ID, held)
		}
	}
	if got[1].ID == got[0].ID+1 {
		t.Errorf("ids %d and %d are consecutive: the request did not skip a held slot, the test proves nothing", got[0].ID, got[1].ID)
	}
}
