package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Word offsets in the prefilter_skip map, as PREFILTER_* in
// bpf/lib/types.h.
const (
	prefilterTCPPorts = 0
	prefilterUDPPorts = 1024
	prefilterNets4    = 2048
	prefilterWords    = 3072
)

// ConfigSNATInRange tells the datapath that every masqueraded flow's port
// lies in the configured range, so a packet to a port outside it is no
// masqueraded flow's reply.
// Bits 1 and 2 are retired (see bpf/lib/types.h).
const ConfigSNATInRange = 1 << 3

// PrefilterBits says which destination ports some binding uses (per
// protocol) and which IPv4 /16s some network overlaps. Extra bits only
// cost a lookup; a missing one hides a binding, so the bits are a superset
// of what the maps hold. The map stores their complement (a set bit: skip
// the lookup), so that the map as created, all zeros, hides nothing.
type PrefilterBits [prefilterWords]uint64

func (p *PrefilterBits) set(word, bit int) {
	p[word+bit/64] |= 1 << (bit % 64)
}

// AddBinding marks the binding's host port. Protocols the datapath does
// not prefilter need no bit.
func (p *PrefilterBits) AddBinding(b Binding) {
	switch b.Proto {
	case TCP:
		p.set(prefilterTCPPorts, int(b.Host.Port()))
	case UDP:
		p.set(prefilterUDPPorts, int(b.Host.Port()))
	}
}

// AddNetwork marks every /16 the subnet overlaps.
func (p *PrefilterBits) AddNetwork(subnet netip.Prefix) {
	if !subnet.Addr().Is4() {
		return
	}
	a := subnet.Masked().Addr().As4()
	first := int(a[0])<<8 | int(a[1])
	count := 1
	if subnet.Bits() < 16 {
		count = 1 << (16 - subnet.Bits())
	}
	for i := first; i < first+count; i++ {
		p.set(prefilterNets4, i)
	}
}

// Or adds every bit of other.
func (p *PrefilterBits) Or(other *PrefilterBits) {
	for i := range p {
		p[i] |= other[i]
	}
}

// prefilterFewWords is how many words Add looks up one by one before it
// reads the whole map in one batch instead.
const prefilterFewWords = 16

// bitmapMap is an array map of uint64 words that stores the complement of
// the "maybe" bits its callers deal in, read and written whole or by the
// words that change.
type bitmapMap struct{ m *ebpf.Map }

// read fills words with the map's "maybe" bits.
func (f bitmapMap) read(words []uint64) error {
	if err := f.readStored(words); err != nil {
		return err
	}
	for i := range words {
		words[i] = ^words[i]
	}
	return nil
}

// readStored fills words with the map's words as the datapath reads them.
func (f bitmapMap) readStored(words []uint64) error {
	var cursor ebpf.MapBatchCursor
	keys := make([]uint32, len(words))
	n, err := f.m.BatchLookup(&cursor, keys, words, nil)
	if err == nil || (errors.Is(err, ebpf.ErrKeyNotExist) && n == len(words)) {
		return nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("read %s: %w", f.m, err)
	}
	for i := range words {
		if err := f.m.Lookup(uint32(i), &words[i]); err != nil {
			return fmt.Errorf("read %s word %d: %w", f.m, i, err)
		}
	}
	return nil
}

// write makes the map hold exactly the "maybe" bits of words.
func (f bitmapMap) write(words []uint64) error {
	keys := make([]uint32, len(words))
	stored := make([]uint64, len(words))
	for i := range keys {
		keys[i] = uint32(i)
		stored[i] = ^words[i]
	}
	return batchPut(f.m, keys, stored)
}

// off makes every bit "maybe", as the map was created: every packet is
// looked up.
func (f bitmapMap) off(n int) error {
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	return batchPut(f.m, keys, make([]uint64, n))
}

// add sets the "maybe" bits of words in the map without clearing any:
// clears them in the words stored.
func (f bitmapMap) add(words []uint64) error {
	// A publish of a port or a few sets a word or a few: reading those
	// alone beats reading the whole map (half a millisecond for the
	// prefilter, most of a one-port publish's map work).
	var few []int
	for i, w := range words {
		if w != 0 {
			if few = append(few, i); len(few) > prefilterFewWords {
				break
			}
		}
	}
	var keys []uint32
	var values []uint64
	if len(few) <= prefilterFewWords {
		for _, i := range few {
			var cur uint64
			if err := f.m.Lookup(uint32(i), &cur); err != nil {
				return fmt.Errorf("read %s word %d: %w", f.m, i, err)
			}
			if cur&^words[i] != cur {
				keys = append(keys, uint32(i))
				values = append(values, cur&^words[i])
			}
		}
		return batchPut(f.m, keys, values)
	}
	cur := make([]uint64, len(words))
	if err := f.readStored(cur); err != nil {
		return err
	}
	for i := range cur {
		if cur[i]&^words[i] != cur[i] {
			keys = append(keys, uint32(i))
			values = append(values, cur[i]&^words[i])
		}
	}
	return batchPut(f.m, keys, values)
}

