// Package maps gives typed access to the datapath's BPF maps. Each key and
// value type mirrors a struct of bpf/lib/types.h field for field;
// layout_test.go holds them against the compiled object's BTF.
package maps

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Address families as the kernel numbers them.
const (
	familyInet  = 2
	familyInet6 = 10
)

// Proto is an IP protocol number.
type Proto uint8

const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto reads "tcp" or "udp".
func ParseProto(s string) (Proto, error) {
	switch s {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q: use tcp or udp", s)
}

// rawAddr is an address as the datapath stores it: 16 bytes, IPv4 in the
// first four, and the family beside it.
func rawAddr(a netip.Addr) (family uint8, raw [16]byte) {
	if a.Is4() || a.Is4In6() {
		v4 := a.Unmap().As4()
		copy(raw[:], v4[:])
		return familyInet, raw
	}
	return familyInet6, a.As16()
}

func addrFromRaw(family uint8, raw [16]byte) netip.Addr {
	if family == familyInet {
		return netip.AddrFrom4([4]byte(raw[:4]))
	}
	return netip.AddrFrom16(raw)
}

// The datapath keeps ports in network byte order; the map fields are
// native uint16s, so they hold the byte-swapped value.
func netPort(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func hostPort(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}
