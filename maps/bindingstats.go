package maps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// BindingCounter mirrors struct binding_counter: what a published port
// mapping carried, towards its container (in) and back (out).
type BindingCounter struct {
	PacketsIn  uint64
	BytesIn    uint64
	PacketsOut uint64
	BytesOut   uint64
}

// BindingStats wraps the binding_stats map (by binding id). The
// datapath only counts into entries the agent created.
type BindingStats struct{ m *ebpf.Map }

func NewBindingStats(m *ebpf.Map) *BindingStats { return &BindingStats{m: m} }

// Create gives each id an entry, keeping the counts of those that have one.
func (s *BindingStats) Create(ids []uint32) error {
	if len(ids) == 0 {
		return nil
	}
	// A batch update takes no BPF_NOEXIST (the kernel allows only
	// BPF_F_LOCK in a batch's flags), so a large batch learns which ids
	// have an entry from one walk and writes the rest in one batch: 60,000
	// one by one took 60,000 system calls. The datapath never creates
	// entries, so none appears in between.
	if len(ids) > createOneByOne {
		have := map[uint32]bool{}
		if err := walk(s.m, func(id uint32, _ BindingCounter) { have[id] = true }); err != nil {
			return fmt.Errorf("create counters of %d bindings: %w", len(ids), err)
		}
		fresh := make([]uint32, 0, len(ids))
		for _, id := range ids {
			if !have[id] {
				fresh = append(fresh, id)
			}
		}
		if err := batchPut(s.m, fresh, make([]BindingCounter, len(fresh))); err != nil {
			return fmt.Errorf("create counters of %d bindings: %w", len(fresh), err)
		}
		return nil
	}
	for _, id := range ids {
		err := s.m.Update(id, BindingCounter{}, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("create counters of binding %d: %w", id, err)
		}
	}
	return nil
}

// createOneByOne: up to this many ids, one update each costs less than a
// walk of the whole map.
const createOneByOne = 256

// Delete drops the counters of ids; missing ones are not an error.
func (s *BindingStats) Delete(ids []uint32) error { return batchDelete(s.m, ids) }

// Get returns one binding's counters, and whether it has any.
func (s *BindingStats) Get(id uint32) (BindingCounter, bool) {
	var c BindingCounter
	return c, s.m.Lookup(id, &c) == nil
}

// All returns every binding's counters.
func (s *BindingStats) All() (map[uint32]BindingCounter, error) {
	out := map[uint32]BindingCounter{}
	if err := walk(s.m, func(id uint32, c BindingCounter) { out[id] = c }); err != nil {
		return nil, err
	}
	return out, nil
}

// Sync keeps the entries of ids, counts and all, creates the missing ones
// and deletes the rest. It returns the ids it created entries for: their
// bindings may have carried packets no counter saw.
func (s *BindingStats) Sync(ids []uint32) (created []uint32, err error) {
	want := make(map[uint32]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	have, err := s.All()
	if err != nil {
		return nil, err
	}
	var stale, missing []uint32
	for id := range have {
		if !want[id] {
			stale = append(stale, id)
		}
	}
	for id := range want {
		if _, ok := have[id]; !ok {
			missing = append(missing, id)
		}
	}
	// Stale ones first: they may be what makes room.
	if err := batchDelete(s.m, stale); err != nil {
		return nil, err
	}
	return missing, s.Create(missing)
}
