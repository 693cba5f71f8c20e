package maps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// AllowFromKey mirrors struct allow_key: a binding id, the family, then
// the prefix.
type AllowFromKey struct {
	Prefixlen uint32 // 32 bits of binding id, 32 of family and pad, then the prefix's own bits
	BindingID uint32
	Family    uint8
	Pad       [3]uint8
	Addr      [16]byte
}

// AllowFromValue mirrors struct allow_value.
type AllowFromValue struct {
	Flags uint32
}

// allowKeyHeaderBits are the binding id, family and pad that precede the
// address.
const allowKeyHeaderBits = 64

func (k AllowFromKey) String() string {
	return fmt.Sprintf("binding %d from %s", k.BindingID, k.prefix())
}

func (k AllowFromKey) prefix() netip.Prefix {
	a := addrFromRaw(k.Family, k.Addr)
	return netip.PrefixFrom(a, int(k.Prefixlen)-allowKeyHeaderBits)
}

// AllowFrom wraps the allow_from LPM trie: the sources each binding with
// an allowlist accepts, IPv4 and IPv6 prefixes side by side.
type AllowFrom struct{ m *ebpf.Map }

func NewAllowFrom(m *ebpf.Map) *AllowFrom { return &AllowFrom{m: m} }

func allowKey(id uint32, p netip.Prefix) (AllowFromKey, error) {
	if !p.IsValid() || p.Addr().Is4In6() {
		return AllowFromKey{}, fmt.Errorf("allow-from %s: give a plain IPv4 or IPv6 prefix", p)
	}
	p = p.Masked()
	family, raw := rawAddr(p.Addr())
	return AllowFromKey{Prefixlen: uint32(allowKeyHeaderBits + p.Bits()), BindingID: id, Family: family, Addr: raw}, nil
}

// Put lets binding id accept sources in p.
func (a *AllowFrom) Put(id uint32, p netip.Prefix) error {
	k, err := allowKey(id, p)
	if err != nil {
		return err
	}
	if err := a.m.Put(k, AllowFromValue{}); err != nil {
		return fmt.Errorf("put %s: %w", k, err)
	}
	return nil
}

// All returns every binding's prefixes.
func (a *AllowFrom) All() (map[uint32][]netip.Prefix, error) {
	out := map[uint32][]netip.Prefix{}
	var (
		k AllowFromKey
		v AllowFromValue
	)
	it := a.m.Iterate()
	for it.Next(&k, &v) {
		out[k.BindingID] = append(out[k.BindingID], k.prefix())
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate allow_from: %w", err)
	}
	return out, nil
}

// Sync makes the map hold exactly want (binding id -> prefixes): missing
// entries are written, stale ones deleted after the walk.
func (a *AllowFrom) Sync(want map[uint32][]netip.Prefix) (added, removed int, err error) {
	wantKeys := map[AllowFromKey]bool{}
	for id, ps := range want {
		for _, p := range ps {
			k, err := allowKey(id, p)
			if err != nil {
				return 0, 0, err
			}
			wantKeys[k] = true
		}
	}
	var (
		stale []AllowFromKey
		k     AllowFromKey
		v     AllowFromValue
	)
	have := map[AllowFromKey]bool{}
	it := a.m.Iterate()
	for it.Next(&k, &v) {
		have[k] = true
		if !wantKeys[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, 0, fmt.Errorf("iterate allow_from: %w", err)
	}
	for k := range wantKeys {
		if have[k] {
			continue
		}
		if err := a.m.Put(k, AllowFromValue{}); err != nil {
			return added, removed, fmt.Errorf("put %s: %w", k, err)
		}
		added++
	}
	for _, k := range stale {
		if err := a.m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return added, removed, fmt.Errorf("delete %s: %w", k, err)
		}
		removed++
	}
	return added, removed, nil
}
