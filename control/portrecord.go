package control

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/pontoon-net/pontoon/ipam"
)

// Group records (saveGroups) are binary: as JSON, 60,000 mappings were
// 11 MB of record that every publish of them encoded and bbolt wrote and
// fsynced, a sixth of the publish; binary they are about a quarter of
// that. The first byte tells the layouts apart: groupBinaryV1, or '[' of
// the JSON array agents before it wrote (read as before; a group is
// rewritten in the new layout when one of its mappings goes).
//
// groupBinaryV1 value: the byte 1, the number of mappings (uvarint), and
// each mapping: endpoint and protocol (uvarint length, bytes); host IP;
// host and container ranges (first and last, 2 bytes each, big endian);
// backend; IPv6 backend; binding id (4 bytes); the number of allow-from
// prefixes (uvarint) and each prefix. An address is its length (0, 4 or
// 16) and bytes; a prefix its address and the prefix length (1 byte).
const groupBinaryV1 = 1

// minMappingBytes is the shortest mapping a binary group holds; a count
// the rest of the record cannot hold is refused before it is allocated.
const minMappingBytes = 18

func encodeGroup(ms []*PortMapping) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen32+len(ms)*48)
	b = append(b, groupBinaryV1)
	b = binary.AppendUvarint(b, uint64(len(ms)))
	for _, m := range ms {
		b = appendString(b, m.Endpoint)
		b = appendString(b, m.Proto)
		b = appendAddr(b, m.HostIP)
		b = appendRange(b, m.Host)
		b = appendRange(b, m.Container)
		b = appendAddr(b, m.Backend)
		b = appendAddr(b, m.Backend6)
		b = binary.BigEndian.AppendUint32(b, m.ID)
		b = binary.AppendUvarint(b, uint64(len(m.AllowFrom)))
		for _, p := range m.AllowFrom {
			b = append(appendAddr(b, p.Addr()), byte(p.Bits()))
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendAddr(b []byte, a netip.Addr) []byte {
	switch {
	case a.Is4():
		x := a.As4()
		return append(append(b, 4), x[:]...)
	case a.Is6():
		x := a.As16()
		return append(append(b, 16), x[:]...)
	}
	return append(b, 0)
}

func appendRange(b []byte, r ipam.PortRange) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, r.First), r.Last)
}

// decodeGroup reads a group record of either layout.
func decodeGroup(v []byte) ([]*PortMapping, error) {
	if len(v) > 0 && v[0] == '[' {
		var ms []*PortMapping
		if err := json.Unmarshal(v, &ms); err != nil {
			return nil, err
		}
		return ms, nil
	}
	if len(v) == 0 || v[0] != groupBinaryV1 {
		return nil, errors.New("neither a JSON array nor a known binary layout")
	}
	r := groupReader{b: v[1:]}
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)/minMappingBytes) {
		return nil, fmt.Errorf("names %d mappings in %d bytes", n, len(r.b))
	}
	ms := make([]*PortMapping, 0, n)
	all := make([]PortMapping, n)
	for i := range all {
		m := &all[i]
		m.Endpoint, m.Proto = r.string(), r.string()
		m.HostIP = r.addr()
		m.Host, m.Container = r.portRange(), r.portRange()
		m.Backend, m.Backend6 = r.addr(), r.addr()
		m.ID = r.uint32()
		if k := r.uvarint(); k > 0 {
			if k > uint64(len(r.b)) {
				return nil, fmt.Errorf("mapping %d names %d allow-from prefixes in %d bytes", i, k, len(r.b))
			}
			m.AllowFrom = make([]netip.Prefix, k)
			for j := range m.AllowFrom {
				a := r.addr()
				bits := int(r.byte())
				p, err := a.Prefix(bits)
				if err != nil && r.err == nil {
					r.err = fmt.Errorf("mapping %d: allow-from prefix %s/%d: %w", i, a, bits, err)
				}
				m.AllowFrom[j] = p
			}
		}
		if r.err != nil {
			return nil, r.err
		}
		ms = append(ms, m)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last of %d mappings", len(r.b), n)
	}
	return ms, nil
}

// groupReader reads a binary group record; the first error stops it and
// every later read returns a zero value.
type groupReader struct {
	b   []byte
	err error
}

var errShortRecord = errors.New("ends in the middle of a mapping")

func (r *groupReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = errShortRecord
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *groupReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShortRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *groupReader) byte() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *groupReader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errShortRecord
		return ""
	}
	return string(r.take(int(n)))
}

func (r *groupReader) addr() netip.Addr {
	n := r.byte()
	if n != 0 && n != 4 && n != 16 {
		if r.err == nil {
			r.err = fmt.Errorf("address of %d bytes", n)
		}
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(r.take(int(n)))
	return a
}

func (r *groupReader) portRange() ipam.PortRange {
	b := r.take(4)
	if b == nil {
		return ipam.PortRange{}
	}
	return ipam.PortRange{First: binary.BigEndian.Uint16(b), Last: binary.BigEndian.Uint16(b[2:])}
}

func (r *groupReader) uint32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}
