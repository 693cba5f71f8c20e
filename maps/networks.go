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
}

// Networks wraps the networks LPM trie (subnet -> network).
type Networks struct{ m *ebpf.Map }

func NewNetworks(m *ebpf.Map) *Networks { return &Networks{m: m} }

func networkKey(p netip.Prefix) NetworkKey {
	p = p.Masked()
	family, raw := rawAddr(p.Addr())
	return NetworkKey{Prefixlen: uint32(networkKeyHeaderBits + p.Bits()), Family: family, Addr: raw}
}

func (n *Networks) Put(nw Network) error {
	_, gw := rawAddr(nw.Gateway)
	v := NetworkValue{Gateway: gw, ID: nw.ID}
	if nw.Masquerade {
		v.Flags |= NetworkMasquerade
	}
	if nw.NoICC {
		v.Flags |= NetworkNoICC
	}
	if err := n.m.Put(networkKey(nw.Subnet), v); err != nil {
		return fmt.Errorf("put network %s: %w", nw.Subnet, err)
	}
	return nil
}

func (n *Networks) Delete(subnet netip.Prefix) error {
	return batchDelete(n.m, []NetworkKey{networkKey(subnet)})
}

// Uplinks wraps the uplinks map (ifindex -> masquerade address).
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

// Netns wraps the netns map: which network the containers of a network
// namespace (by cookie) belong to.
type Netns struct{ m *ebpf.Map }

func NewNetns(m *ebpf.Map) *Netns { return &Netns{m: m} }

func (n *Netns) Put(cookie uint64, networkID uint32) error {
	if err := n.m.Put(cookie, NetnsValue{NetworkID: networkID}); err != nil {
		return fmt.Errorf("put netns %d: %w", cookie, err)
	}
	return nil
}

func (n *Netns) Delete(cookie uint64) error {
	return batchDelete(n.m, []uint64{cookie})
}
