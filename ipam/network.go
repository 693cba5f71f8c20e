package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// maxIDLen bounds network ids and owners; records store their length in a
// byte.
const maxIDLen = 255

// Subnet is one address block of a network.
type Subnet struct {
	// Prefix is the subnet in canonical form, such as 10.88.0.0/16.
	Prefix netip.Prefix
	// Gateway is the bridge's address, never handed out. Zero picks the
	// first address after the network address.
	Gateway netip.Addr
	// Range, when set, is where dynamic allocations come from (Docker's
	// --ip-range). Static requests may still name any host address of the
	// subnet.
	Range netip.Prefix
}

// Network is a named set of subnets, at most one allocation per family and
// owner.
type Network struct {
	ID      string
	Subnets []Subnet
}

// ParseSubnet reads a subnet, an optional gateway and an optional allocation
// range as a user types them, and checks them as AddNetwork would.
func ParseSubnet(prefix, gateway, ipRange string) (Subnet, error) {
	var s Subnet
	var err error
	if s.Prefix, err = netip.ParsePrefix(prefix); err != nil {
		return Subnet{}, fmt.Errorf("parse subnet %q: %w CIDR; write it as address/length, such as 10.88.0.0/16 or fd00:88::/64", prefix, ErrInvalid)
	}
	if gateway != "" {
		if s.Gateway, err = netip.ParseAddr(gateway); err != nil {
			return Subnet{}, fmt.Errorf("parse gateway %q: %w address; give one inside %s, such as %s", gateway, ErrInvalid, s.Prefix, s.Prefix.Masked().Addr().Next())
		}
	}
	if ipRange != "" {
		if s.Range, err = netip.ParsePrefix(ipRange); err != nil {
			return Subnet{}, fmt.Errorf("parse IP range %q: %w CIDR; give a prefix inside %s", ipRange, ErrInvalid, s.Prefix)
		}
	}
	return validateSubnet(s)
}

// validateSubnet checks s and fills in the default gateway.
func validateSubnet(s Subnet) (Subnet, error) {
	p := s.Prefix
	switch {
	case !p.IsValid():
		return Subnet{}, fmt.Errorf("%w subnet: missing or malformed; give one such as 10.88.0.0/16", ErrInvalid)
	case p.Addr().Zone() != "":
		return Subnet{}, fmt.Errorf("%w subnet %s: has a zone; drop the %%%s", ErrInvalid, p, p.Addr().Zone())
	case p.Addr().Is4In6():
		return Subnet{}, fmt.Errorf("%w subnet %s: IPv4-mapped IPv6; write it as IPv4", ErrInvalid, p)
	case p != p.Masked():
		return Subnet{}, fmt.Errorf("%w subnet %s: host bits are set; use %s", ErrInvalid, p, p.Masked())
	case p.Addr().Is4() && p.Bits() > 30:
		return Subnet{}, fmt.Errorf("%w subnet %s: too small, leaves no address for containers; use a /30 or larger", ErrInvalid, p)
	case p.Addr().Is6() && p.Bits() > 126:
		return Subnet{}, fmt.Errorf("%w subnet %s: too small, leaves no address for containers; use a /126 or larger", ErrInvalid, p)
	}
	network, last := p.Addr(), lastAddr(p)

	g := s.Gateway
	if !g.IsValid() {
		g = network.Next()
	}
	g = g.Unmap()
	switch {
	case g.Zone() != "":
		return Subnet{}, fmt.Errorf("%w gateway %s: has a zone; drop the %%%s", ErrInvalid, g, g.Zone())
	case !p.Contains(g):
		return Subnet{}, fmt.Errorf("%w gateway %s: outside subnet %s; pick an address inside it, such as %s", ErrInvalid, g, p, network.Next())
	case g == network:
		return Subnet{}, fmt.Errorf("%w gateway %s: it is the network address of %s; use %s", ErrInvalid, g, p, network.Next())
	case p.Addr().Is4() && g == last:
		return Subnet{}, fmt.Errorf("%w gateway %s: it is the broadcast address of %s; use %s", ErrInvalid, g, p, network.Next())
	}
	s.Gateway = g

	if r := s.Range; r != (netip.Prefix{}) {
		switch {
		case !r.IsValid():
			return Subnet{}, fmt.Errorf("%w IP range: malformed; give a prefix inside %s", ErrInvalid, p)
		case r.Addr().Zone() != "":
			return Subnet{}, fmt.Errorf("%w IP range %s: has a zone; drop the %%%s", ErrInvalid, r, r.Addr().Zone())
		case r != r.Masked():
			return Subnet{}, fmt.Errorf("%w IP range %s: host bits are set; use %s", ErrInvalid, r, r.Masked())
		case r.Addr().Is4() != p.Addr().Is4() || r.Bits() < p.Bits() || !p.Contains(r.Addr()):
			return Subnet{}, fmt.Errorf("%w IP range %s: outside subnet %s; give a prefix inside it", ErrInvalid, r, p)
		}
		first, last := window(s)
		if first.Compare(last) > 0 || (first == last && first == g) {
			return Subnet{}, fmt.Errorf("%w IP range %s: holds no address to hand out in %s besides the network, broadcast and gateway addresses; widen it", ErrInvalid, r, p)
		}
	}
	return s, nil
}

// hosts is the part of s a static request may name: all of it but the
// network address and, for IPv4, the broadcast address.
func hosts(s Subnet) (first, last netip.Addr) {
	first, last = s.Prefix.Addr().Next(), lastAddr(s.Prefix)
	if s.Prefix.Addr().Is4() {
		last = last.Prev()
	}
	return first, last
}

// window is the part of s dynamic allocations come from: the hosts, cut to
// the range when there is one.
func window(s Subnet) (first, last netip.Addr) {
	first, last = hosts(s)
	if !s.Range.IsValid() {
		return first, last
	}
	if a := s.Range.Addr(); a.Compare(first) > 0 {
		first = a
	}
	if a := lastAddr(s.Range); a.Compare(last) < 0 {
		last = a
	}
	return first, last
}

// validateNetwork checks n and normalises its subnets.
func validateNetwork(n Network) (Network, error) {
	if err := validateID("network id", n.ID); err != nil {
		return Network{}, err
	}
	if len(n.Subnets) == 0 {
		return Network{}, fmt.Errorf("%w network: no subnet; give at least one", ErrInvalid)
	}
	out := Network{ID: n.ID, Subnets: make([]Subnet, len(n.Subnets))}
	for i, s := range n.Subnets {
		v, err := validateSubnet(s)
		if err != nil {
			return Network{}, err
		}
		for _, prev := range out.Subnets[:i] {
			if prev.Prefix.Overlaps(v.Prefix) {
				return Network{}, fmt.Errorf("%w subnets %s and %s: they overlap; give disjoint subnets", ErrInvalid, prev.Prefix, v.Prefix)
			}
		}
		out.Subnets[i] = v
	}
	return out, nil
}

func validateID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w %s: empty; give a name", ErrInvalid, what)
	case len(id) > maxIDLen:
		return fmt.Errorf("%w %s: %d bytes long; keep it under %d", ErrInvalid, what, len(id), maxIDLen+1)
	}
	return nil
}

func equalNetwork(a, b Network) bool {
	return a.ID == b.ID && slices.Equal(a.Subnets, b.Subnets)
}
