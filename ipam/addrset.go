package ipam

import (
	"encoding/binary"
	"net/netip"
)

// addrSet is the set of taken addresses of one subnet.
type addrSet interface {
	has(a netip.Addr) bool
	add(a netip.Addr)
	remove(a netip.Addr)
	// nextFree returns the first address in [from, to] not in the set.
	nextFree(from, to netip.Addr) (netip.Addr, bool)
}

// bitmapMaxHostBits: subnets of up to 2^20 addresses (IPv4 /12, IPv6 /108)
// get a bitmap of at most 128 KiB; larger ones a spanSet, which costs memory
// only per run of taken addresses.
const bitmapMaxHostBits = 20

func newAddrSet(p netip.Prefix) addrSet {
	if p.Addr().BitLen()-p.Bits() > bitmapMaxHostBits {
		return &spanSet{}
	}
	return &bitmapSet{
		lo:    lo64(p.Addr()),
		bits:  newBitmap(1 << (p.Addr().BitLen() - p.Bits())),
		is4:   p.Addr().Is4(),
		upper: p.Addr().As16(),
	}
}

// lo64 is the low 64 bits of an address; an IPv4 address is its own low 32.
// Inside one subnet of at most 2^64 addresses it orders and subtracts like
// the address itself.
func lo64(a netip.Addr) uint64 {
	b := a.As16()
	return binary.BigEndian.Uint64(b[8:])
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	from := p.Bits()
	if p.Addr().Is4() {
		from += 96
	}
	for i := from; i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// bitmapSet holds a small subnet's taken addresses as bit offsets from the
// subnet's first address.
type bitmapSet struct {
	lo    uint64
	bits  *bitmap
	is4   bool
	upper [16]byte // the subnet address, whose high bytes every member shares
}

func (s *bitmapSet) off(a netip.Addr) uint32 { return uint32(lo64(a) - s.lo) }

func (s *bitmapSet) addr(off uint32) netip.Addr {
	b := s.upper
	binary.BigEndian.PutUint64(b[8:], s.lo+uint64(off))
	a := netip.AddrFrom16(b)
	if s.is4 {
		a = a.Unmap()
	}
	return a
}

func (s *bitmapSet) has(a netip.Addr) bool { return s.bits.has(s.off(a)) }
func (s *bitmapSet) add(a netip.Addr)      { s.bits.set(s.off(a)) }
func (s *bitmapSet) remove(a netip.Addr)   { s.bits.clear(s.off(a)) }

func (s *bitmapSet) nextFree(from, to netip.Addr) (netip.Addr, bool) {
	i, ok := nextClear(s.bits, nil, s.off(from), s.off(to))
	if !ok {
		return netip.Addr{}, false
	}
	return s.addr(i), true
}
