package control

import (
	"github.com/pontoon-net/pontoon/maps"
)

// newIDs gives out n binding ids from nextID on, and the nextID after them.
// It skips ids whose binding_stats slot a live mapping holds, so every
// mapping counts its traffic in a slot of its own, and id 0 (no binding).
func (st *state) newIDs(n int) ([]uint32, uint32, error) {
	owners := st.owners()
	ids := make([]uint32, 0, n)
	id := st.nextID
	// One lap of the slots at most: more would give two of them one slot.
	for range maps.BindingStatsSlots {
		if len(ids) == n {
			break
		}
		if id != 0 && owners[maps.StatsSlot(id)] == 0 {
			ids = append(ids, id)
		}
		id++
	}
	if len(ids) < n {
		return nil, 0, kindf(ErrConflict, "%d more port mappings would make more than %d on this host, each counted in a slot of its own: unpublish some first", n, maps.BindingStatsSlots)
	}
	return ids, id, nil
}

// owners returns slotOwners, built from the mappings on first use.
func (st *state) owners() []uint32 {
	if st.slotOwners == nil {
		st.slotOwners = make([]uint32, maps.BindingStatsSlots)
		for _, m := range st.ports {
			st.slotOwners[maps.StatsSlot(m.ID)] = m.ID
		}
	}
	return st.slotOwners
}

func (st *state) holdSlot(id uint32) {
	if st.slotOwners != nil {
		st.slotOwners[maps.StatsSlot(id)] = id
	}
}

func (st *state) releaseSlot(id uint32) {
	if st.slotOwners != nil && st.slotOwners[maps.StatsSlot(id)] == id {
		st.slotOwners[maps.StatsSlot(id)] = 0
	}
}
