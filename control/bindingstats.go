package control

import (
	"github.com/pontoon-net/pontoon/maps"
)

// bindingIDs lists each binding id once: a port range shares one.
func bindingIDs(bindings []maps.Binding) []uint32 {
	seen := map[uint32]bool{}
	var ids []uint32
	for _, b := range bindings {
		if !seen[b.ID] {
			seen[b.ID] = true
			ids = append(ids, b.ID)
		}
	}
	return ids
}

// createBindingCounters gives the mappings about to be published their
// traffic counters, before their bindings can carry a packet. Counters are
// for watching, not for forwarding: a mapping that gets none (the map
// holds 65,536) is published all the same, with a warning.
func (a *Agent) createBindingCounters(bindings []maps.Binding) error {
	if err := maps.NewBindingStats(a.dp.Maps.BindingStats).Create(bindingIDs(bindings)); err != nil {
		a.log.Warn("published without traffic counters; unpublish unused mappings to make room", "err", err)
	}
	return nil
}

// syncBindingCounters keeps the counters of the mappings the records hold
// (across restarts and program swaps: the map is pinned) and drops the
// rest.
func (a *Agent) syncBindingCounters(bindings []maps.Binding) error {
	if err := maps.NewBindingStats(a.dp.Maps.BindingStats).Sync(bindingIDs(bindings)); err != nil {
		a.log.Warn("some mappings have no traffic counters", "err", err)
	}
	return nil
}
