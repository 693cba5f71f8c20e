package ipam

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// IPRequest asks for addresses in one network.
type IPRequest struct {
	Network string
	// Owner is who holds the addresses, such as an endpoint id. Asking
	// again with the same owner returns what it already holds.
	Owner string
	// Static names wanted addresses, at most one per family. Families of
	// the network not named here get the next free address.
	Static []netip.Addr
	// Family, 4 or 6, limits the request to that family's subnets (an
	// engine asks for each family's address on its own); 0 is every
	// family the network has.
	Family int
}

func (r IPRequest) wants(is4 bool) bool {
	return r.Family == 0 || (r.Family == 4) == is4
}

// IPAllocation is one address held by an owner.
type IPAllocation struct {
	Network string
	Owner   string
	Addr    netip.Addr
}

// AddNetwork creates a network and returns it with defaults filled in.
// Adding the same network again is a no-op, so a retry after a crash is safe.
func (a *Allocator) AddNetwork(n Network) (Network, error) {
	cfg, err := validateNetwork(n)
	if err != nil {
		return Network{}, fmt.Errorf("add network %q: %w", n.ID, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if old := a.networks[cfg.ID]; old != nil {
		if equalNetwork(old.cfg, cfg) {
			return cloneNetwork(old.cfg), nil
		}
		return Network{}, fmt.Errorf("add network %q: %w with other subnets; remove it first or pick another id", cfg.ID, ErrInUse)
	}
	if err := a.checkOverlap(cfg); err != nil {
		return Network{}, fmt.Errorf("add network %q: %w", cfg.ID, err)
	}
	v, err := encodeNetwork(cfg)
	if err != nil {
		return Network{}, err
	}
	err = a.store.Update(func(tx Tx) error {
		return tx.Put(bucketNetworks, []byte(cfg.ID), v)
	})
	if err != nil {
		return Network{}, fmt.Errorf("add network %q: %w", cfg.ID, err)
	}
	a.networks[cfg.ID] = newNetwork(cfg)
	return cloneNetwork(cfg), nil
}

// RemoveNetwork deletes a network that holds no allocations.
func (a *Allocator) RemoveNetwork(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.networks[id]
	if n == nil {
		return fmt.Errorf("remove network %q: %w; list networks to see which exist", id, ErrNotFound)
	}
	if len(n.owners) > 0 {
		owners := slices.Sorted(maps.Keys(n.owners))
		return fmt.Errorf("remove network %q: %w: %d owners hold addresses in it (first %q); release them first", id, ErrInUse, len(owners), owners[0])
	}
	err := a.store.Update(func(tx Tx) error {
		for _, s := range n.cfg.Subnets {
			if err := tx.Delete(bucketIPCursors, ipCursorKey(s.Prefix)); err != nil {
				return err
			}
		}
		return tx.Delete(bucketNetworks, []byte(id))
	})
	if err != nil {
		return fmt.Errorf("remove network %q: %w", id, err)
	}
	delete(a.networks, id)
	return nil
}

// Network returns one network.
func (a *Allocator) Network(id string) (Network, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.networks[id]
	if n == nil {
		return Network{}, fmt.Errorf("network %q: %w; list networks to see which exist", id, ErrNotFound)
	}
	return cloneNetwork(n.cfg), nil
}

// Networks lists every network by id.
func (a *Allocator) Networks() []Network {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Network, 0, len(a.networks))
	for _, n := range a.networks {
		out = append(out, cloneNetwork(n.cfg))
	}
	slices.SortFunc(out, func(x, y Network) int { return cmp.Compare(x.ID, y.ID) })
	return out
}

// AllocateIPs gives the owner one address of each family the network has,
// IPv4 first, all in one transaction.
func (a *Allocator) AllocateIPs(req IPRequest) ([]netip.Addr, error) {
	if err := validateID("owner", req.Owner); err != nil {
		return nil, fmt.Errorf("allocate addresses in network %q: %w", req.Network, err)
	}
	if req.Family != 0 && req.Family != 4 && req.Family != 6 {
		return nil, fmt.Errorf("allocate addresses for %q in network %q: %w family %d: give 4, 6 or 0 for both", req.Owner, req.Network, ErrInvalid, req.Family)
	}
	for _, s := range req.Static {
		if s.IsValid() && !req.wants(s.Unmap().Is4()) {
			return nil, fmt.Errorf("allocate %s for %q in network %q: %w: not of the IPv%d family asked for", s, req.Owner, req.Network, ErrInvalid, req.Family)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.networks[req.Network]
	if n == nil {
		return nil, fmt.Errorf("allocate addresses for %q: network %q: %w; create it first", req.Owner, req.Network, ErrNotFound)
	}
	static, err := n.staticByFamily(req.Static)
	if err != nil {
		return nil, fmt.Errorf("allocate addresses for %q in network %q: %w", req.Owner, req.Network, err)
	}
	if held := n.owners[req.Owner]; held != nil {
		for _, s := range static {
			if h := n.held(req.Owner, s.Is4()); s.IsValid() && h != s {
				return nil, fmt.Errorf("allocate %s for %q in network %q: %w: the owner holds %s; release it first", s, req.Owner, req.Network, ErrInUse, h)
			}
		}
		return slices.Clone(held), nil
	}

	type pick struct {
		pool    *subnetPool
		addr    netip.Addr
		dynamic bool
	}
	var picks []pick
	for fam, s := range static {
		is4 := fam == 0
		if !n.hasFamily(is4) || !req.wants(is4) {
			continue
		}
		if s.IsValid() {
			p := n.poolFor(s)
			if err := p.checkStatic(s); err != nil {
				return nil, fmt.Errorf("allocate %s for %q in network %q: %w; pick another address or leave it out to get a free one", s, req.Owner, req.Network, err)
			}
			picks = append(picks, pick{p, s, false})
			continue
		}
		found := false
		for _, p := range n.pools {
			if p.Prefix.Addr().Is4() != is4 {
				continue
			}
			if addr, ok := p.next(); ok {
				picks = append(picks, pick{p, addr, true})
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("allocate %s address for %q in network %q: %w: every address in %s is taken; release some or add a subnet", familyName(is4), req.Owner, req.Network, ErrExhausted, n.describe(is4))
		}
	}

	err = a.store.Update(func(tx Tx) error {
		for _, p := range picks {
			if err := tx.Put(bucketIPs, p.addr.AsSlice(), ipValue(req.Network, req.Owner)); err != nil {
				return err
			}
			if p.dynamic {
				if err := tx.Put(bucketIPCursors, ipCursorKey(p.pool.Prefix), p.addr.AsSlice()); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("allocate addresses for %q in network %q: %w", req.Owner, req.Network, err)
	}
	for _, p := range picks {
		n.take(p.pool, p.addr, req.Owner)
		if p.dynamic {
			p.pool.cursor = p.addr
		}
	}
	return slices.Clone(n.owners[req.Owner]), nil
}

// ReleaseIPs frees every address the owner holds in the network and returns
// them.
func (a *Allocator) ReleaseIPs(networkID, owner string) ([]netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.networks[networkID]
	if n == nil {
		return nil, fmt.Errorf("release addresses of %q: network %q: %w; list networks to see which exist", owner, networkID, ErrNotFound)
	}
	held := n.owners[owner]
	if held == nil {
		return nil, fmt.Errorf("release addresses of %q in network %q: %w: the owner holds none there", owner, networkID, ErrNotFound)
	}
	err := a.store.Update(func(tx Tx) error {
		for _, addr := range held {
			if err := tx.Delete(bucketIPs, addr.AsSlice()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("release addresses of %q in network %q: %w", owner, networkID, err)
	}
	for _, addr := range held {
		n.poolFor(addr).free(addr)
	}
	delete(n.owners, owner)
	return held, nil
}

// IPs lists the addresses held in a network, in address order.
func (a *Allocator) IPs(networkID string) ([]IPAllocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.networks[networkID]
	if n == nil {
		return nil, fmt.Errorf("list addresses: network %q: %w; list networks to see which exist", networkID, ErrNotFound)
	}
	var out []IPAllocation
	for owner, held := range n.owners {
		for _, addr := range held {
			out = append(out, IPAllocation{Network: networkID, Owner: owner, Addr: addr})
		}
	}
	slices.SortFunc(out, func(x, y IPAllocation) int { return x.Addr.Compare(y.Addr) })
	return out, nil
}

// staticByFamily checks static addresses and returns them indexed by family
// (IPv4 at 0, IPv6 at 1; zero where none was asked for).
func (n *network) staticByFamily(static []netip.Addr) ([2]netip.Addr, error) {
	var out [2]netip.Addr
	for _, s := range static {
		s = s.Unmap()
		fam := 0
		if s.Is6() {
			fam = 1
		}
		switch {
		case !s.IsValid():
			return out, fmt.Errorf("%w static address: missing or malformed; give an address or leave it out", ErrInvalid)
		case s.Zone() != "":
			return out, fmt.Errorf("%w static address %s: has a zone; drop the %%%s", ErrInvalid, s, s.Zone())
		case out[fam].IsValid():
			return out, fmt.Errorf("%w static addresses %s and %s: both %s; give at most one per family", ErrInvalid, out[fam], s, familyName(fam == 0))
		case !n.hasFamily(fam == 0):
			return out, fmt.Errorf("%w static address %s: the network has no %s subnet; leave it out or add such a subnet", ErrInvalid, s, familyName(fam == 0))
		case n.poolFor(s) == nil:
			return out, fmt.Errorf("%w static address %s: outside every subnet of the network (%s); pick an address inside one", ErrInvalid, s, n.describe(s.Is4()))
		}
		out[fam] = s
	}
	return out, nil
}

func (n *network) hasFamily(is4 bool) bool {
	for _, p := range n.pools {
		if p.Prefix.Addr().Is4() == is4 {
			return true
		}
	}
	return false
}

// describe lists a family's subnets, for messages.
func (n *network) describe(is4 bool) string {
	var s string
	for _, p := range n.pools {
		if p.Prefix.Addr().Is4() != is4 {
			continue
		}
		if s != "" {
			s += ", "
		}
		s += p.describe()
	}
	return s
}

func familyName(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}

func cloneNetwork(n Network) Network {
	n.Subnets = slices.Clone(n.Subnets)
	for i := range n.Subnets {
		n.Subnets[i].Aux = maps.Clone(n.Subnets[i].Aux)
	}
	return n
}
