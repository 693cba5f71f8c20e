package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// portState is the in-memory view of host ports.
type portState struct {
	pools map[poolKey]*portPool
	byID  []*portPool // a pool's id indexes this
	// specific is, per protocol and family, every port some specific host
	// address holds, so a wildcard request checks one bitmap, not one per
	// address.
	specific map[famKey]*portUse
	// Owners are numbered, so that a page of allocations holds no
	// pointers (the garbage collector skips it; writing a slot needs no
	// write barrier) and is half the size. ownerTab[id] is the owner
	// numbered id, nil for a free number; 0 is never one, and marks an
	// empty slot.
	ownerIDs map[string]uint32
	ownerTab []*ownerEntry
	freeIDs  []uint32
	count    int // allocations held
	// gen counts pools and specific-address sets made: last is valid
	// while it is unchanged.
	gen  uint64
	last lastMaps
	// lastOwner caches the number of the owner that took ports last: a
	// batch takes thousands for one owner.
	lastOwner string
	lastID    uint32 // 0 when nothing is cached
}

// ownerEntry is an owner and its allocations.
type ownerEntry struct {
	name string
	held []allocID
}

// lastMaps is what maps found for one protocol and address.
type lastMaps struct {
	key        poolKey
	gen        uint64
	valid      bool
	pool       *portPool // nil when the address has none yet
	own, other *bitmap
}

// poolKey names the ports of one protocol on one host address.
type poolKey struct {
	proto Proto
	ip    netip.Addr
}

type portPool struct {
	key  poolKey
	id   uint32
	used *bitmap
	// cursor is the last port handed out dynamically; the next search
	// starts after it so a released port comes back as late as possible.
	cursor uint16
	// pages holds allocations by first port, 256 to a page made on first
	// use: a lookup is two indexings, no hashing, and an idle range of
	// ports costs no memory.
	pages [256]*[256]portAlloc
}

// at returns the allocation slot of first; the slot is empty when its owner
// is 0.
func (p *portPool) at(first uint16) *portAlloc {
	pg := p.pages[first>>8]
	if pg == nil {
		pg = new([256]portAlloc)
		p.pages[first>>8] = pg
	}
	return &pg[first&0xff]
}

// get is at without making a page.
func (p *portPool) get(first uint16) (portAlloc, bool) {
	pg := p.pages[first>>8]
	if pg == nil || pg[first&0xff].owner == 0 {
		return portAlloc{}, false
	}
	return pg[first&0xff], true
}

type famKey struct {
	proto Proto
	is6   bool
}

type portUse struct {
	used   *bitmap
	counts []uint32 // how many specific addresses hold each port
}

// allocID is a pool id shifted left 16 bits, or'ed with the first port.
type allocID uint64

func makeAllocID(pool *portPool, first uint16) allocID {
	return allocID(pool.id)<<16 | allocID(first)
}

type portAlloc struct {
	last  uint16
	pos   int32  // index in the owner's held
	owner uint32 // index in ownerTab
}

// noPorts stands in for a pool nobody has used; it is never written.
var noPorts = newBitmap(1 << 16)

func newPortState() portState {
	return portState{
		pools:    make(map[poolKey]*portPool),
		specific: make(map[famKey]*portUse),
		ownerIDs: make(map[string]uint32),
		ownerTab: []*ownerEntry{nil},
	}
}

func (s *portState) pool(k poolKey) *portPool {
	p := s.pools[k]
	if p == nil {
		p = &portPool{key: k, id: uint32(len(s.byID)), used: newBitmap(1 << 16)}
		s.pools[k] = p
		s.gen++
		s.byID = append(s.byID, p)
	}
	return p
}

// lookup finds the allocation starting at first on (proto, ip).
func (s *portState) lookup(proto Proto, ip netip.Addr, first uint16) (allocID, portAlloc, bool) {
	p := s.pools[poolKey{proto, ip}]
	if p == nil {
		return 0, portAlloc{}, false
	}
	a, ok := p.get(first)
	return makeAllocID(p, first), a, ok
}

