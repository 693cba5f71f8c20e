package maps

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// BindingCounter is what a published port mapping carried, towards its
// container (in) and back (out).
type BindingCounter struct {
	PacketsIn  uint64
	BytesIn    uint64
	PacketsOut uint64
	BytesOut   uint64
}

// bindingSlot mirrors struct binding_counter: a slot of binding_stats and
// the binding whose counts it holds (0: none).
type bindingSlot struct {
	ID         uint32
	Pad        uint32
	PacketsIn  uint64
	BytesIn    uint64
	PacketsOut uint64
	BytesOut   uint64
}

func slotOf(id uint32, c BindingCounter) bindingSlot {
	return bindingSlot{ID: id, PacketsIn: c.PacketsIn, BytesIn: c.BytesIn, PacketsOut: c.PacketsOut, BytesOut: c.BytesOut}
}

func (sl bindingSlot) counter() BindingCounter {
	return BindingCounter{PacketsIn: sl.PacketsIn, BytesIn: sl.BytesIn, PacketsOut: sl.PacketsOut, BytesOut: sl.BytesOut}
}

// BindingStatsSlots is the size of binding_stats: live mappings whose ids
// are equal modulo it would share a slot, so the agent never gives out
// such an id while the other is published.
const BindingStatsSlots = 65536

// StatsSlot is the slot of binding_stats that counts id's traffic.
func StatsSlot(id uint32) uint32 { return id % BindingStatsSlots }

// BindingStats wraps the binding_stats map: an array of slots, each naming
// the binding it counts for. The datapath only counts into a slot that
// names its binding.
type BindingStats struct{ m *ebpf.Map }

func NewBindingStats(m *ebpf.Map) *BindingStats { return &BindingStats{m: m} }

// Create gives each id its slot, zeroed, keeping the counts of ids whose
// slot is theirs already. A slot that names another binding is taken:
// the agent gives out only ids whose slot no live mapping holds.
func (s *BindingStats) Create(ids []uint32) error {
	if len(ids) == 0 {
		return nil
	}
	if len(ids) > oneByOne {
		slots, err := s.slots()
		if err != nil {
			return fmt.Errorf("create counters of %d bindings: %w", len(ids), err)
		}
		var keys []uint32
		for _, id := range ids {
			if slots[StatsSlot(id)].ID != id {
				keys = append(keys, StatsSlot(id))
				slots[StatsSlot(id)] = bindingSlot{ID: id}
			}
		}
		if err := s.write(keys, slots); err != nil {
			return fmt.Errorf("create counters of %d bindings: %w", len(keys), err)
		}
		return nil
	}
	for _, id := range ids {
		var cur bindingSlot
		if err := s.m.Lookup(StatsSlot(id), &cur); err != nil {
			return fmt.Errorf("create counters of binding %d: %w", id, err)
		}
		if cur.ID == id {
			continue
		}
		if err := s.m.Update(StatsSlot(id), bindingSlot{ID: id}, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("create counters of binding %d: %w", id, err)
		}
	}
	return nil
}

// oneByOne: up to this many ids, a lookup and an update each cost less
// than reading and writing the whole array in batches.
const oneByOne = 256

// Put sets id's counters, taking its slot.
func (s *BindingStats) Put(id uint32, c BindingCounter) error {
	if err := s.m.Update(StatsSlot(id), slotOf(id, c), ebpf.UpdateExist); err != nil {
		return fmt.Errorf("set counters of binding %d: %w", id, err)
	}
	return nil
}

// Delete frees the slots of ids; a slot that names another binding, or
// none, is left as it is.
func (s *BindingStats) Delete(ids []uint32) error {
	if len(ids) == 0 {
		return nil
	}
	if len(ids) > oneByOne {
		slots, err := s.slots()
		if err != nil {
			return fmt.Errorf("delete counters of %d bindings: %w", len(ids), err)
		}
		return s.free(slots, ids)
	}
	for _, id := range ids {
		var cur bindingSlot
		if err := s.m.Lookup(StatsSlot(id), &cur); err != nil {
			return fmt.Errorf("delete counters of binding %d: %w", id, err)
		}
		if cur.ID != id {
			continue
		}
		if err := s.m.Update(StatsSlot(id), bindingSlot{}, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("delete counters of binding %d: %w", id, err)
		}
	}
	return nil
}

// Get returns one binding's counters, and whether its slot is its own.
func (s *BindingStats) Get(id uint32) (BindingCounter, bool) {
	var cur bindingSlot
	if err := s.m.Lookup(StatsSlot(id), &cur); err != nil || cur.ID != id || id == 0 {
		return BindingCounter{}, false
	}
	return cur.counter(), true
}

// All returns the counters of every binding that holds a slot.
func (s *BindingStats) All() (map[uint32]BindingCounter, error) {
	slots, err := s.slots()
	if err != nil {
		return nil, err
	}
	out := map[uint32]BindingCounter{}
	for _, sl := range slots {
		if sl.ID != 0 {
			out[sl.ID] = sl.counter()
		}
	}
	return out, nil
}

// Sync keeps the slots of ids, counts and all, gives the others among ids
// theirs and frees every other slot. It returns the ids it gave a slot
// to: their bindings may have carried packets no counter saw. Of ids that
// share a slot (given out before the agent kept them apart), the one
// holding it keeps it, and the others go uncounted.
func (s *BindingStats) Sync(ids []uint32) (created []uint32, err error) {
	slots, err := s.slots()
	if err != nil {
		return nil, err
	}
	want := make(map[uint32]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	var keys []uint32
	for i, sl := range slots {
		if sl.ID != 0 && !want[sl.ID] {
			slots[i] = bindingSlot{}
			keys = append(keys, uint32(i))
		}
	}
	for _, id := range ids {
		sl := &slots[StatsSlot(id)]
		if sl.ID == 0 && id != 0 {
			*sl = bindingSlot{ID: id}
			keys = append(keys, StatsSlot(id))
			created = append(created, id)
		}
	}
	if err := s.write(keys, slots); err != nil {
		return nil, err
	}
	return created, nil
}

// slots reads the whole array, indexed by slot.
func (s *BindingStats) slots() ([]bindingSlot, error) {
	slots := make([]bindingSlot, BindingStatsSlots)
	if err := walk(s.m, func(k uint32, v bindingSlot) {
		if int(k) < len(slots) {
			slots[k] = v
		}
	}); err != nil {
		return nil, err
	}
	return slots, nil
}

// free clears the slots that name one of ids.
func (s *BindingStats) free(slots []bindingSlot, ids []uint32) error {
	var keys []uint32
	for _, id := range ids {
		if k := StatsSlot(id); slots[k].ID == id {
			keys = append(keys, k)
			slots[k] = bindingSlot{}
		}
	}
	if err := s.write(keys, slots); err != nil {
		return fmt.Errorf("delete counters of %d bindings: %w", len(keys), err)
	}
	return nil
}

// write stores slots[k] for each k of keys, in one batch.
func (s *BindingStats) write(keys []uint32, slots []bindingSlot) error {
	values := make([]bindingSlot, len(keys))
	for i, k := range keys {
		values[i] = slots[k]
	}
	return batchPut(s.m, keys, values)
}
