package ipam

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
)

// Buckets carry an "ipam." prefix so the agent can keep its own buckets in
// the same file.
const (
	bucketMeta        = "ipam.meta"
	bucketNetworks    = "ipam.networks"    // network id -> JSON Network
	bucketIPs         = "ipam.ips"         // address -> network id, owner
	bucketIPCursors   = "ipam.ipcursors"   // subnet -> last dynamic address
	bucketPorts       = "ipam.ports"       // proto, host IP, first port -> last port, owner
	bucketPortCursors = "ipam.portcursors" // proto, host IP -> last dynamic port
)

// schemaVersion changes when a record layout does; Open refuses files from
// another version instead of misreading them.
const schemaVersion = 1

var keySchema = []byte("schema")

func ipValue(network, owner string) []byte {
	v := make([]byte, 0, 1+len(network)+len(owner))
	v = append(v, byte(len(network)))
	v = append(v, network...)
	return append(v, owner...)
}

func decodeIP(k, v []byte) (addr netip.Addr, network, owner string, err error) {
	addr, ok := netip.AddrFromSlice(k)
	if !ok || len(v) < 1 || int(v[0]) > len(v)-1 {
		return netip.Addr{}, "", "", fmt.Errorf("address record %x=%x: malformed", k, v)
	}
	n := int(v[0])
	return addr, string(v[1 : 1+n]), string(v[1+n:]), nil
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		x := a.As4()
		return append(b, x[:]...)
	}
	x := a.As16()
	return append(b, x[:]...)
}

// portRecord encodes an allocation and, for a dynamic one, its pool's new
// cursor, in one buffer.
func portRecord(pa PortAllocation, dynamic bool) (k, v, ck, cv []byte) {
	b := make([]byte, 0, 2*19+4+len(pa.Owner))
	b = appendAddr(append(b, byte(pa.Proto)), pa.HostIP)
	b = binary.BigEndian.AppendUint16(b, pa.Ports.First)
	k = b
	b = binary.BigEndian.AppendUint16(b, pa.Ports.Last)
	b = append(b, pa.Owner...)
	v = b[len(k):]
	if dynamic {
		b = appendAddr(append(b, byte(pa.Proto)), pa.HostIP)
		ck = b[len(k)+len(v):]
		cv = binary.BigEndian.AppendUint16(b, pa.Ports.Last)[len(b):]
	}
	return k, v, ck, cv
}

// portRecordSize is the bytes appendPortRecord adds.
func portRecordSize(pa PortAllocation) int {
	return 1 + pa.HostIP.BitLen()/8 + 4 + len(pa.Owner)
}

// appendPortRecord encodes an allocation as portRecord does, at the end of
// buf, and returns buf and the key and value, which share its array.
func appendPortRecord(buf []byte, pa PortAllocation) (out, k, v []byte) {
	start := len(buf)
	buf = appendAddr(append(buf, byte(pa.Proto)), pa.HostIP)
	buf = binary.BigEndian.AppendUint16(buf, pa.Ports.First)
	mid := len(buf)
	buf = binary.BigEndian.AppendUint16(buf, pa.Ports.Last)
	buf = append(buf, pa.Owner...)
	return buf, buf[start:mid:mid], buf[mid:len(buf):len(buf)]
}

// poolCursorKey is the key of a pool's dynamic cursor record.
func poolCursorKey(k poolKey) []byte {
	return appendAddr([]byte{byte(k.proto)}, k.ip)
}

func portKey(proto Proto, ip netip.Addr, first uint16) []byte {
	k := make([]byte, 0, 19)
	k = append(k, byte(proto))
	k = appendAddr(k, ip)
	return binary.BigEndian.AppendUint16(k, first)
}

func decodePort(k, v []byte) (PortAllocation, error) {
	if (len(k) != 7 && len(k) != 19) || len(v) < 2 {
		return PortAllocation{}, fmt.Errorf("port record %x=%x: malformed", k, v)
	}
	ip, _ := netip.AddrFromSlice(k[1 : len(k)-2])
	return PortAllocation{
		Proto:  Proto(k[0]),
		HostIP: ip,
		Ports:  PortRange{binary.BigEndian.Uint16(k[len(k)-2:]), binary.BigEndian.Uint16(v)},
		Owner:  string(v[2:]),
	}, nil
}

func decodePortCursor(k, v []byte) (poolKey, uint16, error) {
	ip, ok := netip.AddrFromSlice(k[min(1, len(k)):])
	if len(k) < 1 || !ok || len(v) != 2 {
		return poolKey{}, 0, fmt.Errorf("port cursor %x=%x: malformed", k, v)
	}
	return poolKey{Proto(k[0]), ip}, binary.BigEndian.Uint16(v), nil
}

func ipCursorKey(p netip.Prefix) []byte {
	k, _ := p.MarshalBinary()
	return k
}

func encodeNetwork(n Network) ([]byte, error) {
	v, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("encode network %q: %w", n.ID, err)
	}
	return v, nil
}

func decodeNetwork(k, v []byte) (Network, error) {
	var n Network
	if err := json.Unmarshal(v, &n); err != nil {
		return Network{}, fmt.Errorf("network record %q: %w", k, err)
	}
	if n.ID != string(k) {
		return Network{}, fmt.Errorf("network record %q: holds network %q", k, n.ID)
	}
	return n, nil
}