// maps returns the bitmap of the request's own pool and the one it must
// also stay clear of: the wildcard pool for a specific address, the union
// of specific addresses for a wildcard. The answer, with the pool, stays
// in s.last for the next request of a batch: three map lookups a port were
// a third of a 65,535-port fill.
func (s *portState) maps(proto Proto, ip netip.Addr) (own, other *bitmap) {
	k := poolKey{proto, ip}
	if l := &s.last; l.valid && l.gen == s.gen && l.key == k {
		return l.own, l.other
	}
	own, other = noPorts, noPorts
	pool := s.pools[k]
	if pool != nil {
		own = pool.used
	}
	if ip.IsUnspecified() {
		if u := s.specific[famKey{proto, ip.Is6()}]; u != nil {
			other = u.used
		}
	} else if p := s.pools[poolKey{proto, unspecified(ip)}]; p != nil {
		other = p.used
	}
	s.last = lastMaps{key: k, gen: s.gen, valid: true, pool: pool, own: own, other: other}
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
	var pools []*portPool
	for _, k := range []poolKey{{proto, ip}, {proto, unspecified(ip)}} {
		if p := s.pools[k]; p != nil {
			pools = append(pools, p)
		}
	}
	if ip.IsUnspecified() {
		for k, p := range s.pools {
			if k.proto == proto && k.ip.Is6() == ip.Is6() && !k.ip.IsUnspecified() {
				pools = append(pools, p)
			}
		}
	}
	for _, p := range pools {
		if !p.used.has(uint32(port)) {
			continue
		}
		for first := int(port); first >= 1; first-- {
			if a, ok := p.get(uint16(first)); ok {
				if a.last >= port {
					return fmt.Sprintf("%s held by %q", s.allocation(makeAllocID(p, uint16(first))), s.ownerTab[a.owner].name)
				}
				break
			}
		}
	}
	return "another allocation"
}

func (s *portState) take(pa PortAllocation, dynamic bool) {
	s.takeIn(s.pool(poolKey{pa.Proto, pa.HostIP}), pa, dynamic)
}

// takeIn is take with pa's pool found already.
func (s *portState) takeIn(pool *portPool, pa PortAllocation, dynamic bool) {
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
			s.gen++
		}
		u.used.setRange(uint32(pa.Ports.First), uint32(pa.Ports.Last))
		for p := int(pa.Ports.First); p <= int(pa.Ports.Last); p++ {
			u.counts[p]++
		}
	}
	id := s.ownerID(pa.Owner)
	o := s.ownerTab[id]
	*pool.at(pa.Ports.First) = portAlloc{last: pa.Ports.Last, pos: int32(len(o.held)), owner: id}
	o.held = append(o.held, makeAllocID(pool, pa.Ports.First))
	s.count++
}

// takeDynamicRun takes up to n ports of pool one at a time for owner, as
// n one-port dynamic requests would: each the first port after the cursor
// (wrapping around dyn once) free in the pool and for the ports it must
// stay clear of, and not held by a host socket. It appends the allocations
// to out, marks their pages, and returns how many it took. A sweep finds
// what n searches would: the ports it passes stay taken or blocked.
func (s *portState) takeDynamicRun(pool *portPool, owner string, n int, dyn PortRange, sockets hostSockets, pages *dirtyPages, out *[]PortAllocation) int {
	own := pool.used
	_, other := s.maps(pool.key.proto, pool.key.ip)
	var use *portUse
	if !pool.key.ip.IsUnspecified() {
		use = s.specific[famKey{pool.key.proto, pool.key.ip.Is6()}]
	}
	id := s.ownerID(owner)
	o := s.ownerTab[id]
	lo, hi := uint32(dyn.First), uint32(dyn.Last)
	from := lo
	if c := uint32(pool.cursor); c >= lo && c < hi {
		from = c + 1
	}
	pa := PortAllocation{Owner: owner, Proto: pool.key.proto, HostIP: pool.key.ip}
	took := 0
	// The sweep: from the cursor to the end of the range, then from its
	// start up to where it began.
	for _, seg := range [2][2]uint32{{from, hi}, {lo, from - 1}} {
		for p := seg[0]; took < n && p <= seg[1]; p++ {
			var ok bool
			if p, ok = nextClear(own, other, p, seg[1]); !ok {
				break
			}
			if _, _, blocked := sockets.blocks(pool.key.ip, p, p); blocked {
				continue
			}
			port := uint16(p)
			own.set(p)
			if use != nil {
				use.used.set(p)
				use.counts[p]++
			}
			*pool.at(port) = portAlloc{last: port, pos: int32(len(o.held)), owner: id}
			o.held = append(o.held, makeAllocID(pool, port))
			pages.mark(pool, port)
			pa.Ports = Port(port)
			*out = append(*out, pa)
			pool.cursor = port
			took++
		}
	}
	s.count += took
	return took
}

