package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// portState is the in-memory view of host ports.
type portState struct {
	pools map[poolKey]*portPool
	// specific is, per protocol and family, every port some specific host
	// address holds, so a wildcard request checks one bitmap, not one per
	// address.
	specific map[famKey]*portUse
	allocs   map[allocKey]portAlloc
	owners   map[string]map[allocKey]struct{}
}

// poolKey names the ports of one protocol on one host address.
type poolKey struct {
	proto Proto
	ip    netip.Addr
}

type portPool struct {
	used *bitmap
	// cursor is the last port handed out dynamically; the next search
	// starts after it so a released port comes back as late as possible.
	cursor uint16
}

type famKey struct {
	proto Proto
	is6   bool
}

type portUse struct {
	used   *bitmap
	counts []uint32 // how many specific addresses hold each port
}

type allocKey struct {
	proto Proto
	ip    netip.Addr
	first uint16
}

type portAlloc struct {
	last  uint16
	owner string
}

// noPorts stands in for a pool nobody has used; it is never written.
var noPorts = newBitmap(1 << 16)

func newPortState() portState {
	return portState{
		pools:    make(map[poolKey]*portPool),
		specific: make(map[famKey]*portUse),
		allocs:   make(map[allocKey]portAlloc),
		owners:   make(map[string]map[allocKey]struct{}),
	}
}

func (s *portState) pool(k poolKey) *portPool {
	p := s.pools[k]
	if p == nil {
		p = &portPool{used: newBitmap(1 << 16)}
		s.pools[k] = p
	}
	return p
}

// maps returns the bitmap of the request's own pool and the one it must
// also stay clear of: the wildcard pool for a specific address, the union
// of specific addresses for a wildcard.
func (s *portState) maps(proto Proto, ip netip.Addr) (own, other *bitmap) {
	own, other = noPorts, noPorts
	if p := s.pools[poolKey{proto, ip}]; p != nil {
		own = p.used
	}
	if ip.IsUnspecified() {
		if u := s.specific[famKey{proto, ip.Is6()}]; u != nil {
			other = u.used
		}
	} else if p := s.pools[poolKey{proto, unspecified(ip)}]; p != nil {
		other = p.used
	}
	return own, other
}

// conflict returns the first port of r already taken for this request.
func (s *portState) conflict(proto Proto, ip netip.Addr, r PortRange) (uint16, bool) {
	own, other := s.maps(proto, ip)
	p, ok := nextSet(own, other, uint32(r.First), uint32(r.Last))
	return uint16(p), ok
}

// holder describes the allocation that keeps port from a request on ip.
// It searches, so it is for error messages only.
func (s *portState) holder(proto Proto, ip netip.Addr, port uint16) string {
	ips := []netip.Addr{ip, unspecified(ip)}
	if ip.IsUnspecified() {
		for k, p := range s.pools {
			if k.proto == proto && k.ip.Is6() == ip.Is6() && p.used.has(uint32(port)) {
				ips = append(ips, k.ip)
			}
		}
	}
	for _, hip := range ips {
		for first := int(port); first >= 1; first-- {
			if a, ok := s.allocs[allocKey{proto, hip, uint16(first)}]; ok {
				if a.last >= port {
					pa := PortAllocation{Owner: a.owner, Proto: proto, HostIP: hip, Ports: PortRange{uint16(first), a.last}}
					return fmt.Sprintf("%s held by %q", pa, a.owner)
				}
				break
			}
		}
	}
	return "another allocation"
}

func (s *portState) take(pa PortAllocation, dynamic bool) {
	pool := s.pool(poolKey{pa.Proto, pa.HostIP})
	pool.used.setRange(uint32(pa.Ports.First), uint32(pa.Ports.Last))
	if dynamic {
		pool.cursor = pa.Ports.Last
	}
	if !pa.HostIP.IsUnspecified() {
		fk := famKey{pa.Proto, pa.HostIP.Is6()}
		u := s.specific[fk]
		if u == nil {
			u = &portUse{used: newBitmap(1 << 16), counts: make([]uint32, 1<<16)}
			s.specific[fk] = u
		}
		u.used.setRange(uint32(pa.Ports.First), uint32(pa.Ports.Last))
		for p := int(pa.Ports.First); p <= int(pa.Ports.Last); p++ {
			u.counts[p]++
		}
	}
	k := allocKey{pa.Proto, pa.HostIP, pa.Ports.First}
	s.allocs[k] = portAlloc{last: pa.Ports.Last, owner: pa.Owner}
	held := s.owners[pa.Owner]
	if held == nil {
		held = make(map[allocKey]struct{})
		s.owners[pa.Owner] = held
	}
	held[k] = struct{}{}
}

func (s *portState) free(pa PortAllocation) {
	// The pool stays, with its cursor, so next-fit keeps its place.
	s.pools[poolKey{pa.Proto, pa.HostIP}].used.clearRange(uint32(pa.Ports.First), uint32(pa.Ports.Last))
	if !pa.HostIP.IsUnspecified() {
		u := s.specific[famKey{pa.Proto, pa.HostIP.Is6()}]
		for p := int(pa.Ports.First); p <= int(pa.Ports.Last); p++ {
			if u.counts[p]--; u.counts[p] == 0 {
				u.used.clear(uint32(p))
			}
		}
	}
	k := allocKey{pa.Proto, pa.HostIP, pa.Ports.First}
	delete(s.allocs, k)
	held := s.owners[pa.Owner]
	delete(held, k)
	if len(held) == 0 {
		delete(s.owners, pa.Owner)
	}
}

