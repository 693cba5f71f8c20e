package ipam

import (
	"fmt"
	"net/netip"
	"sync"
)

// Options configures an Allocator.
type Options struct {
	// DynamicPorts is where "any" port requests take ports from. Zero
	// picks DynamicPortRange for the kernel's ephemeral port settings, or
	// DefaultDynamicPorts when they cannot be read.
	DynamicPorts PortRange
	// CheckListening refuses ports a process in this network namespace
	// holds (TCP listeners, bound UDP sockets, SCTP endpoints): a
	// published port would shadow them.
	CheckListening bool
}

// Allocator hands out addresses and host ports. It is safe for concurrent
// use; operations are serialised, each one a single store transaction.
type Allocator struct {
	store          Store
	dynamic        PortRange
	checkListening bool
	procNet        string // where the listening check reads; tests point it at fixtures

	mu       sync.Mutex
	networks map[string]*network
	ports    portState
}

// network is the in-memory state of one network.
type network struct {
	cfg   Network
	pools []*subnetPool
	// owners maps an owner to its addresses, IPv4 before IPv6.
	owners map[string][]netip.Addr
}

// Open rebuilds the allocator's state from s. The caller keeps s and closes
// it after the allocator is no longer used.
func Open(s Store, opts Options) (*Allocator, error) {
	dyn := opts.DynamicPorts
	if dyn.IsZero() {
		dyn = DefaultDynamicPorts
		if eph, reserved, err := KernelPortRanges(); err == nil {
			dyn, _ = DynamicPortRange(eph, reserved)
		}
	} else if err := dyn.validate(); err != nil {
		return nil, fmt.Errorf("open ipam: dynamic ports: %w", err)
	}
	a := &Allocator{
		store:          s,
		dynamic:        dyn,
		checkListening: opts.CheckListening,
		procNet:        defaultProcNet,
		networks:       make(map[string]*network),
		ports:          newPortState(),
	}
	// An upgrade commits only with a load that accepts its result: a file
	// the allocator refuses is left as it was.
	err := s.Update(func(tx Tx) error {
		if err := upgradeSchema(tx); err != nil {
			return err
		}
		if err := a.load(tx); err != nil {
			return fmt.Errorf("read store: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open ipam: %w", err)
	}
	return a, nil
}

// load rebuilds the in-memory view; records that contradict each other
// fail the open rather than risk handing out an address twice.
func (a *Allocator) load(tx Tx) error {
	byPrefix := make(map[netip.Prefix]*subnetPool)
	err := tx.ForEach(bucketNetworks, func(k, v []byte) error {
		cfg, err := decodeNetwork(k, v)
		if err != nil {
			return err
		}
		if cfg, err = validateNetwork(cfg); err != nil {
			return fmt.Errorf("network %q: %w", k, err)
		}
		if err := a.checkOverlap(cfg); err != nil {
			return err
		}
		n := newNetwork(cfg)
		a.networks[cfg.ID] = n
		for _, p := range n.pools {
			byPrefix[p.Prefix] = p
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.ForEach(bucketIPCursors, func(k, v []byte) error {
		var pfx netip.Prefix
		c, ok := netip.AddrFromSlice(v)
		if pfx.UnmarshalBinary(k) != nil || !ok {
			return fmt.Errorf("address cursor %x=%x: malformed", k, v)
		}
		// A cursor outside its subnet is harmless: the search starts over.
		if p := byPrefix[pfx]; p != nil && pfx.Contains(c) {
			p.cursor = c
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.ForEach(bucketIPs, func(k, v []byte) error {
		addr, id, owner, err := decodeIP(k, v)
		if err != nil {
			return err
		}
		if err := validateID("owner", owner); err != nil {
			return fmt.Errorf("address %s: %w", addr, err)
		}
		n := a.networks[id]
		if n == nil {
			return fmt.Errorf("address %s of %q: network %q does not exist", addr, owner, id)
		}
		p := n.poolFor(addr)
		switch {
		case p == nil:
			return fmt.Errorf("address %s of %q: outside every subnet of network %q", addr, owner, id)
		case p.checkStatic(addr) != nil:
			return fmt.Errorf("address %s of %q: %w", addr, owner, p.checkStatic(addr))
		case n.held(owner, addr.Is4()).IsValid():
			return fmt.Errorf("address %s of %q: owner already holds %s in network %q", addr, owner, n.held(owner, addr.Is4()), id)
		}
		n.take(p, addr, owner)
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.ForEach(bucketPorts, func(k, v []byte) error {
		return decodePage(k, v, func(pa PortAllocation) error {
			if err := checkHost(pa.Proto, pa.HostIP); err != nil {
				return fmt.Errorf("port record %s: %w", pa, err)
			}
			if err := pa.Ports.validate(); err != nil {
				return fmt.Errorf("port record %s: %w", pa, err)
			}
			if err := validateID("owner", pa.Owner); err != nil {
				return fmt.Errorf("port record %s: %w", pa, err)
			}
			if p, ok := a.ports.conflict(pa.Proto, pa.HostIP, pa.Ports); ok {
				return fmt.Errorf("port record %s: overlaps %s", pa, a.ports.holder(pa.Proto, pa.HostIP, p))
			}
			a.ports.take(pa, false)
			return nil
		})
	})
	if err != nil {
		return err
	}
	return tx.ForEach(bucketPortCursors, func(k, v []byte) error {
		key, c, err := decodePortCursor(k, v)
		if err != nil {
			return err
		}
		a.ports.pool(key).cursor = c
		return nil
	})
}

func newNetwork(cfg Network) *network {
	n := &network{cfg: cfg, owners: make(map[string][]netip.Addr)}
	for _, s := range cfg.Subnets {
		n.pools = append(n.pools, newSubnetPool(s))
	}
	return n
}

// poolFor is the subnet holding a, or nil.
func (n *network) poolFor(a netip.Addr) *subnetPool {
	for _, p := range n.pools {
		if p.Prefix.Contains(a) {
			return p
		}
	}
	return nil
}

// held is the owner's address of one family, or the zero Addr.
func (n *network) held(owner string, is4 bool) netip.Addr {
	for _, a := range n.owners[owner] {
		if a.Is4() == is4 {
			return a
		}
	}
	return netip.Addr{}
}

func (n *network) take(p *subnetPool, a netip.Addr, owner string) {
	p.take(a, owner)
	held := append(n.owners[owner], a)
	// IPv4 first, so repeated requests answer in one order.
	if len(held) == 2 && held[0].Is6() {
		held[0], held[1] = held[1], held[0]
	}
	n.owners[owner] = held
}

// checkOverlap refuses a network whose subnets overlap another network's.
func (a *Allocator) checkOverlap(cfg Network) error {
	for _, other := range a.networks {
		if other.cfg.ID == cfg.ID {
			continue
		}
		for _, s := range cfg.Subnets {
			for _, o := range other.cfg.Subnets {
				if s.Prefix.Overlaps(o.Prefix) {
					return fmt.Errorf("subnet %s: %w by network %q (%s); pick a subnet outside it", s.Prefix, ErrInUse, other.cfg.ID, o.Prefix)
				}
			}
		}
	}
	return nil
}
