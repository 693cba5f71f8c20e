package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/maps"
)

// Conntrack pins of an older layout are upgraded rather than refused: the
// flows they hold are live connections, and refusing the pins would leave
// `pontoon cleanup` (which breaks them all) as the only way forward.
//
// The upgrade runs in two passes. At Load, each old table is copied into a
// new one of this build's layout, which takes the old one's pin (an atomic
// rename), so the programs loaded next see every flow. Until those
// programs are attached, the old ones still run on the old table: flows
// opened or promoted meanwhile are copied by FinishUpgrade, which the
// agent calls once it has attached everything.

// ctValueV1 is struct ct_value before it had created_ns (48 bytes).
type ctValueV1 struct {
	NatAddr    [16]byte
	NatPort    uint16
	Flags      uint8
	TCPFlags   uint8
	BindingID  uint32
	LastSeenNs uint64
	TCP        [2][8]byte
}

// ctValueV2 is this build's struct ct_value; upgradeCT checks its size
// against the object's, so a later change to the struct must come here.
type ctValueV2 struct {
	ctValueV1
	CreatedNs uint64
}

// ctAgeFromUpgrade is CT_F_AGE_FROM_UPGRADE: created_ns of an upgraded
// flow is its last packet before the upgrade (the old layout kept no start
// time), so its age is shown as a lower bound. That is never more than the
// truth, where "now" would make a flow younger than its idle time.
const ctAgeFromUpgrade = 1 << 2

func upgradeCTValue(old ctValueV1) ctValueV2 {
	old.Flags |= ctAgeFromUpgrade
	return ctValueV2{ctValueV1: old, CreatedNs: old.LastSeenNs}
}

// upgradableCT are the maps whose value is struct ct_value.
var upgradableCT = map[string]bool{"ct": true, "ct_new": true}

// ctUpgrade is a conntrack table moved to this build's layout: old is the
// table the programs still attached write to until they are swapped.
type ctUpgrade struct {
	name     string
	old, new *ebpf.Map
}

// canUpgradeCT says whether pinned can be upgraded to spec: a conntrack
// table of the same kind and key whose value is ct_value's old layout.
func canUpgradeCT(name string, spec *ebpf.MapSpec, pinned *ebpf.Map) bool {
	return upgradableCT[name] && pinned.Type() == spec.Type && pinned.KeySize() == spec.KeySize &&
		pinned.ValueSize() == uint32(binary.Size(ctValueV1{}))
}

// upgradeCT copies the flows of old, pinned at path, into a new table of
// spec's layout, pins that one in old's place and returns it.
func upgradeCT(name, path string, spec *ebpf.MapSpec, old *ebpf.Map) (*ebpf.Map, error) {
	if want := uint32(binary.Size(ctValueV2{})); spec.ValueSize != want {
		return nil, fmt.Errorf("upgrade %s: this build's ct_value is %d bytes, the upgrade knows %d: update loader/migrate.go", name, spec.ValueSize, want)
	}
	fresh, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create upgraded %s: %w", name, err)
	}
	if _, err := copyCT(old, fresh, ebpf.UpdateAny); err != nil {
		fresh.Close()
		return nil, fmt.Errorf("upgrade %s: %w", name, err)
	}
	return pinInPlace(name, path, fresh)
}

// pinInPlace pins fresh, an upgraded copy of the map pinned at path, in
// its place, and returns it opened from there. It takes fresh's handle.
func pinInPlace(name, path string, fresh *ebpf.Map) (*ebpf.Map, error) {
	// Pinned aside first, then renamed over the old pin: the path never
	// goes missing, so a crash here leaves one table or the other pinned.
	tmp := path + "_upgrading" // bpffs names may not contain dots
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		fresh.Close()
		return nil, fmt.Errorf("remove stale %s: %w", tmp, err)
	}
	err := fresh.Pin(tmp)
	fresh.Close()
	if err != nil {
		return nil, fmt.Errorf("pin upgraded %s: %w", name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("replace pin of %s with the upgraded table: %w", name, err)
	}
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return nil, fmt.Errorf("open upgraded %s: %w", path, err)
	}
	return m, nil
}

// copyCT writes every flow of old into fresh, upgraded, with flags
// (UpdateAny, or UpdateNoExist to keep what fresh has). It returns the
// keys it wrote.
func copyCT(old, fresh *ebpf.Map, flags ebpf.MapUpdateFlags) ([][]byte, error) {
	var (
		k       []byte
		v       ctValueV1
		written [][]byte
	)
	it := old.Iterate()
	for it.Next(&k, &v) {
		err := fresh.Update(k, upgradeCTValue(v), flags)
		switch {
		case err == nil:
			written = append(written, append([]byte(nil), k...))
		case errors.Is(err, ebpf.ErrKeyExist):
		default:
			return written, fmt.Errorf("copy flow: %w", err)
		}
	}
	if err := it.Err(); err != nil {
		return written, fmt.Errorf("read old table: %w", err)
	}
	return written, nil
}