func (s *portState) allocation(k allocKey) PortAllocation {
	a := s.allocs[k]
	return PortAllocation{Owner: a.owner, Proto: k.proto, HostIP: k.ip, Ports: PortRange{k.first, a.last}}
}

func unspecified(ip netip.Addr) netip.Addr {
	if ip.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

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
	what := fmt.Sprintf("%s %s", req.Proto, hostPorts(req.HostIP, req.Ports))
	if dynamic {
		what = fmt.Sprintf("%d %s ports on %s", n, req.Proto, req.HostIP)
		if n == 1 {
			what = fmt.Sprintf("a %s port on %s", req.Proto, req.HostIP)
		}
	}
	if err := checkHost(req.Proto, req.HostIP); err != nil {
		return PortAllocation{}, fmt.Errorf("allocate %s: %w", what, err)
	}
	if err := validateID("owner", req.Owner); err != nil {
		return PortAllocation{}, fmt.Errorf("allocate %s: %w", what, err)
	}
	switch {
	case n < 0 || (dynamic && n > a.dynamic.Len()):
		return PortAllocation{}, fmt.Errorf("allocate %s: %w count %d: the dynamic range %s holds %d ports", what, ErrInvalid, n, a.dynamic, a.dynamic.Len())
	case !dynamic && n != 0 && n != req.Ports.Len():
		return PortAllocation{}, fmt.Errorf("allocate %s: %w count %d: the range holds %d ports; make them match", what, ErrInvalid, n, req.Ports.Len())
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
			return PortAllocation{}, fmt.Errorf("allocate %s: check listening ports: %w", what, err)
		}
	}
	pa := PortAllocation{Owner: req.Owner, Proto: req.Proto, HostIP: req.HostIP, Ports: req.Ports}
	if dynamic {
		first, ok := a.findPorts(req.Proto, req.HostIP, uint32(n), sockets)
		if !ok {
			return PortAllocation{}, fmt.Errorf("allocate %s: %w: no run of %d free ports left in the dynamic range %s; release some or widen the range", what, ErrExhausted, n, a.dynamic)
		}
		pa.Ports = PortRange{first, first + uint16(n-1)}
	} else {
		if p, ok := a.ports.conflict(req.Proto, req.HostIP, req.Ports); ok {
			return PortAllocation{}, fmt.Errorf("allocate %s: %w: port %d is in %s; pick another host port or leave it out to get a free one", what, ErrInUse, p, a.ports.holder(req.Proto, req.HostIP, p))
		}
		if p, l, ok := sockets.blocks(req.HostIP, uint32(req.Ports.First), uint32(req.Ports.Last)); ok {
			return PortAllocation{}, fmt.Errorf("allocate %s: %w: port %d is held by a host process on %s; stop it or pick another host port", what, ErrInUse, p, l)
		}
	}

	err := a.store.Update(func(tx Tx) error {
		if err := tx.Put(bucketPorts, portKey(pa.Proto, pa.HostIP, pa.Ports.First), portValue(pa.Ports.Last, pa.Owner)); err != nil {
			return err
		}
		if dynamic {
			return tx.Put(bucketPortCursors, portCursorKey(pa.Proto, pa.HostIP), portValue(pa.Ports.Last, ""))
		}
		return nil
	})
	if err != nil {
		return PortAllocation{}, fmt.Errorf("allocate %s: %w", what, err)
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
	what := fmt.Sprintf("%s %s", proto, hostPorts(hostIP, r))
	if err := checkHost(proto, hostIP); err != nil {
		return PortAllocation{}, fmt.Errorf("release %s: %w", what, err)
	}
	if err := r.validate(); err != nil {
		return PortAllocation{}, fmt.Errorf("release %s %s: %w", proto, hostIP, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := allocKey{proto, hostIP, r.First}
	al, ok := a.ports.allocs[k]
	if !ok {
		return PortAllocation{}, fmt.Errorf("release %s: %w: nothing is allocated there; list ports to see what is", what, ErrNotFound)
	}
	if al.last != r.Last {
		return PortAllocation{}, fmt.Errorf("release %s: %w: the allocation there is %s; release it whole", what, ErrNotFound, a.ports.allocation(k))
	}
	pa := a.ports.allocation(k)
	err := a.store.Update(func(tx Tx) error {
		return tx.Delete(bucketPorts, portKey(proto, hostIP, r.First))
	})
	if err != nil {
		return PortAllocation{}, fmt.Errorf("release %s: %w", what, err)
	}
	a.ports.free(pa)
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
	out := make([]PortAllocation, 0, len(held))
	for k := range held {
		out = append(out, a.ports.allocation(k))
	}
	sortPorts(out)
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
	for _, pa := range out {
		a.ports.free(pa)
	}
	return out, nil
}

// Ports lists the owner's port allocations, or every one for "".
func (a *Allocator) Ports(owner string) []PortAllocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []PortAllocation
	if owner == "" {
		out = make([]PortAllocation, 0, len(a.ports.allocs))
		for k := range a.ports.allocs {
			out = append(out, a.ports.allocation(k))
		}
	} else {
		for k := range a.ports.owners[owner] {
			out = append(out, a.ports.allocation(k))
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
