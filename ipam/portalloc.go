package ipam

import (
	"cmp"
	"errors"
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
	pas, err := a.AllocatePortsBatch([]PortRequest{req}, nil)
	if err != nil {
		var be *BatchError
		if errors.As(err, &be) {
			return PortAllocation{}, be.Err
		}
		return PortAllocation{}, err
	}
	return pas[0], nil
}

// checkedRequest is a request that passed checkRequest: HostIP unmapped,
// n the number of ports it takes.
type checkedRequest struct {
	PortRequest
	dynamic bool
	n       int
}

// what names the request in messages; the success path never builds it.
func (r checkedRequest) what() string {
	switch {
	case !r.dynamic:
		return r.Proto.String() + " " + hostPorts(r.HostIP, r.Ports)
	case r.n == 1:
		return fmt.Sprintf("a %s port on %s", r.Proto, r.HostIP)
	}
	return fmt.Sprintf("%d %s ports on %s", r.n, r.Proto, r.HostIP)
}

// checkRequest validates what needs no state.
func (a *Allocator) checkRequest(req PortRequest) (checkedRequest, error) {
	req.HostIP = req.HostIP.Unmap()
	r := checkedRequest{PortRequest: req, dynamic: req.Ports.IsZero(), n: req.Count}
	if r.dynamic && r.n == 0 {
		r.n = 1
	}
	if err := checkHost(req.Proto, req.HostIP); err != nil {
		return r, fmt.Errorf("allocate %s: %w", r.what(), err)
	}
	if err := validateID("owner", req.Owner); err != nil {
		return r, fmt.Errorf("allocate %s: %w", r.what(), err)
	}
	switch {
	case r.n < 0 || (r.dynamic && r.n > a.dynamic.Len()):
		return r, fmt.Errorf("allocate %s: %w count %d: the dynamic range %s holds %d ports", r.what(), ErrInvalid, r.n, a.dynamic, a.dynamic.Len())
	case r.FirstFree && r.dynamic:
		return r, fmt.Errorf("allocate %s: %w: first-free needs a host port range to search", r.what(), ErrInvalid)
	case r.FirstFree && r.n > 1:
		return r, fmt.Errorf("allocate %s: %w count %d: first-free takes one port of the range", r.what(), ErrInvalid, r.n)
	case !r.dynamic && !r.FirstFree && r.n != 0 && r.n != req.Ports.Len():
		return r, fmt.Errorf("allocate %s: %w count %d: the range holds %d ports; make them match", r.what(), ErrInvalid, r.n, req.Ports.Len())
	}
	if !r.dynamic {
		if err := req.Ports.validate(); err != nil {
			return r, fmt.Errorf("allocate %s ports on %s: %w", req.Proto, req.HostIP, err)
		}
	}
	return r, nil
}

// pick chooses the ports of one checked request against the held ports
// and the host's sockets of its protocol, taking nothing. a.mu is held.
func (a *Allocator) pick(r checkedRequest, sockets hostSockets) (PortAllocation, error) {
	pa := PortAllocation{Owner: r.Owner, Proto: r.Proto, HostIP: r.HostIP, Ports: r.Ports}
	switch {
	case r.dynamic:
		first, ok := a.findPorts(r.Proto, r.HostIP, uint32(r.n), sockets)
		if !ok {
			return PortAllocation{}, fmt.Errorf("allocate %s: %w: no run of %d free ports left in the dynamic range %s; release some or widen the range", r.what(), ErrExhausted, r.n, a.dynamic)
		}
		pa.Ports = PortRange{first, first + uint16(r.n-1)}
	case r.FirstFree:
		var lastErr error
		for p := int(r.Ports.First); p <= int(r.Ports.Last); p++ {
			if lastErr = a.checkFree(r, Port(uint16(p)), sockets); lastErr == nil {
				pa.Ports = Port(uint16(p))
				return pa, nil
			}
		}
		return PortAllocation{}, fmt.Errorf("every port of %s is taken (last: %w)", r.Ports, lastErr)
	default:
		if err := a.checkFree(r, r.Ports, sockets); err != nil {
			return PortAllocation{}, err
		}
	}
	return pa, nil
}

// checkFree refuses ports another allocation or a host socket holds.
func (a *Allocator) checkFree(r checkedRequest, ports PortRange, sockets hostSockets) error {
	if p, ok := a.ports.conflict(r.Proto, r.HostIP, ports); ok {
		return fmt.Errorf("allocate %s: %w: port %d is in %s; pick another host port or leave it out to get a free one", r.Proto.String()+" "+hostPorts(r.HostIP, ports), ErrInUse, p, a.ports.holder(r.Proto, r.HostIP, p))
	}
	if p, l, ok := sockets.blocks(r.HostIP, uint32(ports.First), uint32(ports.Last)); ok {
		return fmt.Errorf("allocate %s: %w: port %d is held by a host process on %s; stop it or pick another host port", r.Proto.String()+" "+hostPorts(r.HostIP, ports), ErrInUse, p, l)
	}
	return nil
}

// findPorts returns the first of n free consecutive dynamic ports after the
// pool's cursor, wrapping around once.
func (a *Allocator) findPorts(proto Proto, ip netip.Addr, n uint32, sockets hostSockets) (uint16, bool) {
	own, other := a.ports.maps(proto, ip) // sets a.ports.last.pool
	lo, hi := uint32(a.dynamic.First), uint32(a.dynamic.Last)
	from := lo
	if p := a.ports.last.pool; p != nil && uint32(p.cursor) >= lo && uint32(p.cursor) < hi {
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
		var d dirtyPages
		d.markID(&a.ports, id)
		return d.write(tx, &a.ports, func(x allocID, _ string) bool { return x == id })
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
	held := a.ports.held(owner)
	if len(held) == 0 {
		return nil, fmt.Errorf("release ports of %q: %w: the owner holds none", owner, ErrNotFound)
	}
	ids := slices.Clone(held)
	out := make([]PortAllocation, 0, len(held))
	for _, id := range ids {
		out = append(out, a.ports.allocation(id))
	}
	var d dirtyPages
	for _, id := range ids {
		d.markID(&a.ports, id)
	}
	err := a.store.Update(func(tx Tx) error {
		return d.write(tx, &a.ports, func(_ allocID, o string) bool { return o == owner })
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
		for _, id := range a.ports.held(owner) {
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
