package maps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// HostAddrs wraps the hostaddrs map: the host's own addresses, which the
// datapath needs to tell "to this host" from "through this host".
type HostAddrs struct{ m *ebpf.Map }

func NewHostAddrs(m *ebpf.Map) *HostAddrs { return &HostAddrs{m: m} }

func hostAddrKey(a netip.Addr) HostAddrKey {
	family, raw := rawAddr(a)
	return HostAddrKey{Family: family, Addr: raw}
}

// All returns every address with the interface index it was seen on.
func (h *HostAddrs) All() (map[netip.Addr]uint32, error) {
	out := map[netip.Addr]uint32{}
	var (
		k HostAddrKey
		v HostAddrValue
	)
	it := h.m.Iterate()
	for it.Next(&k, &v) {
		out[addrFromRaw(k.Family, k.Addr)] = v.Ifindex
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate host addresses: %w", err)
	}
	return out, nil
}

// Sync makes the map hold exactly want (address -> interface index).
func (h *HostAddrs) Sync(want map[netip.Addr]uint32) error {
	have, err := h.All()
	if err != nil {
		return err
	}
	var (
		keys   []HostAddrKey
		values []HostAddrValue
		stale  []HostAddrKey
	)
	for a, ifindex := range want {
		if cur, ok := have[a]; !ok || cur != ifindex {
			keys = append(keys, hostAddrKey(a))
			values = append(values, HostAddrValue{Ifindex: ifindex})
		}
	}
	for a := range have {
		if _, ok := want[a]; !ok {
			stale = append(stale, hostAddrKey(a))
		}
	}
	if err := batchPut(h.m, keys, values); err != nil {
		return err
	}
	return batchDelete(h.m, stale)
}

func (h *HostAddrs) Put(a netip.Addr, ifindex uint32) error {
	if err := h.m.Put(hostAddrKey(a), HostAddrValue{Ifindex: ifindex}); err != nil {
		return fmt.Errorf("add host address %s: %w", a, err)
	}
	return nil
}

// Lookup returns the interface index the address was seen on.
func (h *HostAddrs) Lookup(a netip.Addr) (uint32, bool) {
	var v HostAddrValue
	if err := h.m.Lookup(hostAddrKey(a), &v); err != nil {
		return 0, false
	}
	return v.Ifindex, true
}

// Has says whether a is one of the host's addresses; only a failure to
// read the map is an error.
func (h *HostAddrs) Has(a netip.Addr) (bool, error) {
	var v HostAddrValue
	err := h.m.Lookup(hostAddrKey(a), &v)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up host address %s: %w", a, err)
	}
	return true, nil
}

func (h *HostAddrs) Delete(a netip.Addr) error {
	return batchDelete(h.m, []HostAddrKey{hostAddrKey(a)})
}
