package maps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// CTEntry is a translated connection, keyed by its reply direction.
type CTEntry struct {
	Proto   Proto
	Backend netip.AddrPort // the reply's source
	Client  netip.AddrPort // the reply's destination
	// Dialled is what the client sent to: replies leave with it as source.
	Dialled    netip.AddrPort
	BindingID  uint32
	TCPFlags   uint8
	LastSeenNs uint64
}

func ctEntryFrom(k CTKey, v CTValue) CTEntry {
	return CTEntry{
		Proto:      k.Proto,
		Backend:    netip.AddrPortFrom(addrFromRaw(k.Family, k.Saddr), hostPort(k.Sport)),
		Client:     netip.AddrPortFrom(addrFromRaw(k.Family, k.Daddr), hostPort(k.Dport)),
		Dialled:    netip.AddrPortFrom(addrFromRaw(k.Family, v.NatAddr), hostPort(v.NatPort)),
		BindingID:  v.BindingID,
		TCPFlags:   v.TCPFlags,
		LastSeenNs: v.LastSeenNs,
	}
}

// CT wraps the ct map (LRU_HASH ct_key -> ct_value).
type CT struct{ m *ebpf.Map }

func NewCT(m *ebpf.Map) *CT { return &CT{m: m} }

// All returns every tracked connection.
func (c *CT) All() ([]CTEntry, error) {
	var (
		out []CTEntry
		k   CTKey
		v   CTValue
	)
	it := c.m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, ctEntryFrom(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate conntrack: %w", err)
	}
	return out, nil
}

// DeleteBinding forgets the connections of one binding, so an unpublished
// port stops translating replies too. It returns how many went.
func (c *CT) DeleteBinding(id uint32) (int, error) {
	return deleteWhere(c.m, func(_ CTKey, v CTValue) bool { return v.BindingID == id })
}

// deleteWhere deletes the entries matching stale: keys are collected
// first and deleted after the walk, never while iterating.
func deleteWhere[K, V any](m *ebpf.Map, stale func(K, V) bool) (int, error) {
	var (
		keys []K
		k    K
		v    V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if stale(k, v) {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return 0, fmt.Errorf("iterate %s: %w", m, err)
	}
	if err := batchDelete(m, keys); err != nil {
		return 0, err
	}
	return len(keys), nil
}
