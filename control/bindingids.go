package control

import (
	"github.com/pontoon-net/pontoon/maps"
)

// newIDs gives out n binding ids from nextID on, and the nextID after them.
// It skips id 0 (no binding) and ids whose binding_stats slot a live
// mapping holds, so that each mapping counts its traffic in a slot of its
// own; counted lists those ids. Past 65,536 live mappings no slot is
// free: the rest of the ids share one and their mappings go uncounted,
// published all the same (counters are for watching, not forwarding).
func (st *state) newIDs(n int) (ids, counted []uint32, next uint32) {
	users := st.users()
	ids = make([]uint32, 0, n)
	id := st.nextID
	// One lap of the slots at most: more would give two new ids one slot.
	for range maps.BindingStatsSlots {
		if len(ids) == n {
			break
		}
		if id != 0 && users[maps.StatsSlot(id)] == 0 {
			ids = append(ids, id)
		}
		id++
	}
	counted = ids
	for len(ids) < n {
		if id != 0 {
			ids = append(ids, id)
		}
		id++
	}
	return ids, counted, id
}

// users returns slotUsers, counted from the mappings on first use.
func (st *state) users() []uint32 {
	if st.slotUsers == nil {
		st.slotUsers = make([]uint32, maps.BindingStatsSlots)
		for _, m := range st.ports {
			st.slotUsers[maps.StatsSlot(m.ID)]++
		}
	}
	return st.slotUsers
}

func (st *state) holdSlot(id uint32) {
	if st.slotUsers != nil {
		st.slotUsers[maps.StatsSlot(id)]++
	}
}

func (st *state) releaseSlot(id uint32) {
	if st.slotUsers != nil && st.slotUsers[maps.StatsSlot(id)] > 0 {
		st.slotUsers[maps.StatsSlot(id)]--
	}
}