// Prefilter wraps the prefilter_skip map (an array of uint64 words).
type Prefilter struct{ bitmapMap }

func NewPrefilter(m *ebpf.Map) *Prefilter { return &Prefilter{bitmapMap{m}} }

// Read returns the bits the map holds the complement of.
func (f *Prefilter) Read() (*PrefilterBits, error) {
	var bits PrefilterBits
	if err := f.read(bits[:]); err != nil {
		return nil, err
	}
	return &bits, nil
}

// Write makes the map hold exactly bits.
func (f *Prefilter) Write(bits *PrefilterBits) error { return f.write(bits[:]) }

// Off makes every bit "maybe" (the map all zeros): the datapath looks
// every packet up.
func (f *Prefilter) Off() error { return f.off(prefilterWords) }

// Add sets bits in the map without clearing any: what a publish does
// before its bindings are written, so no packet sees a binding the filter
// hides.
func (f *Prefilter) Add(bits *PrefilterBits) error { return f.add(bits[:]) }

// Word offsets in the bfilter_skip map, as BFILTER_* in bpf/lib/types.h.
const (
	bfilterWildTCP     = 0
	bfilterWildUDP     = 1024
	bfilterExact4      = 2048
	bfilterExact4Shift = 44
	bfilterWords       = 2048 + 16384
	bfilterMultiplier  = 0x9E3779B97F4A7C15
)

// BindingFilterBits says which ports IPv4 wildcard bindings use (per
// protocol), with a bloom bit for each IPv4 binding on one address. As for
// PrefilterBits, a superset of the map, which the bfilter_skip map stores
// the complement of.
type BindingFilterBits [bfilterWords]uint64

func (p *BindingFilterBits) set(word, bit int) {
	p[word+bit/64] |= 1 << (bit % 64)
}

// bindingFilterBit4 is bfilter_bit4 of bpf/lib/maps.h: Fibonacci hashing
// of protocol, address and port.
func bindingFilterBit4(proto Proto, addr [4]byte, port uint16) int {
	key := uint64(binary.BigEndian.Uint32(addr[:]))<<32 | uint64(port)<<8 | uint64(proto)
	return int((key * bfilterMultiplier) >> bfilterExact4Shift)
}

// AddBinding marks an IPv4 binding: its port when it binds every address,
// else its bloom bit. IPv6 lookups do not read this map.
func (p *BindingFilterBits) AddBinding(b Binding) {
	addr := b.Host.Addr()
	if !addr.Is4() && !addr.Is4In6() {
		return
	}
	addr = addr.Unmap()
	if !addr.IsUnspecified() {
		p.set(bfilterExact4, bindingFilterBit4(b.Proto, addr.As4(), b.Host.Port()))
		return
	}
	switch b.Proto {
	case TCP:
		p.set(bfilterWildTCP, int(b.Host.Port()))
	case UDP:
		p.set(bfilterWildUDP, int(b.Host.Port()))
	}
}

// BindingFilter wraps the bfilter_skip map.
type BindingFilter struct{ bitmapMap }

func NewBindingFilter(m *ebpf.Map) *BindingFilter { return &BindingFilter{bitmapMap{m}} }

// Read returns the bits the map holds the complement of.
func (f *BindingFilter) Read() (*BindingFilterBits, error) {
	bits := new(BindingFilterBits)
	if err := f.read(bits[:]); err != nil {
		return nil, err
	}
	return bits, nil
}

// Write makes the map hold exactly bits.
func (f *BindingFilter) Write(bits *BindingFilterBits) error { return f.write(bits[:]) }

// Off makes every bit "maybe", as Prefilter.Off.
func (f *BindingFilter) Off() error { return f.off(bfilterWords) }

// Add sets bits in the map without clearing any, as Prefilter.Add.
func (f *BindingFilter) Add(bits *BindingFilterBits) error { return f.add(bits[:]) }
