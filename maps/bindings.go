package maps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Binding is one published port as the control plane thinks of it.
type Binding struct {
	Proto Proto
	// Host is the address clients dial; the unspecified address (0.0.0.0)
	// binds every address of the host. Loopback hosts are reachable only
	// from the host itself.
	Host    netip.AddrPort
	Backend netip.AddrPort
	// ID ties conntrack entries and counters to the binding.
	ID uint32
	// Allowlist limits the binding to the sources the AllowFrom map
	// holds for its ID (port publish --allow-from).
	Allowlist bool
}

func (b Binding) String() string {
	return fmt.Sprintf("%s/%s -> %s (id %d)", b.Host, b.Proto, b.Backend, b.ID)
}

// Key is the map key a binding is stored under.
func (b Binding) Key() BindingKey {
	family, addr := rawAddr(b.Host.Addr())
	return BindingKey{Family: family, Proto: b.Proto, Port: netPort(b.Host.Port()), Addr: addr}
}

func (b Binding) value() BindingValue {
	_, backend := rawAddr(b.Backend.Addr())
	v := BindingValue{BackendAddr: backend, BackendPort: netPort(b.Backend.Port()), ID: b.ID}
	if b.Host.Addr().IsLoopback() {
		v.Flags |= bindingLocalOnly
	}
	if b.Allowlist {
		v.Flags |= bindingAllowlist
	}
	return v
}

func bindingFrom(k BindingKey, v BindingValue) Binding {
	return Binding{
		Proto:     k.Proto,
		Host:      netip.AddrPortFrom(addrFromRaw(k.Family, k.Addr), hostPort(k.Port)),
		Backend:   netip.AddrPortFrom(addrFromRaw(k.Family, v.BackendAddr), hostPort(v.BackendPort)),
		ID:        v.ID,
		Allowlist: v.Flags&bindingAllowlist != 0,
	}
}

// PortRange expands host ports first..last onto backend ports starting at
// backendFirst, the way "-p 10000-10999:20000-20999" maps them. Every port
// is its own entry, so the datapath's lookup stays one exact hash probe.
func PortRange(proto Proto, host netip.Addr, first, last uint16, backend netip.Addr, backendFirst uint16, id uint32) ([]Binding, error) {
	if first == 0 || last < first {
		return nil, fmt.Errorf("invalid host port range %d-%d: give first-last with 1 <= first <= last", first, last)
	}
	if int(backendFirst)+int(last-first) > 65535 {
		return nil, fmt.Errorf("backend ports %d-%d go past 65535: shorten the range", backendFirst, int(backendFirst)+int(last-first))
	}
	out := make([]Binding, 0, int(last-first)+1)
	for i := 0; i <= int(last-first); i++ {
		out = append(out, Binding{
			Proto:   proto,
			Host:    netip.AddrPortFrom(host, first+uint16(i)),
			Backend: netip.AddrPortFrom(backend, backendFirst+uint16(i)),
			ID:      id,
		})
	}
	return out, nil
}

// Bindings wraps the bindings map (HASH binding_key -> binding_value).
type Bindings struct{ m *ebpf.Map }

func NewBindings(m *ebpf.Map) *Bindings { return &Bindings{m: m} }

func (b *Bindings) Put(bd Binding) error {
	if err := b.m.Put(bd.Key(), bd.value()); err != nil {
		return fmt.Errorf("put binding %s: %w", bd, err)
	}
	return nil
}

// PutBatch writes all bindings with as few syscalls as the kernel allows.
func (b *Bindings) PutBatch(bs []Binding) error {
	keys := make([]BindingKey, len(bs))
	values := make([]BindingValue, len(bs))
	for i, bd := range bs {
		keys[i], values[i] = bd.Key(), bd.value()
	}
	return batchPut(b.m, keys, values)
}

func (b *Bindings) Lookup(proto Proto, host netip.AddrPort) (Binding, error) {
	key := Binding{Proto: proto, Host: host}.Key()
	var v BindingValue
	if err := b.m.Lookup(key, &v); err != nil {
		return Binding{}, fmt.Errorf("look up binding %s/%s: %w", host, proto, err)
	}
	return bindingFrom(key, v), nil
}

// Delete removes one binding; a missing one is not an error, so deletes
// can be retried.
func (b *Bindings) Delete(proto Proto, host netip.AddrPort) error {
	return b.DeleteBatch([]BindingKey{Binding{Proto: proto, Host: host}.Key()})
}

func (b *Bindings) DeleteBatch(keys []BindingKey) error {
	return batchDelete(b.m, keys)
}

// All returns every binding in the map, read in batches.
func (b *Bindings) All() ([]Binding, error) {
	var out []Binding
	if err := walk(b.m, func(k BindingKey, v BindingValue) { out = append(out, bindingFrom(k, v)) }); err != nil {
		return nil, fmt.Errorf("iterate bindings: %w", err)
	}
	return out, nil
}

// Sync makes the map hold exactly want: missing and changed entries are
// written, stale ones deleted. Keys are collected before anything is
// deleted, never while iterating.
func (b *Bindings) Sync(want []Binding) (added, removed int, err error) {
	d, err := b.Diff(want)
	if err != nil {
		return 0, 0, err
	}
	return b.Apply(d)
}

// BindingsDiff is what makes the map hold what Diff was given: entries to
// write (missing or changed) and keys to delete.
type BindingsDiff struct {
	Put   []Binding
	Stale []BindingKey
}

// Diff reads the map and compares it with want, changing nothing: a
// caller can read without its lock and apply with it.
func (b *Bindings) Diff(want []Binding) (BindingsDiff, error) {
	have, err := b.All()
	if err != nil {
		return BindingsDiff{}, err
	}
	wantByKey := make(map[BindingKey]Binding, len(want))
	for _, bd := range want {
		wantByKey[bd.Key()] = bd
	}
	var d BindingsDiff
	for _, bd := range have {
		k := bd.Key()
		w, ok := wantByKey[k]
		if !ok {
			d.Stale = append(d.Stale, k)
		} else if w.value() == bd.value() {
			delete(wantByKey, k)
		}
	}
	for _, bd := range wantByKey {
		d.Put = append(d.Put, bd)
	}
	return d, nil
}

// Apply writes and deletes what d says.
func (b *Bindings) Apply(d BindingsDiff) (added, removed int, err error) {
	if err := b.PutBatch(d.Put); err != nil {
		return 0, 0, err
	}
	if err := batchDelete(b.m, d.Stale); err != nil {
		return len(d.Put), 0, err
	}
	return len(d.Put), len(d.Stale), nil
}

// batchPut uses BPF_MAP_UPDATE_BATCH (kernel >= 5.6) and falls back to one
// update per entry where the map type or kernel lacks it.
func batchPut[K, V any](m *ebpf.Map, keys []K, values []V) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchUpdate(keys, values, nil)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("batch update %s (%d entries): %w", m, len(keys), err)
	}
	for i := range keys {
		if err := m.Put(keys[i], values[i]); err != nil {
			return fmt.Errorf("update %s: %w", m, err)
		}
	}
	return nil
}

// batchDelete deletes keys, ignoring those already gone.
func batchDelete[K any](m *ebpf.Map, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchDelete(keys, nil)
	if err == nil {
		return nil
	}
	// A batch stops at the first missing key; finish one by one.
	for i := range keys {
		if err := m.Delete(keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", m, err)
		}
	}
	return nil
}
