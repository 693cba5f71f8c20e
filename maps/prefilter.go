package maps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Word offsets in the prefilter map, as PREFILTER_* in bpf/lib/types.h.
const (
	prefilterTCPPorts = 0
	prefilterUDPPorts = 1024
	prefilterNets4    = 2048
	prefilterWords    = 3072
)

// ConfigPrefilter tells the datapath that the prefilter map is in step
// with the bindings and networks maps, so a clear bit may skip a lookup.
const ConfigPrefilter = 1 << 1

// PrefilterBits is the content of the prefilter map: which destination
// ports some binding uses (per protocol) and which IPv4 /16s some network
// overlaps. Extra bits only cost a lookup; a missing one hides a binding,
// so the bits are a superset of what the maps hold.
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

// Prefilter wraps the prefilter map (an array of uint64 words).
type Prefilter struct{ m *ebpf.Map }

func NewPrefilter(m *ebpf.Map) *Prefilter { return &Prefilter{m: m} }

// Read returns the map's words.
func (f *Prefilter) Read() (*PrefilterBits, error) {
	var bits PrefilterBits
	var cursor ebpf.MapBatchCursor
	keys := make([]uint32, prefilterWords)
	n, err := f.m.BatchLookup(&cursor, keys, bits[:], nil)
	if err == nil || (errors.Is(err, ebpf.ErrKeyNotExist) && n == prefilterWords) {
		return &bits, nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read prefilter: %w", err)
	}
	for i := range bits {
		if err := f.m.Lookup(uint32(i), &bits[i]); err != nil {
			return nil, fmt.Errorf("read prefilter word %d: %w", i, err)
		}
	}
	return &bits, nil
}

// Write makes the map hold exactly bits.
func (f *Prefilter) Write(bits *PrefilterBits) error {
	keys := make([]uint32, prefilterWords)
	for i := range keys {
		keys[i] = uint32(i)
	}
	return batchPut(f.m, keys, bits[:])
}

// Add sets bits in the map without clearing any: what a publish does
// before its bindings are written, so no packet sees a binding the filter
// hides.
func (f *Prefilter) Add(bits *PrefilterBits) error {
	// A publish of a port or a few sets a word or a few: reading those
	// alone beats reading all 3,072 (half a millisecond, most of a
	// one-port publish's map work).
	var words []int
	for i, w := range bits {
		if w != 0 {
			if words = append(words, i); len(words) > prefilterFewWords {
				break
			}
		}
	}
	if len(words) <= prefilterFewWords {
		var keys []uint32
		var values []uint64
		for _, i := range words {
			var cur uint64
			if err := f.m.Lookup(uint32(i), &cur); err != nil {
				return fmt.Errorf("read prefilter word %d: %w", i, err)
			}
			if cur|bits[i] != cur {
				keys = append(keys, uint32(i))
				values = append(values, cur|bits[i])
			}
		}
		return batchPut(f.m, keys, values)
	}
	cur, err := f.Read()
	if err != nil {
		return err
	}
	var keys []uint32
	var values []uint64
	for i := range cur {
		if cur[i]|bits[i] != cur[i] {
			keys = append(keys, uint32(i))
			values = append(values, cur[i]|bits[i])
		}
	}
	return batchPut(f.m, keys, values)
}
