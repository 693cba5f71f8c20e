package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

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
	CreatedNs  uint64
	// AgeFromUpgrade: CreatedNs is the last packet before an upgrade
	// from a build that kept no created time (CTAgeFromUpgrade).
	AgeFromUpgrade bool
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
		CreatedNs:  v.CreatedNs,

		AgeFromUpgrade: v.Flags&CTAgeFromUpgrade != 0,
	}
}

// CT wraps the conntrack tables: ct (HASH, answered flows) and ct_new
// (LRU_HASH, flows nobody answered yet), both ct_key -> ct_value. A flow is
// in one of them at a time.
type CT struct{ tables []*ebpf.Map }

// NewCT wraps the given tables; pass ct and ct_new to see every flow.
func NewCT(tables ...*ebpf.Map) *CT { return &CT{tables: tables} }

// All returns every tracked connection.
func (c *CT) All() ([]CTEntry, error) {
	var out []CTEntry
	for _, m := range c.tables {
		var (
			k CTKey
			v CTValue
		)
		it := m.Iterate()
		for it.Next(&k, &v) {
			out = append(out, ctEntryFrom(k, v))
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("iterate conntrack: %w", err)
		}
	}
	return out, nil
}

// DeleteBinding forgets the connections of one binding, so an unpublished
// port stops translating replies too. It returns how many went.
func (c *CT) DeleteBinding(id uint32) (int, error) {
	return c.deleteWhere(func(_ CTKey, v CTValue) bool { return v.BindingID == id })
}

// DeleteBindings is DeleteBinding for many ids in one walk of the tables.
func (c *CT) DeleteBindings(ids map[uint32]bool) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	return c.deleteWhere(func(_ CTKey, v CTValue) bool { return ids[v.BindingID] })
}

func (c *CT) deleteWhere(stale func(CTKey, CTValue) bool) (int, error) {
	total := 0
	for _, m := range c.tables {
		n, err := deleteWhere(m, stale)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// DeleteUntranslated forgets the connections that none of bindings would
// translate as their entries say: no binding of their protocol on the
// address and port the client dialled, or on every address, leads to
// their backend. A restart's reconcile runs it: the ids of bindings that
// went while no agent ran are lost with their records (an agent that died
// between an unpublish's record and its flush), and a binding id alone
// would not do anyway, since the parts a partial unpublish keeps carry
// their flows under the id of the mapping they were cut from.
func (c *CT) DeleteUntranslated(bindings []Binding) (int, error) {
	type route struct {
		proto         Proto
		host, backend netip.AddrPort
	}
	unmapped := func(ap netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	live := make(map[route]bool, len(bindings))
	for _, b := range bindings {
		live[route{b.Proto, unmapped(b.Host), unmapped(b.Backend)}] = true
	}
	return c.deleteWhere(func(k CTKey, v CTValue) bool {
		e := ctEntryFrom(k, v)
		dialled, backend := unmapped(e.Dialled), unmapped(e.Backend)
		every := netip.IPv4Unspecified()
		if dialled.Addr().Is6() {
			every = netip.IPv6Unspecified()
		}
		return !live[route{e.Proto, dialled, backend}] &&
			!live[route{e.Proto, netip.AddrPortFrom(every, dialled.Port()), backend}]
	})
}

// DeleteBindingPorts forgets the connections of one binding that were
// dialled on ports first-last: when part of a published range goes, the
// flows of the rest live on.
func (c *CT) DeleteBindingPorts(id uint32, first, last uint16) (int, error) {
	return c.deleteWhere(func(_ CTKey, v CTValue) bool {
		p := hostPort(v.NatPort)
		return v.BindingID == id && first <= p && p <= last
	})
}

// deleteWhere deletes the entries matching stale: keys are collected
// first and deleted after the walk, never while iterating.
func deleteWhere[K, V any](m *ebpf.Map, stale func(K, V) bool) (int, error) {
	var keys []K
	err := walk(m, func(k K, v V) {
		if stale(k, v) {
			keys = append(keys, k)
		}
	})
	if err != nil {
		return 0, err
	}
	if err := batchDelete(m, keys); err != nil {
		return 0, err
	}
	return len(keys), nil
}

// walkBatch is how many entries one batch lookup reads.
const walkBatch = 4096

// walkFirstBatch is the first batch lookup's size, for a table of a few.
const walkFirstBatch = 64

// walk calls fn for every entry of m, reading walkBatch entries per system
// call where the kernel can (a full ct of 131k entries: a tenth of the
// time of one call per entry), one at a time where it cannot.
func walk[K, V any](m *ebpf.Map, fn func(K, V)) error {
	// The first batch is small: an unpublish walks both conntrack tables,
	// and clearing two 4,096-entry buffers for a table of a few flows
	// was a third of a one-port unpublish. A full batch means more.
	keys, values := make([]K, walkFirstBatch), make([]V, walkFirstBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, values, nil)
		if errors.Is(err, syscall.ENOSPC) && len(keys) < walkBatch {
			// One hash bucket holds more than the batch: the kernel
			// read nothing and kept the cursor where it was.
			keys, values = make([]K, walkBatch), make([]V, walkBatch)
			continue
		}
		for i := range n {
			fn(keys[i], values[i])
		}
		if n == len(keys) && n < walkBatch {
			keys, values = make([]K, walkBatch), make([]V, walkBatch)
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case errors.Is(err, ebpf.ErrNotSupported) && n == 0:
			return walkOneByOne(m, fn)
		case err != nil:
			return fmt.Errorf("read %s: %w", m, err)
		}
	}
}

func walkOneByOne[K, V any](m *ebpf.Map, fn func(K, V)) error {
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(k, v)
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return fmt.Errorf("iterate %s: %w", m, err)
	}
	return nil
}
