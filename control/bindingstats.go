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

// createCounters gives the mappings about to be published their traffic
// counters, before their bindings can carry a packet. Counters are for
// watching, not for forwarding: a mapping that gets none is published all
// the same, with a warning.
func (a *Agent) createCounters(ids []uint32) {
	if err := maps.NewBindingStats(a.dp.Maps.BindingStats).Create(ids); err != nil {
		a.log.Warn("published without traffic counters; unpublish unused mappings to make room", "err", err)
	}
}

// countersAhead creates the counters of a big publish's ids in a
// goroutine of its own, while ipam finds and commits the ports: a kernel
// map batch of 60,000 takes tens of milliseconds, and a second core can
// take it. Below overlapAbove ids, wait makes them in the caller, after
// the commit. drop, for a publish that failed, deletes whatever was made:
// ids of a failed publish are given again, and a counter that saw its
// packets would count them for the next mapping.
type countersAhead struct {
	a    *Agent
	ids  []uint32
	done chan struct{}
	made bool
}

// overlapAbove is the batch size from which a publish writes maps in a
// goroutine while it goes on with other work.
const overlapAbove = 1024

func (a *Agent) startCounters(ids []uint32) *countersAhead {
	c := &countersAhead{a: a, ids: ids}
	if len(ids) >= overlapAbove {
		c.done = make(chan struct{})
		c.made = true
		go func() {
			defer close(c.done)
			a.createCounters(ids)
		}()
	}
	return c
}

func (c *countersAhead) wait() {
	if c.done == nil {
		c.a.createCounters(c.ids)
		c.made = true
		return
	}
	<-c.done
}

func (c *countersAhead) drop() {
	if !c.made {
		return
	}
	if c.done != nil {
		<-c.done
	}
	if err := maps.NewBindingStats(c.a.dp.Maps.BindingStats).Delete(c.ids); err != nil {
		c.a.log.Warn("failed publish: delete its traffic counters", "err", err)
	}
}

// syncBindingCounters keeps the counters of the mappings the records hold
// (across restarts and program swaps: the map is pinned) and drops the
// rest.
func (a *Agent) syncBindingCounters(bindings []maps.Binding) error {
	created, err := maps.NewBindingStats(a.dp.Maps.BindingStats).Sync(bindingIDs(bindings))
	if err != nil {
		a.log.Warn("some mappings have no traffic counters", "err", err)
	}
	if len(created) > 0 && a.countedLate == nil {
		a.countedLate = map[uint32]bool{}
	}
	for _, id := range created {
		a.countedLate[id] = true
	}
	return nil
}

// mayHaveFlows says whether a conntrack entry may name one of ids. The
// datapath makes a flow's entry for a packet it then counts (one whose
// rewrite fails aside: it is dropped, and its entry ages out), and a
// binding this agent publishes has its counters before it can carry a
// packet: counters that exist and are all zero mean no flow, and the
// unpublish skips its walk of the tables, which costs ~0.2 ms however
// few entries they hold. A packet in flight as the binding goes may
// still make an entry, as it may behind a walk. Only for a few ids, each
// being a lookup; counters made for a binding that was already there
// (countedLate) prove nothing.
func (a *Agent) mayHaveFlows(ids []uint32) bool {
	if len(ids) > checkFlowsUpTo {
		return true
	}
	stats := maps.NewBindingStats(a.dp.Maps.BindingStats)
	for _, id := range ids {
		c, ok := stats.Get(id)
		if a.countedLate[id] || !ok || c != (maps.BindingCounter{}) {
			return true
		}
	}
	return false
}

// checkFlowsUpTo: for more ids, their lookups would cost more than the
// walk.
const checkFlowsUpTo = 32
