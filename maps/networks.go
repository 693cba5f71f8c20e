package maps

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// networkKeyHeaderBits is the family byte and padding that precede the
// address in an LPM key.
const networkKeyHeaderBits = 32

// Network is a Pontoon network as the datapath sees it.
type Network struct {
	Subnet     netip.Prefix
	Gateway    netip.Addr
	ID         uint32
	Masquerade bool
	// NoICC forbids containers of the network to talk to each other
	// directly (Docker's icc=false); published ports still work.
	NoICC bool
	// Routed lets the outside reach containers by their own addresses;
	// otherwise only published ports and replies get in.
	Routed bool
	// NAT66 translates a masquerading IPv6 subnet's traffic to the
	// uplink's IPv6 address; without it that traffic may not leave.
	NAT66 bool
}

// Networks wraps the networks LPM trie (subnet -> network).
type Networks struct{ m *ebpf.Map }

func NewNetworks(m *ebpf.Map) *Networks { return &Networks{m: m} }

func networkKey(p netip.Prefix) NetworkKey {
	p = p.Masked()
	family, raw := rawAddr(p.Addr())
	return NetworkKey{Prefixlen: uint32(networkKeyHeaderBits + p.Bits()), Family: family, Addr: raw}
}

func (nw Network) value() NetworkValue {
	_, gw := rawAddr(nw.Gateway)
	v := NetworkValue{Gateway: gw, ID: nw.ID}
	if nw.Masquerade {
		v.Flags |= NetworkMasquerade
	}
	if nw.NoICC {
		v.Flags |= NetworkNoICC
	}
	if nw.Routed {
		v.Flags |= NetworkRouted
	}
	if nw.NAT66 {
		v.Flags |= NetworkNAT66
	}
	return v
}

// Contains says whether a lies in one of the networks.
func (n *Networks) Contains(a netip.Addr) bool {
	var v NetworkValue
	return n.m.Lookup(networkKey(netip.PrefixFrom(a, a.BitLen())), &v) == nil
}

func (n *Networks) Put(nw Network) error {
	if err := n.m.Put(networkKey(nw.Subnet), nw.value()); err != nil {
		return fmt.Errorf("put network %s: %w", nw.Subnet, err)
	}
	return nil
}

func (n *Networks) Delete(subnet netip.Prefix) error {
	return batchDelete(n.m, []NetworkKey{networkKey(subnet)})
}

// Uplinks wraps the uplinks or uplinks6 map (ifindex -> masquerade address).
type Uplinks struct{ m *ebpf.Map }

func NewUplinks(m *ebpf.Map) *Uplinks { return &Uplinks{m: m} }

func (u *Uplinks) Put(ifindex uint32, addr netip.Addr) error {
	_, raw := rawAddr(addr)
	if err := u.m.Put(ifindex, UplinkValue{Addr: raw}); err != nil {
		return fmt.Errorf("put uplink %d: %w", ifindex, err)
	}
	return nil
}

func (u *Uplinks) Delete(ifindex uint32) error {
	return batchDelete(u.m, []uint32{ifindex})
}

// All6 returns every uplink's address of the uplinks6 map. The value has
// no family (the datapath knows it by the map), hence no All for uplinks.
func (u *Uplinks) All6() (map[uint32]netip.Addr, error) {
	out := map[uint32]netip.Addr{}
	var (
		k uint32
		v UplinkValue
	)
	it := u.m.Iterate()
	for it.Next(&k, &v) {
		out[k] = netip.AddrFrom16(v.Addr)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate uplinks6: %w", err)
	}
	return out, nil
}

// Endpoints wraps the endpoints map (container address -> its veth).
type Endpoints struct{ m *ebpf.Map }

func NewEndpoints(m *ebpf.Map) *Endpoints { return &Endpoints{m: m} }

func (e *Endpoints) Put(addr netip.Addr, hostIfindex, networkID uint32) error {
	family, raw := rawAddr(addr)
	if err := e.m.Put(EndpointKey{Family: family, Addr: raw}, EndpointValue{Ifindex: hostIfindex, NetworkID: networkID}); err != nil {
		return fmt.Errorf("put endpoint %s: %w", addr, err)
	}
	return nil
}

func (e *Endpoints) Delete(addr netip.Addr) error {
	family, raw := rawAddr(addr)
	return batchDelete(e.m, []EndpointKey{{Family: family, Addr: raw}})
}

// Netns wraps the netns map: the networks the containers of a network
// namespace (by cookie) are on, one entry per pair.
type Netns struct{ m *ebpf.Map }

func NewNetns(m *ebpf.Map) *Netns { return &Netns{m: m} }

func (n *Netns) Put(cookie uint64, networkID uint32) error {
	if err := n.m.Put(NetnsKey{Cookie: cookie, NetworkID: networkID}, NetnsValue{}); err != nil {
		return fmt.Errorf("put netns %d on network %d: %w", cookie, networkID, err)
	}
	return nil
}

func (n *Netns) Delete(cookie uint64, networkID uint32) error {
	return batchDelete(n.m, []NetnsKey{{Cookie: cookie, NetworkID: networkID}})
}

// syncMap makes m hold exactly want: entries missing or different are
// written, stale ones deleted once iteration is over.
func syncMap[K, V comparable](m *ebpf.Map, want map[K]V) error {
	var (
		k     K
		v     V
		stale []K
		have  = map[K]V{}
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", m, err)
	}
	for k, v := range want {
		if cur, ok := have[k]; ok && cur == v {
			continue
		}
		if err := m.Put(k, v); err != nil {
			return fmt.Errorf("update %s: %w", m, err)
		}
	}
	return batchDelete(m, stale)
}

// Sync makes the map hold exactly these networks.
func (n *Networks) Sync(want []Network) error {
	m := make(map[NetworkKey]NetworkValue, len(want))
	for _, nw := range want {
		m[networkKey(nw.Subnet)] = nw.value()
	}
	return syncMap(n.m, m)
}

// Sync makes the map hold exactly these endpoints.
func (e *Endpoints) Sync(want map[netip.Addr]EndpointValue) error {
	m := make(map[EndpointKey]EndpointValue, len(want))
	for addr, v := range want {
		family, raw := rawAddr(addr)
		m[EndpointKey{Family: family, Addr: raw}] = v
	}
	return syncMap(e.m, m)
}

// Sync makes the map hold exactly these namespaces (cookie -> the networks
// it is on).
func (n *Netns) Sync(want map[uint64][]uint32) error {
	m := make(map[NetnsKey]NetnsValue, len(want))
	for cookie, ids := range want {
		for _, id := range ids {
			m[NetnsKey{Cookie: cookie, NetworkID: id}] = NetnsValue{}
		}
	}
	return syncMap(n.m, m)
}

// Sync makes the map hold exactly these uplinks (ifindex -> address).
func (u *Uplinks) Sync(want map[uint32]netip.Addr) error {
	m := make(map[uint32]UplinkValue, len(want))
	for ifindex, addr := range want {
		_, raw := rawAddr(addr)
		m[ifindex] = UplinkValue{Addr: raw}
	}
	return syncMap(u.m, m)
}