// ownerID is the owner's number, given on first use.
func (s *portState) ownerID(owner string) uint32 {
	if s.lastID != 0 && s.lastOwner == owner {
		return s.lastID
	}
	id, ok := s.ownerIDs[owner]
	if !ok {
		if n := len(s.freeIDs); n > 0 {
			id, s.freeIDs = s.freeIDs[n-1], s.freeIDs[:n-1]
			s.ownerTab[id] = &ownerEntry{name: owner}
		} else {
			id = uint32(len(s.ownerTab))
			s.ownerTab = append(s.ownerTab, &ownerEntry{name: owner})
		}
		s.ownerIDs[owner] = id
	}
	s.lastOwner, s.lastID = owner, id
	return id
}

// held is the owner's allocations, nil when none; the caller must not
// change it.
func (s *portState) held(owner string) []allocID {
	if id, ok := s.ownerIDs[owner]; ok {
		return s.ownerTab[id].held
	}
	return nil
}

// growOwner makes room for n more allocations of owner, so a batch
// appends without copying the list again and again.
func (s *portState) growOwner(owner string, n int) {
	o := s.ownerTab[s.ownerID(owner)]
	o.held = slices.Grow(o.held, n)
}

func (s *portState) free(id allocID) {
	pool := s.byID[id>>16]
	first := uint16(id)
	slot := pool.at(first)
	a := *slot
	*slot = portAlloc{}
	s.count--
	// The pool stays, with its cursor, so next-fit keeps its place.
	pool.used.clearRange(uint32(first), uint32(a.last))
	if ip := pool.key.ip; !ip.IsUnspecified() {
		u := s.specific[famKey{pool.key.proto, ip.Is6()}]
		for p := int(first); p <= int(a.last); p++ {
			if u.counts[p]--; u.counts[p] == 0 {
				u.used.clear(uint32(p))
			}
		}
	}
	o := s.ownerTab[a.owner]
	if moved := o.held[len(o.held)-1]; moved != id {
		s.byID[moved>>16].at(uint16(moved)).pos = a.pos
		o.held[a.pos] = moved
	}
	if o.held = o.held[:len(o.held)-1]; len(o.held) == 0 {
		delete(s.ownerIDs, o.name)
		s.ownerTab[a.owner] = nil
		s.freeIDs = append(s.freeIDs, a.owner)
		if s.lastID == a.owner {
			s.lastID = 0
		}
	}
}

func (s *portState) allocation(id allocID) PortAllocation {
	pool := s.byID[id>>16]
	a, _ := pool.get(uint16(id))
	return PortAllocation{Owner: s.ownerTab[a.owner].name, Proto: pool.key.proto, HostIP: pool.key.ip, Ports: PortRange{uint16(id), a.last}}
}

// all lists every allocation, unsorted.
func (s *portState) all() []PortAllocation {
	out := make([]PortAllocation, 0, s.count)
	for _, p := range s.byID {
		for n, pg := range p.pages {
			if pg == nil {
				continue
			}
			for i := range pg {
				if a := pg[i]; a.owner != 0 {
					first := uint16(n<<8 | i)
					out = append(out, PortAllocation{Owner: s.ownerTab[a.owner].name, Proto: p.key.proto, HostIP: p.key.ip, Ports: PortRange{first, a.last}})
				}
			}
		}
	}
	return out
}

func unspecified(ip netip.Addr) netip.Addr {
	if ip.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
