package maps

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// newWordMap makes an array of words uint64s, as the filter maps are.
func newWordMap(t *testing.T, words int) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: uint32(words)})
	if err != nil {
		t.Skipf("needs root (CAP_BPF) to create BPF maps: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestPrefilterStoresSkipBits: the map holds the complement of the bits
// the agent deals in, as bpf/lib/maps.h reads it. A map as created hides
// nothing, Write and Add clear the words' bits for what may be there, and
// Off hides nothing again.
func TestPrefilterStoresSkipBits(t *testing.T) {
	m := newWordMap(t, prefilterWords)
	f := NewPrefilter(m)
	// TCP port 80 is bit 16 of word 1, port 81 bit 17.
	stored := func() uint64 {
		t.Helper()
		var w uint64
		if err := m.Lookup(uint32(prefilterTCPPorts+1), &w); err != nil {
			t.Fatal(err)
		}
		return w
	}
	bit := func(port uint16) uint64 { return 1 << (port % 64) }

	fresh, err := f.Read()
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range fresh {
		if w != ^uint64(0) {
			t.Fatalf("a new map reads word %d as %#x: it must hide nothing", i, w)
		}
	}

	var bits PrefilterBits
	bits.AddBinding(Binding{Proto: TCP, Host: netip.MustParseAddrPort("0.0.0.0:80")})
	if err := f.Write(&bits); err != nil {
		t.Fatal(err)
	}
	if w := stored(); w != ^bit(80) {
		t.Fatalf("after Write of port 80 the word is %#x, want only its bit clear (%#x)", w, ^bit(80))
	}
	if got, err := f.Read(); err != nil || *got != bits {
		t.Fatalf("Read after Write does not give the bits written (err %v)", err)
	}

	var more PrefilterBits
	more.AddBinding(Binding{Proto: TCP, Host: netip.MustParseAddrPort("0.0.0.0:81")})
	if err := f.Add(&more); err != nil {
		t.Fatal(err)
	}
	if w := stored(); w != ^(bit(80) | bit(81)) {
		t.Fatalf("after Add of port 81 the word is %#x, want ports 80 and 81 clear", w)
	}

	if err := f.Off(); err != nil {
		t.Fatal(err)
	}
	if w := stored(); w != 0 {
		t.Fatalf("after Off the word is %#x, want 0 (look everything up)", w)
	}

	// Many words at once: Add reads the whole map instead of word by
	// word. Bits of a map turned off stay clear.
	if err := f.Write(&PrefilterBits{}); err != nil {
		t.Fatal(err)
	}
	var many PrefilterBits
	for p := uint16(64); p < 64+2*prefilterFewWords*64; p++ {
		many.AddBinding(Binding{Proto: TCP, Host: netip.AddrPortFrom(netip.IPv4Unspecified(), p)})
	}
	if err := f.Add(&many); err != nil {
		t.Fatal(err)
	}
	if w := stored(); w != 0 {
		t.Fatalf("after Add of ports 64-127 the word is %#x, want all clear", w)
	}
	var w0 uint64
	if err := m.Lookup(uint32(prefilterTCPPorts), &w0); err != nil {
		t.Fatal(err)
	}
	if w0 != ^uint64(0) {
		t.Fatalf("ports 0-63, which nothing uses, read %#x: want all skipped", w0)
	}
}

// TestBindingFilterStoresSkipBits: the same for the binding filter, whose
// wildcard port bits a published 0.0.0.0 binding clears.
func TestBindingFilterStoresSkipBits(t *testing.T) {
	m := newWordMap(t, bfilterWords)
	f := NewBindingFilter(m)
	bits := new(BindingFilterBits)
	bits.AddBinding(Binding{Proto: UDP, Host: netip.MustParseAddrPort("0.0.0.0:53")})
	if err := f.Write(bits); err != nil {
		t.Fatal(err)
	}
	var w uint64
	if err := m.Lookup(uint32(bfilterWildUDP), &w); err != nil {
		t.Fatal(err)
	}
	if w != ^uint64(1<<53) {
		t.Fatalf("after Write of UDP 0.0.0.0:53 the word is %#x, want only bit 53 clear", w)
	}
	if err := f.Off(); err != nil {
		t.Fatal(err)
	}
	got, err := f.Read()
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range got {
		if w != ^uint64(0) {
			t.Fatalf("after Off word %d reads %#x: it must hide nothing", i, w)
		}
	}
}
