package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// checkHost validates the protocol and host address of a port operation.
func checkHost(proto Proto, ip netip.Addr) error {
	switch {
	case !proto.valid():
		return fmt.Errorf("%w protocol %s: use tcp, udp or sctp", ErrInvalid, proto)
	case !ip.IsValid():
		return fmt.Errorf("%w host IP: missing; give an address, or 0.0.0.0 or :: for all of them", ErrInvalid)
	case ip.Zone() != "":
		return fmt.Errorf("%w host IP %s: has a zone; drop the %%%s", ErrInvalid, ip, ip.Zone())
	case ip.Is4In6():
		return fmt.Errorf("%w host IP %s: IPv4-mapped IPv6; write it as IPv4", ErrInvalid, ip)
	}
	return nil
}

// DynamicPorts is the range "any" port requests take ports from.
func (a *Allocator) DynamicPorts() PortRange { return a.dynamic }

// AllocatePorts takes the requested host ports for the owner, all or none.
func (a *Allocator) AllocatePorts(req PortRequest) (PortAllocation, error) {
	req.HostIP = req.HostIP.Unmap()
	dynamic := req.Ports.IsZero()
	n := req.Count
	if dynamic && n == 0 {
		n = 1
	}
	// Built only for messages: the success path must stay allocation-light.
	what := func() string {
		switch {
		case !dynamic:
			return req.Proto.String() + " " + hostPorts(req.HostIP, req.Ports)
		case n == 1:
			return fmt.Sprintf("a %s port on %s", req.Proto, req.HostIP)
		}
		return fmt.Sprintf("%d %s ports on %s", n, req.Proto, req.HostIP)
	}
	if err := checkHost(req.Proto, req.HostIP); err != nil {
		return PortAllocation{}, fmt.Errorf("allocate %s: %w", what(), err)
	}
	if err := validateID("owner", req.Owner); err != nil {
		return PortAllocation{}, fmt.Errorf("allocate %s: %w", what(), err)
	}
	switch {
	case n < 0 || (dynamic && n > a.dynamic.Len()):
		return PortAllocation{}, fmt.Errorf("allocate %s: %w count %d: the dynamic range %s holds %d ports", what(), ErrInvalid, n, a.dynamic, a.dynamic.Len())
	case !dynamic && n != 0 && n != req.Ports.Len():
		return PortAllocation{}, fmt.Errorf("allocate %s: %w count %d: the range holds %d ports; make them match", what(), ErrInvalid, n, req.Ports.Len())
	}
	if !dynamic {
		if err := req.Ports.validate(); err != nil {
			return PortAllocation{}, fmt.Errorf("allocate %s ports on %s: %w", req.Proto, req.HostIP, err)
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	var sockets hostSockets
	if a.checkListening {
		var err error
		if sockets, err = readHostSockets(a.procNet, req.Proto); err != nil {
			return PortAllocation{}, fmt.Errorf("allocate %s: check listening ports: %w", what(), err)
		}
	}
	pa := PortAllocation{Owner: req.Owner, Proto: req.Proto, HostIP: req.HostIP, Ports: req.Ports}
	if dynamic {
		first, ok := a.findPorts(req.Proto, req.HostIP, uint32(n), sockets)
		if !ok {
			return PortAllocation{}, fmt.Errorf("allocate %s: %w: no run of %d free ports left in the dynamic range %s; release some or widen the range", what(), ErrExhausted, n, a.dynamic)
		}
		pa.Ports = PortRange{first, first + uint16(n-1)}
	} else {
		if p, ok := a.ports.conflict(req.Proto, req.HostIP, req.Ports); ok {
			return PortAllocation{}, fmt.Errorf("allocate %s: %w: port %d is in %s; pick another host port or leave it out to get a free one", what(), ErrInUse, p, a.ports.holder(req.Proto, req.HostIP, p))
		}
		if p, l, ok := sockets.blocks(req.HostIP, uint32(req.Ports.First), uint32(req.Ports.Last)); ok {
			return PortAllocation{}, fmt.Errorf("allocate %s: %w: port %d is held by a host process on %s; stop it or pick another host port", what(), ErrInUse, p, l)
		}
	}

	k, v, ck, cv := portRecord(pa, dynamic)
	err := a.store.Update(func(tx Tx) error {
		if err := tx.Put(bucketPorts, k, v); err != nil {
			return err
		}
		if dynamic {
			return tx.Put(bucketPortCursors, ck, cv)
		}
		return nil
	})
	if err != nil {
		return PortAllocation{}, fmt.Errorf("allocate %s: %w", what(), err)
	}
	a.ports.take(pa, dynamic)
	return pa, nil
}

// findPorts returns the first of n free consecutive dynamic ports after the
// pool's cursor, wrapping around once.
func (a *Allocator) findPorts(proto Proto, ip netip.Addr, n uint32, sockets hostSockets) (uint16, bool) {
	own, other := a.ports.maps(proto, ip)
	lo, hi := uint32(a.dynamic.First), uint32(a.dynamic.Last)
	from := lo
	if p := a.ports.pools[poolKey{proto, ip}]; p != nil && uint32(p.cursor) >= lo && uint32(p.cursor) < hi {
		from = uint32(p.cursor) + 1
	}
	search := func(from, to uint32) (uint16, bool) {
		for {
			s, ok := clearRun(own, other, from, to, n)
			if !ok {
				return 0, false
			}
			p, _, blocked := sockets.blocks(ip, s, s+n-1)
			if !blocked {
				return uint16(s), true
			}
			from = uint32(p) + 1
		}
	}
	if p, ok := search(from, hi); ok {
		return p, true
	}
	if from > lo {
		return search(lo, hi)
	}
	return 0, false
}

// ReleasePorts frees exactly one allocation and returns it.
func (a *Allocator) ReleasePorts(proto Proto, hostIP netip.Addr, r PortRange) (PortAllocation, error) {
	hostIP = hostIP.Unmap()
	what := func() string { return proto.String() + " " + hostPorts(hostIP, r) }
	if err := checkHost(proto, hostIP); err != nil {
		return PortAllocation{}, fmt.Errorf("release %s: %w", what(), err)
	}
	if err := r.validate(); err != nil {
		return PortAllocation{}, fmt.Errorf("release %s %s: %w", proto, hostIP, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	id, al, ok := a.ports.lookup(proto, hostIP, r.First)
	if !ok {
		return PortAllocation{}, fmt.Errorf("release %s: %w: nothing is allocated there; list ports to see what is", what(), ErrNotFound)
	}
	if al.last != r.Last {
		return PortAllocation{}, fmt.Errorf("release %s: %w: the allocation there is %s; release it whole", what(), ErrNotFound, a.ports.allocation(id))
	}
	pa := a.ports.allocation(id)
	err := a.store.Update(func(tx Tx) error {
		return tx.Delete(bucketPorts, portKey(proto, hostIP, r.First))
	})
	if err != nil {
		return PortAllocation{}, fmt.Errorf("release %s: %w", what(), err)
	}
	a.ports.free(id)
	return pa, nil
}

// ReleaseOwnerPorts frees every port the owner holds and returns them.
func (a *Allocator) ReleaseOwnerPorts(owner string) ([]PortAllocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	held := a.ports.owners[owner]
	if len(held) == 0 {
		return nil, fmt.Errorf("release ports of %q: %w: the owner holds none", owner, ErrNotFound)
	}
	ids := slices.Clone(held)
	out := make([]PortAllocation, 0, len(held))
	for _, id := range ids {
		out = append(out, a.ports.allocation(id))
	}
	err := a.store.Update(func(tx Tx) error {
		for _, pa := range out {
			if err := tx.Delete(bucketPorts, portKey(pa.Proto, pa.HostIP, pa.Ports.First)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("release ports of %q: %w", owner, err)
	}
	for _, id := range ids {
		a.ports.free(id)
	}
	sortPorts(out)
	return out, nil
}

// Ports lists the owner's port allocations, or every one for "".
func (a *Allocator) Ports(owner string) []PortAllocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []PortAllocation
	if owner == "" {
		out = a.ports.all()
	} else {
		for _, id := range a.ports.owners[owner] {
			out = append(out, a.ports.allocation(id))
		}
	}
	sortPorts(out)
	return out
}

func sortPorts(s []PortAllocation) {
	slices.SortFunc(s, func(x, y PortAllocation) int {
		return cmp.Or(cmp.Compare(x.Proto, y.Proto), x.HostIP.Compare(y.HostIP), cmp.Compare(x.Ports.First, y.Ports.First))
	})
}
