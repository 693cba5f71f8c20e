package ipam

import (
	"fmt"
	"net/netip"
)

// subnetPool is the in-memory allocation state of one subnet.
type subnetPool struct {
	Subnet
	hostFirst, hostLast netip.Addr // what a static request may name
	first, last         netip.Addr // where dynamic allocations come from
	used                addrSet    // allocated addresses and the gateway
	owners              map[netip.Addr]string
	// cursor is the last address handed out dynamically; the next search
	// starts after it so a released address comes back as late as possible.
	cursor netip.Addr
}

// newSubnetPool takes a validated subnet.
func newSubnetPool(s Subnet) *subnetPool {
	p := &subnetPool{Subnet: s, used: newAddrSet(s.Prefix), owners: make(map[netip.Addr]string)}
	p.hostFirst, p.hostLast = hosts(s)
	p.first, p.last = window(s)
	p.used.add(s.Gateway)
	for _, a := range s.Aux {
		p.used.add(a)
	}
	return p
}

// next returns the next free address after the cursor, wrapping around.
func (p *subnetPool) next() (netip.Addr, bool) {
	from := p.first
	if c := p.cursor; c.IsValid() && c.Compare(p.first) >= 0 && c.Compare(p.last) < 0 {
		from = c.Next()
	}
	if a, ok := p.used.nextFree(from, p.last); ok {
		return a, true
	}
	if from != p.first {
		return p.used.nextFree(p.first, from.Prev())
	}
	return netip.Addr{}, false
}

// checkStatic says why a, inside the subnet, cannot be handed out, or nil.
func (p *subnetPool) checkStatic(a netip.Addr) error {
	switch {
	case a == p.Prefix.Addr():
		return fmt.Errorf("%w: it is the network address of %s", ErrInvalid, p.Prefix)
	case a.Compare(p.hostLast) > 0:
		return fmt.Errorf("%w: it is the broadcast address of %s", ErrInvalid, p.Prefix)
	case a == p.Gateway:
		return fmt.Errorf("%w as the gateway of %s", ErrInUse, p.Prefix)
	}
	for name, aux := range p.Aux {
		if a == aux {
			return fmt.Errorf("%w: reserved as auxiliary address %s of %s", ErrInUse, name, p.Prefix)
		}
	}
	if owner, ok := p.owners[a]; ok {
		return fmt.Errorf("%w by %q", ErrInUse, owner)
	}
	return nil
}

func (p *subnetPool) take(a netip.Addr, owner string) {
	p.used.add(a)
	p.owners[a] = owner
}

func (p *subnetPool) free(a netip.Addr) {
	p.used.remove(a)
	delete(p.owners, a)
}

// describe names where dynamic allocations come from, for messages.
func (p *subnetPool) describe() string {
	if p.Range.IsValid() {
		return fmt.Sprintf("range %s of %s", p.Range, p.Prefix)
	}
	return p.Prefix.String()
}
