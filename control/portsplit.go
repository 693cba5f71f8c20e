package control

import (
	"errors"
	"fmt"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// mappingSplit is a mapping part of whose ports an unpublish names: the
// part that goes, and the parts either side of it that stay published.
type mappingSplit struct {
	old     *PortMapping
	removed PortMapping
	kept    []PortMapping
}

// splitOf returns how unpublishing spec splits m, or false when spec
// takes all of m. m's host and container ranges have the same length:
// both are cut at the same offsets.
func splitOf(m *PortMapping, spec PortSpec) (mappingSplit, bool) {
	lo, hi := 0, m.Container.Len()-1
	clip := func(first, last, base int) {
		lo, hi = max(lo, first-base), min(hi, last-base)
	}
	clip(int(spec.Container.First), int(spec.Container.Last), int(m.Container.First))
	if !spec.Host.IsZero() {
		clip(int(spec.Host.First), int(spec.Host.Last), int(m.Host.First))
	}
	if lo <= 0 && hi >= m.Container.Len()-1 {
		return mappingSplit{}, false
	}
	part := func(from, to int) PortMapping {
		p := *m
		p.group = 0 // a kept part is saved in a record of its own
		p.Host = ipam.PortRange{First: m.Host.First + uint16(from), Last: m.Host.First + uint16(to)}
		p.Container = ipam.PortRange{First: m.Container.First + uint16(from), Last: m.Container.First + uint16(to)}
		return p
	}
	s := mappingSplit{old: m, removed: part(lo, hi)}
	if lo > 0 {
		s.kept = append(s.kept, part(0, lo-1))
	}
	if hi < m.Container.Len()-1 {
		s.kept = append(s.kept, part(hi+1, m.Container.Len()-1))
	}
	return s, true
}

// unpublishPart removes the ports s.removed names and keeps the rest of
// s.old published as new mappings, with binding ids of their own so that
// removing one later flushes its flows alone. The kept ports' bindings are
// overwritten in place: their traffic never sees them missing.
func (a *Agent) unpublishPart(s mappingSplit) (*PortMapping, error) {
	m := s.old
	proto, err := ipam.ParseProto(m.Proto)
	if err != nil {
		return nil, err
	}
	ids, counted, nextID := a.st.newIDs(len(s.kept))
	// ipam frees whole allocations only: free the range, take the kept
	// parts again, and on failure take the whole range back.
	if _, err := a.ipam.ReleasePorts(proto, m.HostIP, m.Host); err != nil {
		return nil, fmt.Errorf("release %s ports %s to split them: %w", m.Proto, m.Host, err)
	}
	var taken []ipam.PortRange
	undoIPAM := func() error {
		var errs []error
		for _, r := range taken {
			if _, err := a.ipam.ReleasePorts(proto, m.HostIP, r); err != nil {
				errs = append(errs, err)
			}
		}
		if _, err := a.ipam.AllocatePorts(ipam.PortRequest{Owner: m.Endpoint, Proto: proto, HostIP: m.HostIP, Ports: m.Host}); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	for _, k := range s.kept {
		if _, err := a.ipam.AllocatePorts(ipam.PortRequest{Owner: m.Endpoint, Proto: proto, HostIP: m.HostIP, Ports: k.Host}); err != nil {
			return nil, withUndo(fmt.Errorf("keep %s ports %s published while unpublishing %s: %w; unpublish the whole range %s instead", m.Proto, k.Host, s.removed.Host, err, m.Host), undoIPAM())
		}
		taken = append(taken, k.Host)
	}

	kept := make([]*PortMapping, len(s.kept))
	var bindings []maps.Binding
	for i := range s.kept {
		k := s.kept[i]
		k.ID = ids[i]
		kept[i] = &k
		bs, err := mappingBindings(&k)
		if err != nil {
			return nil, withUndo(kindf(ErrInvalid, "%v", err), undoIPAM())
		}
		bindings = append(bindings, bs...)
	}
	err = a.store.Update(func(tx ipam.Tx) error {
		if err := a.st.deleteRecords(tx, []*PortMapping{m}); err != nil {
			return err
		}
		for _, k := range kept {
			if err := put(tx, bucketPorts, portKey(k), k); err != nil {
				return err
			}
		}
		return putNextID(tx, nextID)
	})
	if err != nil {
		return nil, withUndo(fmt.Errorf("save the split of %s ports %s: %w", m.Proto, m.Host, err), undoIPAM())
	}
	a.st.deletePort(m)
	a.portsGen++
	for _, k := range kept {
		a.st.putPort(k)
	}
	a.st.nextID = nextID

	removed, err := mappingBindings(&s.removed)
	if err != nil {
		return nil, err
	}
	keys := make([]maps.BindingKey, len(removed))
	for i, b := range removed {
		keys[i] = b.Key()
	}
	// Same keys as before, so the prefilter covers them already; the new
	// ids need their traffic counters before a packet can use them.
	a.createCounters(counted)
	if err := a.writer.PutBatch(bindings); err != nil {
		return nil, fmt.Errorf("rewrite the bindings of the ports kept: %w; restart the agent to reconcile the bindings map with the state", err)
	}
	if err := a.writer.DeleteBatch(keys); err != nil {
		return nil, fmt.Errorf("remove the bindings of %s ports %s: %w; restart the agent to reconcile the bindings map with the state", m.Proto, s.removed.Host, err)
	}
	if a.dp != nil {
		ct := maps.NewCT(a.dp.Maps.CT, a.dp.Maps.CTNew)
		if _, err := ct.DeleteBindingPorts(m.ID, s.removed.Host.First, s.removed.Host.Last); err != nil {
			a.log.Warn("flush conntrack of unpublished ports", "id", m.ID, "ports", s.removed.Host.String(), "err", err)
		}
		// The old id's slot is free for the next mapping to take.
		if err := maps.NewBindingStats(a.dp.Maps.BindingStats).Delete([]uint32{m.ID}); err != nil {
			a.log.Warn("delete traffic counters of a split mapping", "id", m.ID, "err", err)
		}
	}
	out := s.removed
	return &out, nil
}
