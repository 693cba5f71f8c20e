package ipam

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
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
	// Aux are addresses reserved by name (Docker's --aux-address), such
	// as a router or a host on the bridge: never handed out, neither
	// dynamically nor to a static request.
	Aux map[string]netip.Addr `json:",omitempty"`
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

	if len(s.Aux) > 0 {
		aux := make(map[string]netip.Addr, len(s.Aux))
		byAddr := make(map[netip.Addr]string, len(s.Aux))
		for _, name := range slices.Sorted(maps.Keys(s.Aux)) {
			a := s.Aux[name].Unmap()
			switch {
			case name == "" || strings.ContainsAny(name, "= \t\n"):
				return Subnet{}, fmt.Errorf("%w auxiliary address name %q: give a name without '=' or spaces, as name=IP", ErrInvalid, name)
			case !a.IsValid():
				return Subnet{}, fmt.Errorf("%w auxiliary address %s: missing or malformed; give name=IP with an address inside %s", ErrInvalid, name, p)
			case a.Zone() != "":
				return Subnet{}, fmt.Errorf("%w auxiliary address %s=%s: has a zone; drop the %%%s", ErrInvalid, name, a, a.Zone())
			case !p.Contains(a):
				return Subnet{}, fmt.Errorf("%w auxiliary address %s=%s: outside subnet %s; give an address inside it", ErrInvalid, name, a, p)
			case a == network:
				return Subnet{}, fmt.Errorf("%w auxiliary address %s=%s: it is the network address of %s; give a host address", ErrInvalid, name, a, p)
			case p.Addr().Is4() && a == last:
				return Subnet{}, fmt.Errorf("%w auxiliary address %s=%s: it is the broadcast address of %s; give a host address", ErrInvalid, name, a, p)
			case a == g:
				return Subnet{}, fmt.Errorf("%w auxiliary address %s=%s: it is the gateway of %s, reserved already; leave it out", ErrInvalid, name, a, p)
			}
			if other, ok := byAddr[a]; ok {
				return Subnet{}, fmt.Errorf("%w auxiliary addresses %s and %s: both are %s; give each its own address", ErrInvalid, other, name, a)
			}
			byAddr[a] = name
			aux[name] = a
		}
		s.Aux = aux
	} else {
		s.Aux = nil
	}

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
	return a.ID == b.ID && slices.EqualFunc(a.Subnets, b.Subnets, equalSubnet)
}

func equalSubnet(x, y Subnet) bool {
	return x.Prefix == y.Prefix && x.Gateway == y.Gateway && x.Range == y.Range && maps.Equal(x.Aux, y.Aux)
}

// NetworkOptions are Docker's `network create` IPAM flags as a user types
// them. Each gateway, range and auxiliary address belongs to the subnet
// that contains it, as in Docker; a subnet has at most one gateway and one
// range.
type NetworkOptions struct {
	Subnets  []string
	Gateways []string
	IPRanges []string
	// AuxAddresses are name=IP.
	AuxAddresses []string
}

// ParseNetwork reads NetworkOptions into a network checked as AddNetwork
// would check it.
func ParseNetwork(id string, o NetworkOptions) (Network, error) {
	if len(o.Subnets) == 0 {
		return Network{}, fmt.Errorf("%w network %s: no subnet; give --subnet", ErrInvalid, id)
	}
	n := Network{ID: id, Subnets: make([]Subnet, len(o.Subnets))}
	for i, sub := range o.Subnets {
		s, err := ParseSubnet(sub, "", "")
		if err != nil {
			return Network{}, err
		}
		n.Subnets[i] = Subnet{Prefix: s.Prefix}
	}
	// containing is the subnet a flag's address belongs to.
	containing := func(flag, value string, a netip.Addr) (*Subnet, error) {
		for i := range n.Subnets {
			if n.Subnets[i].Prefix.Contains(a) {
				return &n.Subnets[i], nil
			}
		}
		if len(n.Subnets) == 1 {
			return nil, fmt.Errorf("%w %s %s: outside subnet %s; give one inside it", ErrInvalid, flag, value, n.Subnets[0].Prefix)
		}
		return nil, fmt.Errorf("%w %s %s: outside every subnet (%s); give one inside a --subnet", ErrInvalid, flag, value, strings.Join(o.Subnets, ", "))
	}
	for _, v := range o.Gateways {
		g, err := netip.ParseAddr(v)
		if err != nil {
			return Network{}, fmt.Errorf("parse gateway %q: %w address; give one inside the subnet, such as %s", v, ErrInvalid, n.Subnets[0].Prefix.Addr().Next())
		}
		s, err := containing("gateway", v, g.Unmap())
		if err != nil {
			return Network{}, err
		}
		if s.Gateway.IsValid() {
			return Network{}, fmt.Errorf("%w gateways %s and %s: both in subnet %s; give one gateway per subnet", ErrInvalid, s.Gateway, v, s.Prefix)
		}
		s.Gateway = g.Unmap()
	}
	for _, v := range o.IPRanges {
		r, err := netip.ParsePrefix(v)
		if err != nil {
			return Network{}, fmt.Errorf("parse IP range %q: %w CIDR; give a prefix inside the subnet, such as %s/%d", v, ErrInvalid, n.Subnets[0].Prefix.Addr(), min(n.Subnets[0].Prefix.Bits()+1, n.Subnets[0].Prefix.Addr().BitLen()))
		}
		s, err := containing("IP range", v, r.Addr())
		if err != nil {
			return Network{}, err
		}
		if s.Range.IsValid() {
			return Network{}, fmt.Errorf("%w IP ranges %s and %s: both in subnet %s; give one range per subnet", ErrInvalid, s.Range, v, s.Prefix)
		}
		s.Range = r
	}
	for _, v := range o.AuxAddresses {
		name, addr, ok := strings.Cut(v, "=")
		a, err := netip.ParseAddr(addr)
		if !ok || name == "" || err != nil {
			return Network{}, fmt.Errorf("%w auxiliary address %q: write it as name=IP, such as router=%s", ErrInvalid, v, n.Subnets[0].Prefix.Addr().Next().Next())
		}
		s, err := containing("auxiliary address", v, a.Unmap())
		if err != nil {
			return Network{}, err
		}
		for i := range n.Subnets {
			if _, dup := n.Subnets[i].Aux[name]; dup {
				return Network{}, fmt.Errorf("%w auxiliary address name %s: given twice; give each address its own name", ErrInvalid, name)
			}
		}
		if s.Aux == nil {
			s.Aux = map[string]netip.Addr{}
		}
		s.Aux[name] = a.Unmap()
	}
	return validateNetwork(n)
}