// FinishUpgrade copies what the programs attached before Load wrote to
// the conntrack tables it upgraded, and lets the old tables go. Call it
// once every program is attached again: from then on nothing writes to
// the old tables. Flows the new programs already track keep their entry.
// A flow the old programs promoted meanwhile lands in ct and leaves the
// copy Load made of it in ct_new. It returns how many flows it added.
func (d *Datapath) FinishUpgrade() (int, error) {
	var (
		added int
		errs  []error
	)
	moved := map[string][][]byte{}
	for _, u := range d.upgrades {
		keys, err := copyCT(u.old, u.new, ebpf.UpdateNoExist)
		added += len(keys)
		moved[u.name] = keys
		if err != nil {
			errs = append(errs, fmt.Errorf("finish upgrade of %s: %w", u.name, err))
		}
	}
	if d.Maps.CTNew != nil {
		for _, k := range moved["ct"] {
			if err := d.Maps.CTNew.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("finish upgrade: drop promoted flow from ct_new: %w", err))
			}
		}
	}
	d.closeUpgrades()
	return added, errors.Join(errs...)
}

// Upgraded names the conntrack tables Load moved to this build's layout.
func (d *Datapath) Upgraded() []string {
	var names []string
	for _, u := range d.upgrades {
		names = append(names, u.name)
	}
	return names
}

func (d *Datapath) closeUpgrades() {
	for _, u := range d.upgrades {
		u.old.Close()
	}
	d.upgrades = nil
}

// allowKeyV1 is struct allow_key before it had a family (24 bytes): every
// prefix was IPv4, and prefixlen counted the binding id's 32 bits and the
// prefix's own.
type allowKeyV1 struct {
	Prefixlen uint32
	BindingID uint32
	Addr      [16]byte
}

// allowKeyV2 is this build's struct allow_key: the family and its pad add
// 32 bits before the address, which prefixlen counts too.
type allowKeyV2 struct {
	Prefixlen uint32
	BindingID uint32
	Family    uint8
	Pad       [3]uint8
	Addr      [16]byte
}

const afInet = 2

func upgradeAllowKey(old allowKeyV1) allowKeyV2 {
	return allowKeyV2{Prefixlen: old.Prefixlen + 32, BindingID: old.BindingID, Family: afInet, Addr: old.Addr}
}

// canUpgradeAllowFrom says whether pinned is allow_from of the layout
// before IPv6 prefixes. Only the agent writes that table, so a copy made
// at Load misses nothing; the programs still attached read the old one
// until they are swapped.
func canUpgradeAllowFrom(name string, spec *ebpf.MapSpec, pinned *ebpf.Map) bool {
	return name == "allow_from" && pinned.Type() == spec.Type &&
		pinned.KeySize() == uint32(binary.Size(allowKeyV1{})) && pinned.ValueSize() == spec.ValueSize
}

// upgradeAllowFrom copies old's prefixes, pinned at path, into a table of
// spec's layout pinned in old's place.
func upgradeAllowFrom(path string, spec *ebpf.MapSpec, old *ebpf.Map) (*ebpf.Map, error) {
	if want := uint32(binary.Size(allowKeyV2{})); spec.KeySize != want {
		return nil, fmt.Errorf("upgrade allow_from: this build's allow_key is %d bytes, the upgrade knows %d: update loader/migrate.go", spec.KeySize, want)
	}
	fresh, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create upgraded allow_from: %w", err)
	}
	var (
		k allowKeyV1
		v []byte
	)
	it := old.Iterate()
	for it.Next(&k, &v) {
		if err := fresh.Put(upgradeAllowKey(k), v); err != nil {
			fresh.Close()
			return nil, fmt.Errorf("upgrade allow_from: copy binding %d's prefix: %w", k.BindingID, err)
		}
	}
	if err := it.Err(); err != nil {
		fresh.Close()
		return nil, fmt.Errorf("upgrade allow_from: read the old table: %w", err)
	}
	return pinInPlace("allow_from", path, fresh)
}

// bindingCounterV1 is a value of binding_stats when it was a hash keyed by
// binding id, before it was an array of slots that name their binding.
type bindingCounterV1 struct {
	PacketsIn, BytesIn, PacketsOut, BytesOut uint64
}

// canUpgradeBindingStats says whether pinned is binding_stats of the
// layout before slots: a hash of counters keyed by binding id.
func canUpgradeBindingStats(name string, spec *ebpf.MapSpec, pinned *ebpf.Map) bool {
	return name == "binding_stats" && spec.Type == ebpf.Array && pinned.Type() == ebpf.Hash &&
		pinned.KeySize() == 4 && pinned.ValueSize() == uint32(binary.Size(bindingCounterV1{}))
}

// upgradeBindingStats copies each binding's counts from old, pinned at
// path, into its slot of a table of spec's layout pinned in old's place.
// Of ids that share a slot, one keeps its counts and the agent's sync
// settles the rest. Packets the programs still attached count in the old
// table until they are swapped are not copied: counters are for watching,
// and a fraction of a second of them is not worth a second pass.
func upgradeBindingStats(path string, spec *ebpf.MapSpec, old *ebpf.Map) (*ebpf.Map, error) {
	fresh, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create upgraded binding_stats: %w", err)
	}
	stats := maps.NewBindingStats(fresh)
	var (
		id uint32
		c  bindingCounterV1
	)
	it := old.Iterate()
	for it.Next(&id, &c) {
		if _, taken := stats.Get(id); taken {
			continue
		}
		if err := stats.Put(id, maps.BindingCounter(c)); err != nil {
			fresh.Close()
			return nil, fmt.Errorf("upgrade binding_stats: %w", err)
		}
	}
	if err := it.Err(); err != nil {
		fresh.Close()
		return nil, fmt.Errorf("upgrade binding_stats: read the old table: %w", err)
	}
	return pinInPlace("binding_stats", path, fresh)
}
