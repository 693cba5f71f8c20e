package maps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// BindingCounter mirrors struct binding_counter: what a published port
// mapping carried, towards its container (in) and back (out). Read sums it
// over CPUs.
type BindingCounter struct {
	PacketsIn  uint64
	BytesIn    uint64
	PacketsOut uint64
	BytesOut   uint64
}

func (c BindingCounter) add(o BindingCounter) BindingCounter {
	return BindingCounter{c.PacketsIn + o.PacketsIn, c.BytesIn + o.BytesIn, c.PacketsOut + o.PacketsOut, c.BytesOut + o.BytesOut}
}

// BindingStats wraps the binding_stats map (per-CPU, by binding id). The
// datapath only counts into entries the agent created.
type BindingStats struct{ m *ebpf.Map }

func NewBindingStats(m *ebpf.Map) *BindingStats { return &BindingStats{m: m} }

// Create gives each id an entry, keeping the counts of those that have one.
func (s *BindingStats) Create(ids []uint32) error {
	zero := make([]BindingCounter, ebpf.MustPossibleCPU())
	for _, id := range ids {
		err := s.m.Update(id, zero, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("create counters of binding %d: %w", id, err)
		}
	}
	return nil
}

// Delete drops the counters of ids; missing ones are not an error.
func (s *BindingStats) Delete(ids []uint32) error { return batchDelete(s.m, ids) }

// All returns every binding's counters, summed over CPUs.
func (s *BindingStats) All() (map[uint32]BindingCounter, error) {
	out := map[uint32]BindingCounter{}
	var (
		id     uint32
		perCPU []BindingCounter
	)
	it := s.m.Iterate()
	for it.Next(&id, &perCPU) {
		var sum BindingCounter
		for _, c := range perCPU {
			sum = sum.add(c)
		}
		out[id] = sum
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate binding_stats: %w", err)
	}
	return out, nil
}

// Sync keeps the entries of ids, counts and all, creates the missing ones
// and deletes the rest.
func (s *BindingStats) Sync(ids []uint32) error {
	want := make(map[uint32]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	have, err := s.All()
	if err != nil {
		return err
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
	if err := s.Create(missing); err != nil {
		return err
	}
	return batchDelete(s.m, stale)
}
