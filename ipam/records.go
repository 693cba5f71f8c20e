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
	bucketPorts       = "ipam.ports"       // proto, host IP, page -> the page's allocations (portpage.go)
	bucketPortCursors = "ipam.portcursors" // proto, host IP -> last dynamic port
)

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

// poolCursorKey is the key of a pool's dynamic cursor record.
func poolCursorKey(k poolKey) []byte {
	return appendAddr([]byte{byte(k.proto)}, k.ip)
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
